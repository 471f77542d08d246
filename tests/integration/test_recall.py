"""The run's memory overlay: the curator's bullets, the playbook order, the outcomes a
later brief recalls (real SQLite under the test's data dir)."""

from __future__ import annotations

from app.config import load_settings
from app.pipeline.recall import curate, playbook_bullets, recall_memories, remember_outcome
from app.pipeline.schemas import ReflectionPattern
from app.policy.schema import Policy
from app.router.session import open_session


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


async def test_an_outcome_is_recalled_by_a_later_brief_and_marked_used(policy: Policy) -> None:
    async with open_session(load_settings(), policy, approve="deny") as session:
        assert await recall_memories(session, "fix the parser") == []
        await remember_outcome(session, "run-1", "fix the parser", "stopped", "no diff applied")
        first = await recall_memories(session, "parser fix")
        again = await recall_memories(session, "parser fix")
    assert first == ["[outcome] Run run-1 failed: fix the parser: stopped (no diff applied)"]
    assert again == first
    from app.clock import SystemClock
    from app.memory.store import MemoryStore

    async with MemoryStore.open(load_settings().memory_db, clock=SystemClock()) as store:
        (hit,) = await store.search("parser", use_embeddings=False)
    assert hit.memory.use_count == 2  # each recall marked it used, explicitly
