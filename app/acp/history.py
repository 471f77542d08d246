"""``session/list`` and ``session/load``, backed by the evidence runs.

Each sealed bundle names the Switchyard session that ran it (the ACP session id), so the
sessions of a repository are its bundles grouped by session. Loading one replays its
runs as the conversation: each task as the user's message, each outcome (verdict,
bundle) as the agent's, then reopens the session under the same id.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from acp import update_agent_message_text, update_user_message_text
from acp.schema import SessionInfo

from app.acp.summary import run_summary
from app.evidence.bundle import EvidenceError
from app.evidence.layout import runs_dir
from app.evidence.records import Manifest
from app.evidence.verify import read_manifest
from app.shown import clean

Send = Callable[[Any], Awaitable[None]]
TITLE_CHARS = 80


def manifests(repo: Path) -> list[Manifest]:
    """Every sealed bundle of ``repo``, oldest first."""
    root = runs_dir(repo)
    found: list[Manifest] = []
    if not root.is_dir():
        return found
    for path in root.iterdir():
        if path.is_dir() and not path.name.startswith("."):
            with contextlib.suppress(EvidenceError):
                found.append(read_manifest(path))
    return sorted(found, key=lambda m: (m.created, m.run_id))


def folder_of(run: Manifest) -> str | None:
    """The folder of its repository the run's session was kept to (an editor's cwd below
    the top, as :func:`app.acp.sessions.session_within` spells it); "" for the top, None
    for a run sealed before runs recorded it."""
    within = run.extra.get("within", None)
    return within if isinstance(within, str) else None


def session_infos(repo: Path, within: str | None = None) -> list[SessionInfo]:
    """The sessions that left runs in ``repo``, the most recently active first, each on
    the folder its last run was kept to; ``within``: only the sessions of that folder
    (ACP's "filter sessions by working directory"), and those whose runs were sealed
    before runs recorded their folder (listed on the top, as they were, in every list)."""
    by_session: dict[str, list[Manifest]] = {}
    for m in manifests(repo):
        if m.session:
            by_session.setdefault(m.session, []).append(m)
    infos = []
    for sid, runs in by_session.items():
        last = runs[-1]
        folder = folder_of(last)
        if within is not None and folder is not None and folder != within:
            continue
        # one line, its control characters shown, not obeyed: a task's newline or ESC
        # went into the editor's session list as it was
        task = clean(last.task, one_line=True)
        title = task if len(task) <= TITLE_CHARS else task[: TITLE_CHARS - 1] + "…"
        infos.append(
            SessionInfo(
                session_id=sid,
                cwd=str(repo / folder if folder else repo),
                title=title,
                updated_at=last.finalized,
            )
        )
    return sorted(infos, key=lambda i: i.updated_at or "", reverse=True)


def runs_of(repo: Path, session_id: str) -> list[Manifest]:
    return [m for m in manifests(repo) if m.session == session_id]


async def replay(runs: list[Manifest], repo: Path, send: Send) -> None:
    for m in runs:
        await send(update_user_message_text(m.task))
        await send(update_agent_message_text(run_summary(repo, m.run_id, m.status, m.reason)))
