"""The memory overlay stores no secret: every way text gets in (add, add_many, bullets,
outcomes, harvested commits, merged bullets, deprecation reasons) is masked first, and a
source key that held a secret still makes an add idempotent."""

from __future__ import annotations

import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.audit.masking import REDACTED
from app.clock import ManualClock
from app.memory.harvest import harvest
from app.memory.store import MemoryStore
from app.memory.types import NewMemory
from app.policy.schema import Memory as MemoryPolicy

WEIGHTS = MemoryPolicy(
    weight_tfidf=0.4, weight_embedding=0.4, weight_dynamic=0.2, recency_half_life_days=7
)
AWS_ID = "AKIAIOSFODNN7EXAMPLE"


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


async def test_no_way_in_stores_a_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    canary = f"canary-{uuid.uuid4().hex}"
    monkeypatch.setenv("MOONSHOT_API_KEY", canary)
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "a.txt").write_text("a\n")
    git(repo, "add", "-A")
    git(
        repo,
        "-c",
        "user.name=T",
        "-c",
        "user.email=t@example.invalid",
        "commit",
        "-q",
        "-m",
        f"rotate the key (was {canary})\n\nAPP_SECRET=s3cr3t-value-42",
    )
    path = tmp_path / "memory.sqlite3"
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    async with MemoryStore.open(path, clock=clock, weights=WEIGHTS) as store:
        note = await store.add(
            f"settings.py holds DEEPSEEK_KEY = '{canary}'",
            tags=[f"key:{canary}"],
            source=f"chat {canary}",
            meta={"quote": f"{AWS_ID}", "password": "hunter22-x"},
        )
        await store.add_many([NewMemory(text=f"in .env: APP_SECRET={canary}", kind="note")])
        key = f"ace:never print {canary}"
        bullet = await store.add_bullet(f"never print {canary}", source_key=key)
        assert await store.add_bullet(f"never print {canary}", source_key=key) == bullet
        assert await store.existing_source_keys([key, "ace:other"]) == {key}
        other = await store.add_bullet(f"keep {AWS_ID} out of logs")
        await store.merge(bullet, [other], text=f"never print {canary} nor {AWS_ID}")
        extra = await store.add_bullet("rotate keys")
        await store.deprecate(extra, reason=f"superseded: {canary}")
        await store.record_outcome("run-1", f"fix settings ({canary})", True, tags=[canary])
        report = await harvest(store, repo)
        assert report.commits_added == 1
        memories = await store.list_memories()
        stored = await store.get(note)
        # while open, recent pages may sit in the WAL file: check it too
        assert _holding(tmp_path, (canary, AWS_ID, "hunter22-x", "s3cr3t-value-42")) == []

    assert _holding(tmp_path, (canary, AWS_ID, "hunter22-x", "s3cr3t-value-42")) == []
    assert stored is not None
    assert stored.text == f"settings.py holds DEEPSEEK_KEY = '{REDACTED}'"
    assert stored.tags == (f"key:{REDACTED}",)
    assert stored.meta == {"quote": REDACTED, "password": REDACTED}
    kinds = sorted(m.kind for m in memories)
    assert kinds == ["commit", "note", "note", "outcome", "playbook", "playbook", "playbook"]
    assert all(REDACTED in m.text for m in memories if m.kind != "playbook" or m.id == bullet)


def _holding(folder: Path, secrets: tuple[str, ...]) -> list[str]:
    files = [p for p in folder.iterdir() if p.name.startswith("memory")]
    assert any(p.suffix == ".sqlite3" for p in files)
    return [f"{p.name}: {s}" for p in files for s in secrets if s.encode() in p.read_bytes()]
