"""The ACP agent: the methods the SDK routes to, each a thin step onto Switchyard.

Not a subclass of ``acp.Agent``: that is a Protocol whose stubs return None, which would
answer methods Switchyard does not implement with an empty success. A method missing here
is answered by the SDK with "method not found".
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acp import PROTOCOL_VERSION, RequestError, update_agent_message_text
from acp.helpers import update_current_mode
from acp.schema import (
    AgentCapabilities,
    ClientCapabilities,
    Implementation,
    InitializeResponse,
    ListSessionsResponse,
    LoadSessionResponse,
    NewSessionResponse,
    PromptCapabilities,
    PromptResponse,
    SessionCapabilities,
    SessionListCapabilities,
    SetSessionModeResponse,
    StopReason,
)

from app import __version__
from app.acp.editor import editor_context, prompt_text
from app.acp.history import folder_of, replay, runs_of, session_infos
from app.acp.permissions import AcpDecider, approver_name
from app.acp.sessions import (
    RUN_MODE,
    TUTOR_MODE,
    AcpSession,
    SessionPool,
    modes,
    session_repo,
    session_within,
)
from app.acp.turns import run_turn
from app.acp.tutoring import tutor_turn

if TYPE_CHECKING:
    from app.config import Settings
    from app.policy.schema import Policy

log = logging.getLogger("app.acp")


#: how long the editor has to answer an ``fs/read_text_file`` (an unsaved buffer is at
#: hand: milliseconds) before the file on disk is read instead
READ_TIMEOUT_S = 10.0


def mcp_names(servers: Any) -> list[str]:
    """The names of the MCP servers an editor gave a session (said, and logged, once)."""
    names = [str(getattr(m, "name", "") or "?") for m in servers or []]
    if names:
        log.info("MCP servers given and not started: %s", ", ".join(names))
    return names


def _place(repo: Path, within: str) -> Path:
    return repo / within if within else repo


class SwitchyardAgent:
    def __init__(
        self, settings: Settings, policy: Policy, *, local_only: bool, repo: Path | None
    ) -> None:
        self.policy = policy
        self.pinned = repo
        self.pool = SessionPool(settings, policy, local_only=local_only)
        self.timeout_s = min(settings.approval_timeout_s, policy.approvals.timeout_s)
        self.client = "client"
        self.can_read = False
        self._conn: Any = None

    def on_connect(self, conn: Any) -> None:
        self._conn = conn

    # ── lifecycle ────────────────────────────────────────────────────────────────────

    async def initialize(
        self,
        protocol_version: int,
        client_capabilities: ClientCapabilities | None = None,
        client_info: Implementation | None = None,
        **kwargs: Any,
    ) -> InitializeResponse:
        if client_info is not None and client_info.name.strip():
            self.client = client_info.name.strip()
        fs = client_capabilities.fs if client_capabilities else None
        self.can_read = bool(fs and fs.read_text_file)
        log.info(
            "initialize: %s (protocol %s, fs read %s)", self.client, protocol_version, self.can_read
        )
        return InitializeResponse(
            protocol_version=PROTOCOL_VERSION,
            agent_capabilities=AgentCapabilities(
                load_session=True,
                prompt_capabilities=PromptCapabilities(embedded_context=True),
                session_capabilities=SessionCapabilities(list=SessionListCapabilities()),
            ),
            agent_info=Implementation(name="switchyard", title="Switchyard", version=__version__),
        )

    async def new_session(self, cwd: str, **kwargs: Any) -> NewSessionResponse:
        repo = session_repo(cwd, self.pinned)
        s = await self._open(repo, within=session_within(cwd, repo))
        s.unused_mcp = mcp_names(kwargs.get("mcp_servers"))
        return NewSessionResponse(session_id=s.id, modes=modes(s.mode, self.policy))

    async def load_session(self, cwd: str, session_id: str, **kwargs: Any) -> LoadSessionResponse:
        repo = session_repo(cwd, self.pinned)
        within = session_within(cwd, repo)
        open_one = self.pool.sessions.get(session_id)
        if open_one is not None and (open_one.repo, open_one.within) != (repo, within):
            # it was returned as it was, on its own repository, whatever cwd named: the
            # editor would have shown one project's session as another's (or one folder's,
            # its edits kept to that folder, as another's)
            raise RequestError(
                -32602,
                f"session {session_id!r} is open on {_place(open_one.repo, open_one.within)},"
                f" not on {_place(repo, within)}",
                {"sessionId": session_id, "cwd": cwd},
            )
        runs = runs_of(repo, session_id)
        made_on = folder_of(runs[-1]) if runs else None
        if open_one is None and made_on and made_on != within and (repo / made_on).is_dir():
            # as for an open session: its edits were kept to that folder, and the editor
            # would show it as another folder's. A session of the top, one sealed before
            # runs recorded their folder, or one whose folder is gone is loaded on the cwd
            # given, and kept to it
            raise RequestError(
                -32602,
                f"session {session_id!r} was made on {_place(repo, made_on)},"
                f" not on {_place(repo, within)}: open it from that folder",
                {"sessionId": session_id, "cwd": cwd},
            )
        if not runs and open_one is None:
            raise RequestError(
                -32602,
                f"no session {session_id!r} in {repo} (no evidence run names it)",
                {"sessionId": session_id, "cwd": cwd},
            )
        s = await self._open(repo, session_id, within=within)
        s.unused_mcp = mcp_names(kwargs.get("mcp_servers"))
        await replay(runs, repo, self._sender(s.id))
        return LoadSessionResponse(modes=modes(s.mode, self.policy))

    async def list_sessions(
        self, cwd: str | None = None, cursor: str | None = None, **kwargs: Any
    ) -> ListSessionsResponse:
        if cwd:
            repo = session_repo(cwd, self.pinned)
            infos = session_infos(repo, session_within(cwd, repo))
            return ListSessionsResponse(sessions=infos)
        open_repos = {s.repo for s in self.pool.sessions.values()}
        repos = sorted(open_repos | ({self.pinned} if self.pinned else set()))
        return ListSessionsResponse(sessions=[i for r in repos for i in session_infos(r)])

    async def set_session_mode(
        self, session_id: str, mode_id: str, **kwargs: Any
    ) -> SetSessionModeResponse:
        s = await self.pool.ready(session_id)
        if mode_id not in (RUN_MODE, TUTOR_MODE):
            raise RequestError(
                -32602, f"unknown mode {mode_id!r}: {RUN_MODE} or {TUTOR_MODE}", {"modeId": mode_id}
            )
        s.mode = mode_id
        await self._sender(s.id)(update_current_mode(mode_id))
        return SetSessionModeResponse()

    # ── a prompt turn ────────────────────────────────────────────────────────────────

    async def prompt(self, prompt: list[Any], session_id: str, **kwargs: Any) -> PromptResponse:
        s = self.pool.get(session_id)
        text = prompt_text(prompt)
        if not text:
            raise RequestError(
                -32602,
                "the prompt has no text: Switchyard takes the task (or the tutor's question) "
                "as text; files can come along as resources",
                {"sessionId": session_id},
            )
        if s.busy:
            # not a malformed request (-32600 is "the JSON sent is not a valid Request
            # object", what the stdio guard answers): ACP v1 has one turn at a time ("once
            # a prompt turn completes, the Client may send another"), and Zed cancels the
            # running turn and waits for its answer before it sends the next. An agent's
            # own refusal is ACP's -32603, "reserved for implementation-defined server
            # errors"; the running turn goes on untouched
            raise RequestError(
                -32603,
                "a prompt is already running in this session: wait for its answer (or stop"
                " it with session/cancel and wait for that answer) before the next prompt",
                {"sessionId": session_id, "reason": "busy"},
            )
        s.cancel_requested = False
        s.work = asyncio.create_task(self._turn(s, text, prompt), name=f"acp.turn.{s.id}")
        try:
            return PromptResponse(stop_reason=await s.work)
        except RequestError:
            raise
        except Exception as exc:
            # a failure inside the turn (the runner sealed what it had): the SDK answered
            # a pydantic error from deep in the run as the client's "Invalid params"
            log.exception("prompt in session %s failed", session_id)
            raise RequestError(
                -32603, f"the turn failed: {exc!r}"[:2000], {"sessionId": session_id}
            ) from None
        except asyncio.CancelledError:
            # the turn was cancelled (session/cancel, a hang-up) where nothing in it turned
            # that into "cancelled" (a tutor turn, before the run started): the prompt is
            # still answered; a cancel of this request itself (the agent stopping) is not
            me = asyncio.current_task()
            if s.cancel_requested and me is not None and me.cancelling() == 0:
                return PromptResponse(stop_reason="cancelled")
            raise
        finally:
            s.work = None

    async def _turn(self, s: AcpSession, text: str, prompt: list[Any]) -> StopReason:
        # A parked session is opened again inside the turn, so that a cancel sent while
        # it opens finds the turn (before, the prompt opened it first and a cancel in
        # that gap was dropped: the whole run went on after the user's Stop, an ACP
        # audit). Shielded: the opening is let finish (SessionPool.reopen).
        await asyncio.shield(self.pool.reopen(s.id))
        send = self._sender(s.id)
        if s.unused_mcp:
            names, s.unused_mcp = ", ".join(s.unused_mcp), []
            await send(
                update_agent_message_text(
                    f"Switchyard does not start this editor's MCP servers ({names}): the "
                    "pipeline's roles read the repository and your @-mentions, no tools.\n"
                )
            )
        if s.mode == TUTOR_MODE:
            return await tutor_turn(s, text, send=send)
        read = partial(self._read, s.id) if self.can_read else None
        editor = await editor_context(prompt, s.repo, read)
        return await run_turn(
            s,
            text,
            editor,
            send=send,
            ask=partial(self._conn.request_permission, session_id=s.id),
            approver=approver_name(self.client),
            timeout_s=self.timeout_s,
        )

    async def cancel(self, session_id: str, **kwargs: Any) -> None:
        s = self.pool.sessions.get(session_id)
        if s is None or not s.busy or s.work is None:
            return
        s.cancel_requested = True
        if s.control is not None:
            s.control.request_stop()
        s.work.cancel()

    # ── plumbing ─────────────────────────────────────────────────────────────────────

    async def _open(
        self, repo: Path, session_id: str | None = None, *, within: str = ""
    ) -> AcpSession:
        def decider(sid: str) -> AcpDecider:
            return AcpDecider(
                partial(self._conn.request_permission, session_id=sid),
                self._sender(sid),
                self.client,
                partial(self._flush, sid),
            )

        return await self.pool.open(repo, decider, session_id, within=within)

    def _sender(self, session_id: str) -> Any:
        async def send(update: Any) -> None:
            await self._conn.session_update(session_id=session_id, update=update)

        return send

    async def _flush(self, session_id: str) -> None:
        s = self.pool.sessions.get(session_id)
        if s is not None and s.flush is not None:
            await s.flush()

    async def _read(self, session_id: str, path: str) -> str:
        # bounded: an editor that never answered held the prompt with no update, no run
        # and no line until a cancel (an ACP audit); past it the file on disk is read
        async with asyncio.timeout(READ_TIMEOUT_S):
            response = await self._conn.read_text_file(session_id=session_id, path=path)
        return str(response.content)

    async def hang_up(self) -> None:
        """The client closed stdin: the turns at work stop (a prompt answers
        ``cancelled``, its evidence sealed) so that every request can be answered."""
        for s in self.pool.sessions.values():
            if s.busy:
                s.cancel_requested = True
        await self.pool.stop_turns("cancelled: the editor closed the connection")

    async def shutdown(self) -> None:
        await self.pool.aclose()
