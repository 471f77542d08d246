"""The run's memory overlay: the curator's bullets, the playbook order, the outcomes a
later brief recalls (real SQLite under the test's data dir)."""

from __future__ import annotations

from pathlib import Path

from app.config import load_settings
from app.evidence.layout import runs_dir
from app.pipeline.recall import curate, playbook_bullets, recall_memories, remember_outcome
from app.pipeline.schemas import ReflectionPattern
from app.policy.schema import Policy
from app.router.session import open_session
from tests.integration.test_workspace_repo import make_repo


async def test_curate_keeps_confident_patterns_and_the_playbook_puts_helpful_first(
    policy: Policy,
) -> None:
    patterns = [
        ReflectionPattern(pattern="check the loop bound first", helpful=True, confidence=0.9),
        ReflectionPattern(pattern="a hunch", helpful=True, confidence=0.5),  # below 0.7
        ReflectionPattern(pattern="edit tests to pass", helpful=False, confidence=0.8),
    ]
    async with open_session(load_settings(), policy, approve="deny") as session:
        assert await playbook_bullets(session) == []  # no memory file yet: nothing
        assert await curate(session, "run-1", patterns) == 2
        assert await curate(session, "run-2", patterns[:1]) == 1  # recurs: rated again
        bullets = await playbook_bullets(session)
    assert bullets == ["check the loop bound first", "avoid: edit tests to pass"]


async def test_an_outcome_is_recalled_by_a_later_brief_and_marked_used(
    policy: Policy, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "parser-repo")
    (runs_dir(repo) / "run-1").mkdir(parents=True)  # the run's evidence is this repo's
    async with open_session(load_settings(), policy, approve="deny") as session:
        assert await recall_memories(session, "fix the parser", repo) == []
        await remember_outcome(session, "run-1", "fix the parser", "stopped", "no diff applied")
        first = await recall_memories(session, "parser fix", repo)
        again = await recall_memories(session, "parser fix", repo)
    assert first == ["[outcome] Run run-1 failed: fix the parser: stopped (no diff applied)"]
    assert again == first
    from app.clock import SystemClock
    from app.memory.store import MemoryStore

    async with MemoryStore.open(load_settings().memory_db, clock=SystemClock()) as store:
        (hit,) = await store.search("parser", use_embeddings=False)
    assert hit.memory.use_count == 2  # each recall marked it used, explicitly


async def test_another_repositorys_outcomes_and_commits_stay_out_of_the_brief(
    policy: Policy, tmp_path: Path
) -> None:
    """The memory file is the user's, across repositories: another project's "Run …
    failed: make the parser test pass" became this project's planned goal (a user-audit
    found it). A note is the user's anywhere; an outcome counts where its run's evidence
    is, a commit where git knows it."""
    from app.clock import SystemClock
    from app.memory.harvest import harvest
    from app.memory.store import MemoryStore

    parser = make_repo(tmp_path / "parser-repo", {"parser.py": "def parse(): pass\n"})
    calc = make_repo(tmp_path / "calc-repo", {"calc.py": "def add(a, b): return a - b\n"})
    (runs_dir(parser) / "run-p").mkdir(parents=True)
    async with open_session(load_settings(), policy, approve="deny") as session:
        await remember_outcome(session, "run-p", "fix the parser test", "stopped", "no plan")
        async with MemoryStore.open(load_settings().memory_db, clock=SystemClock()) as store:
            await store.add("the parser test runs with pytest -q", kind="note")
            await harvest(store, parser)
        in_calc = await recall_memories(session, "fix the parser test", calc)
        in_parser = await recall_memories(session, "fix the parser test", parser)
    assert in_calc == ["[note] the parser test runs with pytest -q"], in_calc
    assert any(m.startswith("[outcome] Run run-p") for m in in_parser), in_parser
    assert any(m.startswith("[commit]") for m in in_parser), in_parser
