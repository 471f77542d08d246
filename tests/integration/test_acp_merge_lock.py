"""The ACP agent's merge reads its plan under the repository's merge lock, as
``switchyard merge`` does: read beside another merge, it described that merge half way
(MERGE_HEAD) and refused over it. Real repos, a real audit log, a real flock."""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from acp.schema import AllowedOutcome, RequestPermissionResponse

from app.acp.merging import offer_merge
from app.audit.log import AuditLog
from app.config import load_settings
from app.workspace import merge as merge_mod
from app.workspace.merge import MergeOutcome
from tests.integration.test_merge import POLICY, make_run
from tests.integration.test_workspace_repo import git, make_repo

RUN = "run-1"
LOCKED_OUT = "another Switchyard merge of this repository held it"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = make_repo(tmp_path)
    make_run(repo, RUN)
    return repo


@contextmanager
def another_merge_half_way(repo: Path) -> Iterator[None]:
    """Another merge of the repository in flight: it holds the merge lock, and git has
    merged the run's branch without committing yet (MERGE_HEAD). The lock goes with the
    block; the merge is left as it is then."""
    fd = os.open(repo / ".git" / "switchyard-merge.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        git(repo, "merge", "--no-ff", "--no-commit", f"switchyard/{RUN}")
        assert (repo / ".git" / "MERGE_HEAD").exists()
        yield
    finally:
        os.close(fd)


def lock_is_free(repo: Path) -> bool:
    fd = os.open(repo / ".git" / "switchyard-merge.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


class Editor:
    """The editor's side: what it was told and asked; it answers ``merge``."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.said: list[str] = []
        #: whether the merge lock was free while each question was on screen
        self.asked_free: list[bool] = []

    async def send(self, update: Any) -> None:
        text = getattr(getattr(update, "content", None), "text", None)
        if text:
            self.said.append(text)

    async def ask(self, **kwargs: Any) -> RequestPermissionResponse:
        self.asked_free.append(lock_is_free(self.repo))
        return RequestPermissionResponse(
            outcome=AllowedOutcome(outcome="selected", option_id="merge")
        )


async def offer(repo: Path, log: AuditLog, editor: Editor) -> MergeOutcome:
    return await offer_merge(
        repo,
        RUN,
        audit=log,
        lines=await log.run_lines(RUN),
        send=editor.send,
        ask=editor.ask,
        approver="acp:test",
        timeout_s=60,
        policy=POLICY,
    )


async def test_a_merge_held_up_by_another_is_refused_with_the_lock_not_its_half_way_plan(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock not had within its wait: refused, said, audited as the CLI audits it, and
    not asked: the plan read beside the other merge is shown to no one."""
    monkeypatch.setattr(merge_mod, "LOCK_WAIT_S", 0.2)
    before = git(repo, "rev-parse", "HEAD")
    editor = Editor(repo)
    async with AuditLog.open(load_settings().audit_db) as log:
        with another_merge_half_way(repo):
            outcome = await offer(repo, log, editor)
        merges = [ln for ln in await log.lines() if ln.kind == "merge"]
    assert not outcome.ok and not outcome.merged
    assert len(outcome.reasons) == 1 and LOCKED_OUT in outcome.reasons[0], outcome
    assert "MERGE_HEAD" not in " ".join(outcome.reasons + outcome.notes + editor.said)
    assert editor.asked_free == []  # never asked
    assert any(f"Not merged (nothing in the checkout changed): GIT: {LOCKED_OUT}" in s
               for s in editor.said), editor.said  # fmt: skip
    # the other merge is as it left it: nothing of this one applied, nothing of it undone
    assert git(repo, "rev-parse", "HEAD") == before
    assert (repo / ".git" / "MERGE_HEAD").exists()
    (line,) = merges
    assert line.values["outcome"] == "refused" and line.reason_codes == ["GIT"]
    assert LOCKED_OUT in line.detail and line.run == RUN


async def test_the_plan_waits_for_the_other_merge_and_the_human_is_asked_with_the_lock_free(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another merge half way when the offer comes: the plan is read once it is done (it
    was abandoned here: the run still merges), not half way through it; the question is
    on screen with the lock let go; the merge takes the lock again and lands."""
    real_lock = merge_mod._merge_lock
    waiting = asyncio.Event()  # the offer waits for the lock

    def lock(top: Path) -> Any:
        waiting.set()
        return real_lock(top)

    monkeypatch.setattr(merge_mod, "_merge_lock", lock)
    before = git(repo, "rev-parse", "HEAD")
    editor = Editor(repo)
    async with AuditLog.open(load_settings().audit_db) as log:
        with another_merge_half_way(repo):
            task = asyncio.create_task(offer(repo, log, editor))
            waited = asyncio.create_task(waiting.wait())
            await asyncio.wait([task, waited], return_when=asyncio.FIRST_COMPLETED)
            waited.cancel()
            git(repo, "merge", "--abort")  # the other merge gives up, and lets go
        outcome = await task
        merges = [ln for ln in await log.lines() if ln.kind == "merge"]
    assert "MERGE_HEAD" not in " ".join(outcome.reasons + outcome.notes + editor.said)
    assert editor.asked_free == [True]  # asked once, with the lock let go
    assert outcome.ok and outcome.merged, outcome
    assert outcome.before_head == before
    assert git(repo, "rev-parse", "HEAD^1") == before
    assert [ln.values["outcome"] for ln in merges] == ["merging", "merged"]
    assert merges[-1].values["answer"] == "acp:test: merge"


async def test_a_refusal_is_told_with_the_lock_let_go(repo: Path) -> None:
    """A merge refused without asking (here: the checkout has uncommitted changes) is told
    to the editor with the merge lock free: told under it, an editor that stopped reading
    held every other merge of the repository up for the lock's wait (a review)."""
    (repo / "README.md").write_text("changed by hand\n")
    told_free: list[bool] = []

    class Slow(Editor):
        async def send(self, update: Any) -> None:
            told_free.append(lock_is_free(self.repo))
            await super().send(update)

    editor = Slow(repo)
    async with AuditLog.open(load_settings().audit_db) as log:
        outcome = await offer(repo, log, editor)
    assert not outcome.ok and editor.asked_free == []
    assert told_free and all(told_free), told_free
