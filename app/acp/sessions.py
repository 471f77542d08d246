"""One ACP session = one Switchyard session on one repository.

The Switchyard session (audit chain, budget ledger, approvals broker, backends, router)
stays open for the ACP session's life, so "approve for this session" and the Tutor's turn
cap hold across prompts, and its id is the ACP session id: ``session/list`` and
``session/load`` find it again in the evidence runs it left.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acp import RequestError
from acp.schema import SessionMode, SessionModeState

from app.acp.auditview import UsageMeter
from app.bus import Bus
from app.router.session import Session, new_session_id, open_session
from app.workspace.git import NotAGitRepo, repo_root

if TYPE_CHECKING:
    from app.config import Settings
    from app.pipeline.control import RunControl
    from app.pipeline.tutor import TutorSession
    from app.policy.schema import Policy
    from app.router.approvals import Decider

RUN_MODE = "run"
TUTOR_MODE = "tutor"


@dataclass
class AcpSession:
    id: str
    repo: Path
    core: Session
    bus: Bus
    usage: UsageMeter
    mode: str = RUN_MODE
    tutor: TutorSession | None = None
    #: the prompt turn at work, and what stops it
    work: asyncio.Task[Any] | None = None
    control: RunControl | None = None
    cancel_requested: bool = False
    #: while a turn relays: waits until what the bus carried so far has been sent
    flush: Callable[[], Awaitable[None]] | None = None

    @property
    def busy(self) -> bool:
        return self.work is not None and not self.work.done()


def modes(current: str, policy: Policy) -> SessionModeState:
    tutor = policy.roles.get("tutor")
    cap = f"; at most {tutor.max_turns} turns" if tutor and tutor.max_turns else ""
    return SessionModeState(
        current_mode_id=current,
        available_modes=[
            SessionMode(
                id=RUN_MODE,
                name="Pipeline",
                description="Stage0 → Architect → Implementer → Judge in a worktree; "
                "escalations and the merge ask your permission",
            ),
            SessionMode(
                id=TUTOR_MODE,
                name="Tutor",
                description=f"a coach that asks questions first{cap}",
            ),
        ],
    )


def session_repo(cwd: str, pinned: Path | None) -> Path:
    """The repository a session opens on: ``cwd``'s work tree (an error names it)."""
    path = Path(cwd)
    if not path.is_absolute():
        raise RequestError(-32602, f"cwd {cwd!r} is not an absolute path", {"cwd": cwd})
    try:
        top = repo_root(path)
    except NotAGitRepo as exc:
        raise RequestError(
            -32602,
            f"cwd {cwd} is not a git repository: Switchyard works in a git worktree",
            {"cwd": cwd, "details": str(exc)},
        ) from None
    if pinned is not None and top != pinned:
        raise RequestError(
            -32602,
            f"cwd {cwd} is outside the repository this agent serves ({pinned}, --repo)",
            {"cwd": cwd, "repo": str(pinned)},
        )
    return top


class SessionPool:
    """The ACP sessions of one agent process, and their Switchyard sessions."""

    def __init__(self, settings: Settings, policy: Policy, *, local_only: bool) -> None:
        self.settings = settings
        self.policy = policy
        self.local_only = local_only
        self.sessions: dict[str, AcpSession] = {}
        self._stack = AsyncExitStack()

    def get(self, session_id: str) -> AcpSession:
        s = self.sessions.get(session_id)
        if s is None:
            raise RequestError(-32602, f"unknown session {session_id!r}", {"sessionId": session_id})
        return s

    async def open(
        self, repo: Path, decider: Callable[[str], Decider], session_id: str | None = None
    ) -> AcpSession:
        """A new Switchyard session (``decider`` is made for its id), or the open one."""
        sid = session_id or new_session_id()
        if sid in self.sessions:
            return self.sessions[sid]
        bus = Bus()
        core = await self._stack.enter_async_context(
            open_session(
                self.settings,
                self.policy,
                decider=decider(sid),
                bus=bus,
                session_id=sid,
                local_only=self.local_only,
            )
        )
        s = AcpSession(id=sid, repo=repo, core=core, bus=bus, usage=UsageMeter(self.policy))
        self.sessions[sid] = s
        return s

    async def stop_turns(self) -> None:
        """Stop every turn at work and wait for each (each seals its evidence)."""
        works = [s.work for s in self.sessions.values() if s.work is not None]
        for s in self.sessions.values():
            if s.busy and s.control is not None:
                s.control.request_stop()
        for work in works:
            work.cancel()
        if works:
            await asyncio.wait(works)

    async def aclose(self) -> None:
        """Stop every turn at work, then close the sessions."""
        await self.stop_turns()
        await self._stack.aclose()
