"""The store interface of the budget ledger: what the router, the pipeline and the CLI
use. :class:`~app.router.ledger.BudgetLedger` (a machine's SQLite file, the default) and
:class:`~app.router.ledger.pg_ledger.PgBudgetLedger` (the team's PostgreSQL) implement
it; the router calls the one it was given directly, with nothing in between.

``defer=True`` on a settlement or a call record: the store may commit it with its next
write (group commit); a crash before then loses it as one just before it would have.
A store that commits every write ignores it."""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Any, Protocol, Self

from app.policy.schema import Budget
from app.router.ledger.records import BudgetSnapshot, Reservation


class Ledger(Protocol):
    budget: Budget

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
        defer: bool = False,
    ) -> None: ...

    async def release(
        self,
        reservation_id: str,
        outcome: str = "failed",
        *,
        actual_usd: float = 0.0,
        tokens_in: int = 0,
        tokens_out: int = 0,
        latency_ms: float = 0.0,
    ) -> None: ...

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
        defer: bool = False,
    ) -> None: ...

    async def flush(self) -> None:
        """Commit what was written with ``defer=True`` (group commit) now."""
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
