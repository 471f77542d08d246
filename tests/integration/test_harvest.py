"""The git harvester against a real temporary repository."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.clock import ManualClock
from app.memory.harvest import HarvestError, harvest, read_commits
from app.memory.store import MemoryStore

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def git(repo: Path, *args: str, date: str = "2026-02-01T10:00:00Z") -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Ada",
        "GIT_AUTHOR_EMAIL": "ada@example.invalid",
        "GIT_COMMITTER_NAME": "Ada",
        "GIT_COMMITTER_EMAIL": "ada@example.invalid",
        "GIT_AUTHOR_DATE": date,
        "GIT_COMMITTER_DATE": date,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    done = subprocess.run(
        ["git", "-C", str(repo), *args], env=env, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def commit(repo: Path, files: dict[str, str], message: str, day: int) -> str:
    for name, content in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message, date=f"2026-02-{day:02d}T10:00:00Z")
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    commit(r, {"README.md": "# demo\n"}, "Initial commit", 1)
    commit(
        r,
        {"src/parser.py": "def parse(tokens):\n    return tokens\n", "logo.png": "\x00\x01"},
        "Add the parser\n\nIt returns its input for now.",
        2,
    )
    commit(
        r,
        {"src/parser.py": "def parse(tokens):\n    return list(tokens)\n"},
        "Fix parse() off-by-one on the tail",
        3,
    )
    return r.resolve()


async def test_harvest_turns_commits_into_memories_once(tmp_path: Path, repo: Path) -> None:
    clock = ManualClock(NOW)
    async with MemoryStore.open(tmp_path / "m.sqlite3", clock=clock) as store:
        report = await harvest(store, repo)
        assert (report.commits_seen, report.commits_added, report.commits_skipped) == (3, 3, 0)
        assert report.repo == str(repo)  # the fixture's path is resolved
        memories = await store.list_memories(kind="commit")
        assert [m.meta["subject"] for m in memories] == [
            "Initial commit",
            "Add the parser",
            "Fix parse() off-by-one on the tail",
        ]
        add = memories[1]
        assert add.text == (
            "Add the parser\n\nIt returns its input for now.\n\n"
            "Files: 2 changed, +2 −0\nlogo.png (binary)\nsrc/parser.py +2 −0"
        )
        assert add.created == datetime(2026, 2, 2, 10, 0, tzinfo=UTC)  # the commit's date
        assert add.source_key == f"git:{add.meta['sha']}" and add.tags == ("commit",)
        assert add.meta["files"][0] == {"path": "logo.png", "added": None, "deleted": None}

        again = await harvest(store, repo)
        assert (again.commits_seen, again.commits_added, again.commits_skipped) == (3, 0, 3)
        assert again.memory_ids == () and await store.count() == 3

        commit(repo, {"src/lexer.py": "x = 1\n"}, "Add a lexer", 4)
        third = await harvest(store, repo)
        assert (third.commits_added, third.commits_skipped) == (1, 3)
        hits = await store.search("lexer")
        assert [h.memory.meta["subject"] for h in hits] == ["Add a lexer"]


async def test_since_takes_only_later_commits(tmp_path: Path, repo: Path) -> None:
    first = git(repo, "rev-list", "--max-parents=0", "HEAD")
    async with MemoryStore.open(tmp_path / "m.sqlite3", clock=ManualClock(NOW)) as store:
        report = await harvest(store, repo, since=first)
        assert (report.since, report.commits_seen, report.commits_added) == (first, 2, 2)
        assert await harvest(store, repo, since="HEAD") == type(report)(
            repo=report.repo,
            since="HEAD",
            commits_seen=0,
            commits_added=0,
            commits_skipped=0,
            outcomes_added=0,
            memory_ids=(),
        )
        assert (await harvest(store, repo)).commits_added == 1  # the one before --since
    assert [c.subject for c in await read_commits(repo, since="HEAD~1")] == [
        "Fix parse() off-by-one on the tail"
    ]
    assert len(await read_commits(repo, limit=2)) == 2


async def test_merges_are_skipped(tmp_path: Path, repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "side")
    commit(repo, {"side.txt": "s\n"}, "Side work", 5)
    git(repo, "checkout", "-q", "main")
    commit(repo, {"main.txt": "m\n"}, "Main work", 6)
    git(repo, "merge", "-q", "--no-ff", "-m", "Merge side", "side", date="2026-02-07T10:00:00Z")
    subjects = [c.subject for c in await read_commits(repo)]
    assert "Merge side" not in subjects and {"Side work", "Main work"} <= set(subjects)


async def test_recorded_outcomes_are_swept_in_idempotently(tmp_path: Path, repo: Path) -> None:
    db = tmp_path / "m.sqlite3"
    async with MemoryStore.open(db, clock=ManualClock(NOW)) as store:
        await store.record_outcome("run-7", "parser fix merged", True)
    # The pipeline may write only the row (or crash before its memory): harvest sweeps it.
    import sqlite3

    with sqlite3.connect(db) as raw:
        raw.execute(
            "INSERT INTO outcomes (run_id, summary, success, tags, recorded) "
            "VALUES ('run-8', 'sandbox refused the network', 0, '[\"sandbox\"]', "
            "'2026-02-20T00:00:00.000Z')"
        )
    async with MemoryStore.open(db, clock=ManualClock(NOW)) as store:
        report = await harvest(store, repo)
        assert report.outcomes_added == 1 and report.commits_added == 3
        outcomes = await store.list_memories(kind="outcome")
        assert [m.text for m in outcomes] == [
            "Run run-7 succeeded: parser fix merged",
            "Run run-8 failed: sandbox refused the network",
        ]
        assert outcomes[1].tags == ("failure", "outcome", "sandbox")
        assert (await harvest(store, repo)).outcomes_added == 0


async def test_bad_repo_and_bad_ref_are_usage_errors(tmp_path: Path, repo: Path) -> None:
    async with MemoryStore.open(tmp_path / "m.sqlite3", clock=ManualClock(NOW)) as store:
        with pytest.raises(HarvestError, match="not a git repository"):
            await harvest(store, tmp_path)
        with pytest.raises(HarvestError, match="no such directory"):
            await harvest(store, tmp_path / "nowhere")
        with pytest.raises(HarvestError, match="no such commit"):
            await harvest(store, repo, since="no-such-ref")
        with pytest.raises(HarvestError, match="not a revision"):
            await harvest(store, repo, since="--all")
        empty = tmp_path / "empty"
        empty.mkdir()
        git(empty, "init", "-q")
        assert (await harvest(store, empty)).commits_seen == 0
        assert await store.count() == 0
    assert HarvestError.exit_code == 2
