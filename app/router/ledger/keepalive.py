"""Reservations kept alive while their calls are in flight.

A reservation expires one TTL (``[budget] reservation_ttl_s``) after it was made, so that
one a dead process left is charged and freed. A call that outlasted the TTL while its
process waited for it was expired by another process, then refused its settlement: the
answer, billed by the provider, was thrown away (a 503), and the ledger held the estimate
(an audit found it on the team store). So every third of the TTL, each reservation whose
call has been in flight that long is renewed; a holder that dies renews nothing, and its
reservation expires one TTL after the last renewal.

One timer for all of a router's calls, armed while any is in flight, and a dict entry a
call: a timer of each call's own cost ~10 µs of the request path (issue 20's P1), most
of it the loop's bookkeeping of the cancelled timers.
"""

from __future__ import annotations

import asyncio
import logging
import time

from app.router.ledger.api import Ledger

log = logging.getLogger(__name__)


class InFlight:
    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        #: reservation id → when its call started (time.monotonic)
        self._since: dict[str, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        #: the renewals under way, held so they are not collected mid-flight
        self._renewing: asyncio.Task[None] | None = None

    @property
    def every(self) -> float:
        return self._ledger.budget.reservation_ttl_s / 3

    def add(self, reservation_id: str) -> None:
        """The call on ``reservation_id`` starts."""
        self._since[reservation_id] = time.monotonic()
        if self._timer is None:
            self._arm()

    def done(self, reservation_id: str) -> None:
        """The call ended, any way (its settlement or release follows)."""
        self._since.pop(reservation_id, None)

    def _arm(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self.every, self._due)

    def _due(self) -> None:
        self._timer = None
        if not self._since:
            return  # idle: armed again by the next call
        if self._renewing is None or self._renewing.done():
            self._renewing = asyncio.get_running_loop().create_task(self._renew())
        self._arm()

    async def _renew(self) -> None:
        old = time.monotonic() - self.every
        for rid in [r for r, since in self._since.items() if since <= old]:
            try:
                live = await self._ledger.renew(rid)
            except Exception as exc:  # the store is down a moment: again next time
                log.warning("reservation %s not renewed: %s", rid, exc)
                continue
            if not live:
                self._since.pop(rid, None)  # closed meanwhile (or expired): no more
