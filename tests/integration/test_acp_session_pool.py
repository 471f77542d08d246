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


class _Editor:
    """The client, for a turn that asks it nothing."""

    async def session_update(self, **kwargs: object) -> None:
        return None

    async def request_permission(self, **kwargs: object) -> None:
        raise AssertionError("nothing is asked")


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


def test_a_cwd_git_cannot_start_in_is_invalid_params(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder the agent may not enter (``chmod 000``, another user's) made git's start
    raise PermissionError, answered "Internal error" with a traceback in the log (an ACP
    audit): the client's cwd is what is wrong, so it is invalid params naming it."""
    from acp import RequestError

    from app.acp import sessions

    def refused(path: Path) -> Path:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(sessions, "repo_root", refused)
    elses = tmp_path / "someone-elses"
    elses.mkdir()
    with pytest.raises(RequestError) as info:
        sessions.session_repo(str(elses), None)
    assert info.value.code == -32602
    assert f"cwd {elses} cannot be used: Permission denied" in str(info.value)


def test_a_cwd_is_refused_as_what_it_is(tmp_path: Path) -> None:
    """A folder that is not there and a file were both "not a git repository", the real
    reason in the details alone; a folder of Switchyard's own state was taken as the
    session's folder, its edits kept to what git ignores (an ACP audit)."""
    from acp import RequestError

    from app.acp import sessions
    from tests.fakes.demo_repo import make_repo

    repo = make_repo(tmp_path / "repo")
    (repo / ".switchyard" / "runs").mkdir(parents=True)
    top = sessions.session_repo(str(repo), None)
    said = {}
    for cwd in (tmp_path / "gone", repo / "parser.py", repo / ".switchyard" / "runs"):
        with pytest.raises(RequestError) as info:
            sessions.session_within(str(cwd), sessions.session_repo(str(cwd), None))
        assert info.value.code == -32602
        said[cwd.name] = str(info.value)
    assert f"cwd {tmp_path / 'gone'}: no such directory" in said["gone"]
    assert f"cwd {repo / 'parser.py'} is not a directory" in said["parser.py"]
    assert "inside .switchyard/, which holds Switchyard's own state" in said["runs"]
    assert sessions.session_within(str(repo), top) == ""


async def test_a_cancel_sent_while_a_parked_session_reopens_stops_the_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The prompt reopened a parked session before it recorded its turn, so a cancel sent
    in that gap found no turn and was dropped: the whole run went on after the user's
    Stop, and asked for the merge (an ACP audit, with nine sessions open)."""
    import asyncio

    from acp import text_block

    from app.acp import agent as agent_module
    from app.acp.agent import SwitchyardAgent

    agent = SwitchyardAgent(load_settings(), load_policy().policy, local_only=True, repo=None)
    agent.pool.max_open = 1
    ran: list[str] = []

    async def run_turn(s: object, text: str, *args: object, **kwargs: object) -> str:
        ran.append(text)
        return "end_turn"

    monkeypatch.setattr(agent_module, "run_turn", run_turn)
    agent.on_connect(_Editor())
    try:
        first = await agent._open(tmp_path)
        await agent._open(tmp_path)
        assert first.parked
        turn = asyncio.create_task(agent.prompt([text_block("fix the parser")], first.id))
        await asyncio.sleep(0)  # the prompt is under way: reopening the session
        await agent.cancel(first.id)
        done = await asyncio.wait_for(turn, 30)
        assert done.stop_reason == "cancelled" and ran == []
        # the session is usable after: the next prompt runs
        again = await agent.prompt([text_block("fix the parser")], first.id)
        assert again.stop_reason == "end_turn" and ran == ["fix the parser"]
        assert not first.parked
    finally:
        await agent.shutdown()


async def test_a_hang_up_while_a_parked_session_reopens_leaves_no_session_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The turn's cancel ends it at once while its session's reopening finishes apart: the
    close then copied the open sessions before that one was added, and it stayed open
    after the agent closed (a review). The close waits for the reopening."""
    import asyncio

    from acp import text_block

    from app.acp.agent import SwitchyardAgent

    agent = SwitchyardAgent(load_settings(), load_policy().policy, local_only=True, repo=None)
    agent.pool.max_open = 1
    started, release = asyncio.Event(), asyncio.Event()
    opened: list[str] = []
    core = agent.pool._core

    async def slow_core(sid: str, decider: object) -> object:
        started.set()
        await release.wait()
        made = await core(sid, decider)  # type: ignore[arg-type]
        opened.append(sid)
        return made

    agent.on_connect(_Editor())
    first = await agent._open(tmp_path)
    await agent._open(tmp_path)
    assert first.parked
    monkeypatch.setattr(agent.pool, "_core", slow_core)
    turn = asyncio.create_task(agent.prompt([text_block("fix the parser")], first.id))
    await asyncio.wait_for(started.wait(), 30)  # the reopening is under way
    await agent.hang_up()
    done = await asyncio.wait_for(turn, 30)
    assert done.stop_reason == "cancelled"
    closing = asyncio.create_task(agent.shutdown())
    await asyncio.sleep(0.05)
    assert not closing.done()  # waiting for the reopening ...
    release.set()
    await asyncio.wait_for(closing, 30)
    assert opened == [first.id] and not agent.pool._stacks  # ... then closing it too
