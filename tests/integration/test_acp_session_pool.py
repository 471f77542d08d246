"""Idle ACP sessions beyond a limit are parked (their stores closed) and opened again on
use: each open one held 8 descriptors and 2 threads for good, and an editor that opens a
session per thread ran out of descriptors after ~120 (31 under `ulimit -n 256`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.acp.sessions import SessionPool
from app.config import load_settings
from app.policy import load_policy
from app.router.approvals import DenyDecider


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_idle_sessions_beyond_the_limit_are_parked_and_come_back(tmp_path: Path) -> None:
    pool = SessionPool(load_settings(), load_policy().policy, local_only=True, max_open=2)
    try:
        first = await pool.open(tmp_path, lambda sid: DenyDecider())
        for _ in range(2):  # the first parking (and the executor it starts) included
            await pool.open(tmp_path, lambda sid: DenyDecider())
        before = _fds()
        for _ in range(6):
            await pool.open(tmp_path, lambda sid: DenyDecider())
        assert _fds() <= before  # flat: the least recently used ones were parked
        assert first.parked and sum(not s.parked for s in pool.sessions.values()) == 2
        # used again: open under its own id, its stores working, another one parked
        back = await pool.ready(first.id)
        assert back is first and not back.parked and back.core.id == first.id
        await back.core.audit.append("run", session=first.id, detail="back")
        assert [x.detail for x in await back.core.audit.lines(session=first.id)][-1] == "back"
        assert sum(not s.parked for s in pool.sessions.values()) == 2
    finally:
        await pool.aclose()


def test_a_cwd_git_cannot_start_in_is_invalid_params(monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder the agent may not enter (``chmod 000``, another user's) made git's start
    raise PermissionError, answered "Internal error" with a traceback in the log (an ACP
    audit): the client's cwd is what is wrong, so it is invalid params naming it."""
    from acp import RequestError

    from app.acp import sessions

    def refused(path: Path) -> Path:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(sessions, "repo_root", refused)
    with pytest.raises(RequestError) as info:
        sessions.session_repo("/srv/someone-elses", None)
    assert info.value.code == -32602
    assert "cwd /srv/someone-elses cannot be used: Permission denied" in str(info.value)
