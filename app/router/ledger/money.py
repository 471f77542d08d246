"""Money as integer nano-dollars, so sums are exact and cap comparisons never wobble, and
the UTC day a cost is counted on."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from app.clock import iso
from app.router.ledger.errors import LedgerError

NANO = 1_000_000_000  # nano-dollars per dollar


def nusd(usd: float, what: str) -> int:
    """``usd`` in nano-dollars; a caller's amount, so anything but a finite >= 0 is refused."""
    if not math.isfinite(usd) or usd < 0:
        raise LedgerError(f"{what} must be a finite amount >= 0, got {usd!r}")
    return round(usd * NANO)


def usd(amount_nusd: int) -> float:
    """Dollars as a float, whatever integer type the store gave: PostgreSQL's ``sum`` of
    a bigint is a numeric, a Decimal here, which ``--json`` wrote as the string "0.801"
    beside the number 0.0 of an empty row."""
    return int(amount_nusd) / NANO


#: the UTC day last asked for: its ordinal, and its text
_day: tuple[int, str] = (0, "")


def utc_day(dt: datetime) -> str:
    """``dt``'s UTC date as :func:`app.clock.iso` spells it (``YYYY-MM-DD``), the day's
    text made once (every budget read asks: issue 20)."""
    global _day
    if dt.tzinfo is not UTC:
        return iso(dt)[:10]
    ordinal = dt.toordinal()
    if ordinal != _day[0]:
        _day = (ordinal, dt.date().isoformat())
    return _day[1]


def check_tokens(tokens_in: int, tokens_out: int) -> None:
    if tokens_in < 0 or tokens_out < 0:
        raise LedgerError(f"token counts must be >= 0, got {tokens_in} in, {tokens_out} out")
