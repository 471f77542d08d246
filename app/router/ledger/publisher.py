"""The live budget meter's feed: a session's snapshot published after a change, off the
request path.

A snapshot reads the session's calls grouped by role, model and provider (now only those
written since the last one: :mod:`.call_groups`). When it read them all, its cost grew
with the calls on file, and it ran inside every ``reserve`` and ``settle`` while a live
view (the TUI, ``run``, the ACP agent) was attached: a request's p50 was 2.91 / 5.16 /
8.49 ms after 1k / 3k / 6k requests (``bench.router_bench --live``), against 0.88 ms
without a view, as it is now with one. Now a change only marks the session; one task per
ledger reads and publishes the marked sessions, then pauses ``interval_s`` and reads again
only if something changed meanwhile: the first change after a quiet spell shows at once,
a burst costs one read per interval (the meter is for eyes: ten updates a second is
live), the last change is always published, and :meth:`close` publishes what is still
marked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from app.bus import BudgetUpdated, Bus
from app.router.ledger.errors import LedgerError
from app.router.ledger.records import BudgetSnapshot

#: while changes keep coming, a session's snapshot is published at most this often
PUBLISH_INTERVAL_S = 0.1

log = logging.getLogger(__name__)


class SnapshotPublisher:
    """Publishes ``snapshot(session)`` on ``bus`` for each session marked :meth:`changed`."""

    def __init__(
        self,
        bus: Bus | None,
        snapshot: Callable[[str], Awaitable[BudgetSnapshot]],
        *,
        interval_s: float = PUBLISH_INTERVAL_S,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self._bus = bus
        self._snapshot = snapshot
        self.interval_s = interval_s
        self._sleep = sleep
        #: sessions changed since their last snapshot was read, in order of change
        self._marked: dict[str, None] = {}
        self._task: asyncio.Task[None] | None = None
        self._pausing = False
        self._closing = False

    def changed(self, session: str) -> None:
        """``session``'s budget changed: publish its snapshot soon (never waits)."""
        if self._bus is None:
            return
        self._marked[session] = None
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._publish_marked())

    async def _publish_marked(self) -> None:
        try:
            while self._marked:
                sessions = list(self._marked)
                self._marked.clear()
                for session in sessions:
                    await self._publish(session)
                if self._closing:
                    continue  # closing: what is marked now goes at once
                # At most one read per interval: changes meanwhile are gathered, and
                # the task ends after a quiet interval.
                self._pausing = True
                try:
                    await self._sleep(self.interval_s)
                finally:
                    self._pausing = False
        finally:
            self._task = None

    async def _publish(self, session: str) -> None:
        assert self._bus is not None
        try:
            snap = await self._snapshot(session)
        except LedgerError as exc:
            # The change itself is committed; only the meter misses this update.
            log.warning("budget meter not updated for %s: %s", session, exc)
            return
        await self._bus.publish(BudgetUpdated(session=session, snapshot=snap.model_dump()))

    async def settled(self) -> None:
        """Wait until every change so far has been published (and the pause after it)."""
        while self._task is not None:
            await asyncio.shield(self._task)

    async def close(self) -> None:
        """Publish what is still marked, without the pause (before the store closes)."""
        self._closing = True
        task = self._task
        if task is not None:
            if self._pausing:
                task.cancel()  # nothing is being read: only the wait is cut short
            try:
                await task
            except asyncio.CancelledError:
                if not task.cancelled():
                    raise
            except Exception as exc:  # a store already failing: nothing left to show
                log.warning("budget meter: last update lost: %s", exc)
        try:
            for session in list(self._marked):
                await self._publish(session)
        finally:
            self._marked.clear()
