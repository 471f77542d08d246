"""One ACP session = one Switchyard session on one repository.

The Switchyard session (audit chain, budget ledger, approvals broker, backends, router)
stays open while the ACP session is in use, so "approve for this session" and the Tutor's
turn cap hold across prompts, and its id is the ACP session id: ``session/list`` and
``session/load`` find it again in the evidence runs it left.

Each open one holds 8 file descriptors, 2 threads and ~0.5 MB, and an editor opens a
session per thread and never closes one (ACP has no close an editor sends): 31 sessions
exhausted a 256-descriptor limit, and every ``session/new`` failed after. So at most
:data:`MAX_OPEN` stay open: opening one more parks the least recently used idle one in
the pipeline mode (its stores closed). A prompt to a parked session opens it again under
the same id, transparently; what it held in memory only is gone: a session-wide
approval and a "deny all: stay local" are asked again (the safe way), the usage meter
starts again. A session in the tutor's mode is never parked (its conversation lives in
memory), so those are not bounded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
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

log = logging.getLogger("app.acp")

RUN_MODE = "run"
TUTOR_MODE = "tutor"
#: Switchyard sessions kept open at once (see the module's doc)
MAX_OPEN = 8


@dataclass
class AcpSession:
    id: str
    repo: Path
    core: Session
    bus: Bus
    usage: UsageMeter
    #: the folder of ``repo`` the session's changes are kept to: the editor's cwd (POSIX,
    #: relative to the top; "" when the cwd is the top) (:func:`session_within`)
    within: str = ""
    mode: str = RUN_MODE
    tutor: TutorSession | None = None
    #: the prompt turn at work, and what stops it
    work: asyncio.Task[Any] | None = None
    control: RunControl | None = None
    cancel_requested: bool = False
    #: while a turn relays: waits until what the bus carried so far has been sent
    flush: Callable[[], Awaitable[None]] | None = None
    #: its Switchyard session was closed to bound what idle sessions hold (see above)
    parked: bool = False
    #: the editor's MCP servers, named once in the first turn: the pipeline's roles take
    #: no tools from them, and they were dropped without a word (an ACP audit)
    unused_mcp: list[str] = field(default_factory=list)

    @property
    def busy(self) -> bool:
        return self.work is not None and not self.work.done()


async def _close_all(stacks: list[AsyncExitStack]) -> None:
    for stack in stacks:
        await stack.aclose()


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
    # said as what it is (a missing folder and a file were both "not a git repository",
    # the real reason only in the details: an ACP audit)
    if not path.exists():
        raise RequestError(-32602, f"cwd {cwd}: no such directory", {"cwd": cwd})
    if not path.is_dir():
        raise RequestError(-32602, f"cwd {cwd} is not a directory", {"cwd": cwd})
    try:
        top = repo_root(path)
    except NotAGitRepo as exc:
        raise RequestError(
            -32602,
            f"cwd {cwd} is not a git repository: Switchyard works in a git worktree",
            {"cwd": cwd, "details": str(exc)},
        ) from None
    except OSError as exc:  # (git cannot start there: it was an internal error, an audit)
        raise RequestError(
            -32602,
            f"cwd {cwd} cannot be used: {exc.strerror or exc}",
            {"cwd": cwd},
        ) from None
    if pinned is not None and top != pinned:
        raise RequestError(
            -32602,
            f"cwd {cwd} is outside the repository this agent serves ({pinned}, --repo)",
            {"cwd": cwd, "repo": str(pinned)},
        )
    return top


def session_within(cwd: str, top: Path) -> str:
    """The folder of the repository at ``top`` a session on ``cwd`` is kept to: ACP's
    ``cwd`` "establishes the file system context for the session" and "SHOULD serve as a
    boundary for tool operations on the file system" (session setup), so the run's edits
    and the merge stay inside it. Resolved first (a symlinked cwd is where it leads: git
    reports the top resolved too), relative to the top; "" when it is the top."""
    real = Path(cwd).resolve()
    try:
        rel = real.relative_to(top)
    except ValueError:
        raise RequestError(
            -32602,
            f"cwd {cwd} resolves to {real}, which is not inside its repository {top}",
            {"cwd": cwd},
        ) from None
    if rel.parts and rel.parts[0] in (".switchyard", ".git"):
        # Switchyard's own state (runs, worktrees, evidence) and git's: a session kept
        # to it would edit what git ignores or what the runs themselves keep (an ACP audit)
        owner = "Switchyard" if rel.parts[0] == ".switchyard" else "git"
        raise RequestError(
            -32602,
            f"cwd {cwd} is inside {rel.parts[0]}/, which holds {owner}'s own state: open"
            " the session on the repository or a folder of its work tree",
            {"cwd": cwd},
        )
    return rel.as_posix() if rel.parts else ""


class SessionPool:
    """The ACP sessions of one agent process, and their Switchyard sessions."""

    def __init__(
        self, settings: Settings, policy: Policy, *, local_only: bool, max_open: int = MAX_OPEN
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.local_only = local_only
        self.max_open = max_open
        self.sessions: dict[str, AcpSession] = {}
        #: each open session's stack, least recently used first
        self._stacks: dict[str, AsyncExitStack] = {}
        self._deciders: dict[str, Callable[[str], Decider]] = {}
        #: one opening or parking at a time (two prompts to a parked session open it once)
        self._lock = asyncio.Lock()
        #: reopenings under way for a turn (:meth:`reopen`): the close waits for them
        self._reopening: set[asyncio.Task[AcpSession]] = set()

    def get(self, session_id: str) -> AcpSession:
        s = self.sessions.get(session_id)
        if s is None:
            raise RequestError(-32602, f"unknown session {session_id!r}", {"sessionId": session_id})
        return s

    async def ready(self, session_id: str) -> AcpSession:
        """The session, open (a parked one is opened again under its id)."""
        s = self.get(session_id)
        closing: list[AsyncExitStack] = []
        async with self._lock:
            if s.parked:
                s.core, s.bus = await self._core(s.id, self._deciders[s.id])
                s.usage = UsageMeter(self.policy)
                s.parked = False
                closing = self._park_beyond_limit(keep=s.id)
            if s.id in self._stacks:  # the most recently used now
                self._stacks[s.id] = self._stacks.pop(s.id)
        await _close_all(closing)
        return s

    def reopen(self, session_id: str) -> asyncio.Task[AcpSession]:
        """:meth:`ready` as a task of its own, for a turn that may be cancelled while its
        parked session opens (the opening finishes, the session left open and idle), and
        that :meth:`aclose` waits for: a hang-up in that moment closed the pool first, and
        the session opened after it stayed open (a review)."""
        task = asyncio.ensure_future(self.ready(session_id))
        self._reopening.add(task)
        task.add_done_callback(self._reopened)
        return task

    def _reopened(self, task: asyncio.Task[AcpSession]) -> None:
        self._reopening.discard(task)
        if not task.cancelled() and task.exception() is not None:  # (said by the turn too)
            log.warning("reopening a parked session failed: %r", task.exception())

    async def open(
        self,
        repo: Path,
        decider: Callable[[str], Decider],
        session_id: str | None = None,
        *,
        within: str = "",
    ) -> AcpSession:
        """A new Switchyard session (``decider`` is made for its id), or the open one."""
        sid = session_id or new_session_id()
        if sid in self.sessions:
            return await self.ready(sid)
        async with self._lock:
            core, bus = await self._core(sid, decider)
            usage = UsageMeter(self.policy)
            s = AcpSession(id=sid, repo=repo, core=core, bus=bus, usage=usage, within=within)
            self.sessions[sid] = s
            self._deciders[sid] = decider
            closing = self._park_beyond_limit(keep=sid)
        await _close_all(closing)  # not under the lock: a session's close can take seconds
        return s

    async def _core(self, sid: str, decider: Callable[[str], Decider]) -> tuple[Session, Bus]:
        bus = Bus()
        stack = AsyncExitStack()
        core = await stack.enter_async_context(
            open_session(
                self.settings,
                self.policy,
                decider=decider(sid),
                bus=bus,
                session_id=sid,
                local_only=self.local_only,
            )
        )
        self._stacks[sid] = stack
        return core, bus

    def _park_beyond_limit(self, *, keep: str) -> list[AsyncExitStack]:
        """Park the least recently used idle sessions beyond :attr:`max_open` (not one at
        work, nor one in the tutor's mode); their stacks, for the caller to close."""
        closing: list[AsyncExitStack] = []
        for sid in list(self._stacks):
            if len(self._stacks) <= self.max_open:
                break
            s = self.sessions[sid]
            if sid == keep or s.busy or s.mode != RUN_MODE or s.tutor is not None:
                continue
            closing.append(self._stacks.pop(sid))
            s.parked = True
        return closing

    def mark_turns(self, why: str) -> None:
        """What the runs at work will be recorded as ending for, when they are cancelled."""
        for s in self.sessions.values():
            if s.busy and s.control is not None:
                s.control.cancel_reason = why

    async def stop_turns(self, why: str | None = None) -> None:
        """Stop every turn at work and wait for each (each seals its evidence, its reason
        ``why`` when given: not the user's cancel)."""
        works = [s.work for s in self.sessions.values() if s.work is not None]
        if why is not None:
            self.mark_turns(why)
        for s in self.sessions.values():
            if s.busy and s.control is not None:
                s.control.request_stop()
        for work in works:
            work.cancel()
        if works:
            await asyncio.wait(works)

    async def aclose(self) -> None:
        """Stop every turn at work, let a reopening under way finish, then close the
        sessions."""
        await self.stop_turns()
        if self._reopening:
            await asyncio.wait(set(self._reopening))
        stacks, self._stacks = list(self._stacks.values()), {}
        for stack in reversed(stacks):
            await stack.aclose()
