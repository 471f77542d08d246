"""The store interface of the budget ledger: what the router, the pipeline and the CLI
use. :class:`~app.router.ledger.BudgetLedger` (a machine's SQLite file, the default) and
:class:`~app.router.ledger.pg_ledger.PgBudgetLedger` (the team's PostgreSQL) implement
it; the router calls the one it was given directly, with nothing in between.

``on_expired``: called with the reservations a store charged in full because their TTL
passed unsettled (their process may have made the call and died), after the charge is
committed; the session sets it to audit each one (GR-005: a charge with no line would
leave the audit and the ledger unreconciled). Each comes with the caps its charge left
spent past (:class:`~app.router.ledger.records.Expired`), as a settlement returns them;
a close written late (``on_late``) carries its own the same way: a charge that crossed a
cap says so (GR-011) whichever write it was.

``settle``, ``release`` and ``record_call`` return the caps the write left spent past,
with each one's spend just before and just after it, read atomically with the write
(:class:`~app.router.ledger.records.CapTotal`; empty, the usual case, when every cap is
still within after it): whether this write is the one that crossed a cap is decided from
them (:func:`~app.router.ledger.records.crossed_by`), never from a snapshot read after,
which other writes may have reached first. A store wrapping another passes its answer on
(one that drops it drops the line).

``tokens_cached``: of a call's ``tokens_in``, those the provider read from its prompt
cache (priced apart, app.router.cost), kept in the call's row so that the spend report
says what the cost came from."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Protocol, Self

from app.policy.schema import Budget
from app.router.ledger.errors import LedgerError
from app.router.ledger.records import BudgetSnapshot, CapTotals, Expired, LateClose, Reservation

#: what a ledger calls with the reservations it has just charged by expiry
ExpiredHook = Callable[[Sequence[Expired]], Awaitable[None]]
#: what a ledger calls with a settlement or release it wrote late (the team's, once its
#: database answered again; the machine's never is: its writes stand or raise)
LateHook = Callable[[LateClose], Awaitable[None]]


log = logging.getLogger(__name__)


async def tell_expired(hook: ExpiredHook | None, expired: Sequence[Expired], where: object) -> bool:
    """Call ``hook`` with the reservations just charged by expiry; whether they were told.
    The charge is committed and stands whatever the hook does: a hook that fails (the
    audit store gone) is logged, not raised into the reservation or report that found
    them (a reservation committed and then failed would be left live, to be charged again
    for a call never made); the team's store tells them again later (``ledger_untold``)."""
    if hook is None or not expired:
        return False
    try:
        await hook(expired)
    except Exception as exc:
        log.error(
            "%s: %d reservation(s) charged by expiry were not audited: %s", where, len(expired), exc
        )
        return False
    return True


#: asked before a ledger opened alone charges an expired reservation: why it may not
#: (its audit log cannot be opened), or None
ExpiryCheck = Callable[[], Awaitable[str | None]]


async def expiry_held(ledger: Any) -> bool:
    """Whether ``ledger`` may not charge expired reservations now, asked of its
    ``expiry_check`` once (a report's ledger: its audit log must open for the lines) and
    said once: its reports then show them as still reserved, for a session that can
    audit them to charge. A report charged them with no line, which nothing wrote later."""
    check = ledger.expiry_check
    if check is None:
        return False
    if check is _held_already:
        return True
    ledger.expiry_check = None
    why = await check()
    if why is None:
        return False
    log.warning("reservations past their TTL are not charged here: %s", why)
    ledger.expiry_check = _held_already
    return True


async def _held_already() -> str | None:  # (a marker: held, and said)
    return "held"


async def let_go(ledger: Ledger, reservation_id: str) -> None:
    """Release a reservation whose maker was cancelled before it had it: made or not (a
    spool write a ledger finishes once begun; a query the server may have committed),
    it would otherwise hold its amount until its expiry charged it in full, for a call
    never made. Nothing held (never made, or closed already): nothing to do."""
    with contextlib.suppress(LedgerError):
        await asyncio.shield(ledger.release(reservation_id, "cancelled"))


class Ledger(Protocol):
    budget: Budget
    on_expired: ExpiredHook | None
    on_late: LateHook | None
    #: asked before it charges an expired reservation (None: it may, unasked)
    expiry_check: ExpiryCheck | None

    async def reserve(
        self,
        *,
        session: str,
        provider: str,
        role: str,
        model: str,
        amount_usd: float,
        run: str | None = None,
    ) -> Reservation: ...

    async def settle(
        self,
        reservation_id: str,
        *,
        actual_usd: float,
        tokens_in: int,
        tokens_out: int,
        latency_ms: float,
        outcome: str = "ok",
        tokens_cached: int = 0,
    ) -> CapTotals: ...

    async def release(
        self,
        reservation_id: str,
        outcome: str = "failed",
        *,
        actual_usd: float = 0.0,
        tokens_in: int = 0,
        tokens_out: int = 0,
        latency_ms: float = 0.0,
        tokens_cached: int = 0,
    ) -> CapTotals: ...

    async def renew(self, reservation_id: str) -> bool:
        """Push a live reservation's expiry one TTL from now, while its call is still in
        flight (the process that holds it is alive); False when it is no longer live."""
        ...

    async def record_call(
        self,
        *,
        session: str,
        run: str | None = None,
        role: str,
        model: str,
        provider: str,
        tokens_in: int,
        tokens_out: int,
        latency_ms: float,
        cost_usd: float,
        outcome: str = "ok",
        tokens_cached: int = 0,
    ) -> CapTotals: ...

    async def flush(self) -> None:
        """Make every write so far visible to the store's reports now (the machine's
        folds its spool into the tables; the team's has nothing left to do)."""
        ...

    async def expire_stale(self) -> int: ...

    async def snapshot(self, session: str) -> BudgetSnapshot: ...

    async def left_usd(self, session: str, provider: str) -> float: ...

    async def left_usd_many(self, session: str, providers: Iterable[str]) -> dict[str, float]: ...

    async def report(self, session: str | None = None, days: int = 7) -> dict[str, Any]: ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
