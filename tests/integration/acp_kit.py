"""The ACP tests' client: the SDK's own client side, spawning ``switchyard acp``.

:class:`ScriptedClient` is what an editor would be: it records every ``session/update``,
answers permission requests from a script (option ids, or None for a cancelled outcome,
or a callable), serves ``fs/read_text_file`` from its "unsaved buffers" when it offers
that capability, and records any ``fs/write_text_file`` (which the agent must never send
before the merge permission: the merge is git's, in the user's checkout).

The agent runs as a real subprocess (``python -m app acp``). The SDK passes only HOME,
LOGNAME, PATH, SHELL, TERM and USER by default, so :func:`agent_env` passes the test's
data dir, config dir, runtime URLs and keys explicitly.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acp import PROTOCOL_VERSION, spawn_agent_process, text_block
from acp.schema import (
    AllowedOutcome,
    ClientCapabilities,
    DeniedOutcome,
    FileSystemCapabilities,
    Implementation,
    ReadTextFileResponse,
    RequestPermissionResponse,
    ResourceContentBlock,
    WriteTextFileResponse,
)

CLIENT_NAME = "pytest-editor"
#: environment the agent needs from the test (besides the SDK's few defaults); PYTHONPATH
#: names the checkout under test (tests/conftest.py): the agent runs that code, not the
#: one the venv's editable install names
_KEEP = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "COLUMNS", "LANG", "CI", "PYTHONPATH")
_KEEP_SUFFIX = ("_API_KEY",)

Answer = str | None | Callable[[Any], Awaitable[str | None]]


def agent_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k.startswith(("SWITCHYARD_", "XDG_")) or k in _KEEP or k.endswith(_KEEP_SUFFIX)
    }
    env.update(extra)
    return env


@dataclass
class Permission:
    title: str
    kind: str | None
    options: list[tuple[str, str]]  # (option id, kind)
    raw_input: Any
    answer: str | None


@dataclass
class ScriptedClient:
    answers: list[Answer] = field(default_factory=list)
    buffers: dict[str, str] = field(default_factory=dict)
    updates: list[Any] = field(default_factory=list)
    permissions: list[Permission] = field(default_factory=list)
    reads: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    conn: Any = None
    proc: Any = None

    @staticmethod
    def default(options: list[tuple[str, str]]) -> str | None:
        """Past the script: deny all escalations (stay local), keep the branch unmerged."""
        ids = [o for o, _ in options]
        return "d" if "d" in ids else "keep" if "keep" in ids else None

    async def session_update(self, session_id: str, update: Any, **kwargs: Any) -> None:
        self.updates.append(update)

    async def request_permission(
        self, session_id: str, tool_call: Any, options: list[Any], **kwargs: Any
    ) -> RequestPermissionResponse:
        started = [
            u
            for u in self.updates
            if u.session_update == "tool_call" and u.tool_call_id == tool_call.tool_call_id
        ]
        asked = Permission(
            title=tool_call.title or "",
            kind=tool_call.kind,
            options=[(o.option_id, o.kind) for o in options],
            raw_input=started[-1].raw_input if started else None,
            answer=None,
        )
        self.permissions.append(asked)
        answer: Answer = self.answers.pop(0) if self.answers else self.default(asked.options)
        if callable(answer):
            answer = await answer(self)
        asked.answer = answer
        if answer is None:
            return RequestPermissionResponse(outcome=DeniedOutcome(outcome="cancelled"))
        return RequestPermissionResponse(
            outcome=AllowedOutcome(outcome="selected", option_id=answer)
        )

    async def read_text_file(
        self,
        session_id: str,
        path: str,
        line: int | None = None,
        limit: int | None = None,
        **kwargs: Any,
    ) -> ReadTextFileResponse:
        self.reads.append(path)
        return ReadTextFileResponse(content=self.buffers[path])

    async def write_text_file(
        self, session_id: str, path: str, content: str, **kwargs: Any
    ) -> WriteTextFileResponse:
        self.writes.append(path)
        return WriteTextFileResponse()

    # ── what the tests read back ──────────────────────────────────────────────────────

    def kinds(self) -> list[str]:
        """The update kinds in order, consecutive repeats folded."""
        out: list[str] = []
        for u in self.updates:
            kind = u.session_update
            if kind == "tool_call":
                kind = f"tool_call:{u.kind}"
            if not out or out[-1] != kind:
                out.append(kind)
        return out

    def of(self, kind: str) -> list[Any]:
        return [u for u in self.updates if u.session_update == kind]

    def tool_calls(self, kind: str) -> list[Any]:
        return [u for u in self.of("tool_call") if u.kind == kind]

    def progress(self, tool_call_id: str) -> list[Any]:
        return [u for u in self.of("tool_call_update") if u.tool_call_id == tool_call_id]

    def final_status(self, tool_call_id: str) -> str | None:
        statuses = [u.status for u in self.progress(tool_call_id) if u.status]
        return statuses[-1] if statuses else None

    def text(self, kind: str = "agent_message_chunk") -> str:
        return "".join(u.content.text for u in self.of(kind) if u.content.type == "text")


@asynccontextmanager
async def spawned(
    client: ScriptedClient, *, cwd: Path, env: dict[str, str], args: tuple[str, ...] = ()
) -> AsyncIterator[Any]:
    """``switchyard acp ARGS`` through the SDK's client side; yields the connection."""
    async with spawn_agent_process(
        client, sys.executable, "-m", "app", "acp", *args, env=env, cwd=cwd
    ) as (conn, proc):
        client.conn, client.proc = conn, proc
        yield conn


async def initialize(conn: Any, *, fs: bool) -> Any:
    return await conn.initialize(
        protocol_version=PROTOCOL_VERSION,
        client_capabilities=ClientCapabilities(
            fs=FileSystemCapabilities(read_text_file=fs, write_text_file=fs)
        ),
        client_info=Implementation(name=CLIENT_NAME, version="1.0"),
    )


def task_prompt(task: str, *files: Path) -> list[Any]:
    """The task as text, and files as resource links (what an @-mention sends)."""
    links = [ResourceContentBlock(type="resource_link", name=p.name, uri=p.as_uri()) for p in files]
    return [text_block(task), *links]
