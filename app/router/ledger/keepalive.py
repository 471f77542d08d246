"""A reservation kept alive while its call is in flight.

A reservation expires one TTL (``[budget] reservation_ttl_s``) after it was made, so that
one a dead process left is charged and freed. A call that outlasted the TTL while its
process waited for it was expired by another process, then refused its settlement: the
answer, billed by the provider, was thrown away (a 503), and the ledger held the estimate
(an audit found it on the team store). While the call is in flight its reservation is
renewed every third of the TTL; a holder that dies renews nothing, and its reservation
expires one TTL after the last renewal.

One timer per call and no task until a renewal is due: most calls end long before.
"""

from __future__ import annotations

import asyncio
import logging

from app.router.ledger.api import Ledger

log = logging.getLogger(__name__)


class KeepAlive:
    def __init__(self, ledger: Ledger, reservation_id: str) -> None:
        self._ledger = ledger
        self._id = reservation_id
        self._every = ledger.budget.reservation_ttl_s / 3
        self._loop = asyncio.get_running_loop()
        self._stopped = False
        #: the renewal under way, held so it is not collected mid-flight
        self._renewing: asyncio.Task[None] | None = None
        self._timer = self._loop.call_later(self._every, self._due)

    def _due(self) -> None:
        if not self._stopped:
            self._renewing = self._loop.create_task(self._renew())

    async def _renew(self) -> None:
        try:
            live = await self._ledger.renew(self._id)
        except Exception as exc:  # the store is down a moment: try again next time
            log.warning("reservation %s not renewed: %s", self._id, exc)
            live = True
        if live and not self._stopped:
            self._timer = self._loop.call_later(self._every, self._due)

    def stop(self) -> None:
        """The call ended (any way): no renewal after this one. A renewal under way is
        let finish (cancelled, it could leave its store's lock mid-write)."""
        self._stopped = True
        self._timer.cancel()
