"""Money as integer nano-dollars, so sums are exact and cap comparisons never wobble, and
the UTC day a cost is counted on."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from app.clock import iso
from app.router.ledger.errors import LedgerError

NANO = 1_000_000_000  # nano-dollars per dollar


#: what one record may hold, so that every sum of a day's records stays in SQLite's and
#: PostgreSQL's 64-bit integers (2**62 nano-dollars: $4.6 billion; tokens alike): a
#: record past it entered the spool and broke every later fold
MAX_UNITS = 2**62


def nusd(usd: float, what: str) -> int:
    """``usd`` in nano-dollars; a caller's amount, so anything but a finite amount in
    0..MAX_UNITS nano-dollars is refused."""
    if not math.isfinite(usd) or usd < 0:
        raise LedgerError(f"{what} must be a finite amount >= 0, got {usd!r}")
    amount = round(usd * NANO)
    if amount > MAX_UNITS:
        raise LedgerError(f"{what} ${usd:.6g} is beyond what one ledger record holds")
    return amount


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


def check_tokens(tokens_in: int, tokens_out: int, tokens_cached: int = 0) -> None:
    if not (0 <= tokens_in <= MAX_UNITS and 0 <= tokens_out <= MAX_UNITS):
        shown = [str(t) if abs(t) <= MAX_UNITS else "beyond 2**62" for t in (tokens_in, tokens_out)]
        raise LedgerError(f"token counts must be in 0..2**62, got {shown[0]} in, {shown[1]} out")
    if not 0 <= tokens_cached <= tokens_in:  # (a part of the prompt: never more than it)
        shown_cached = str(tokens_cached) if abs(tokens_cached) <= MAX_UNITS else "beyond 2**62"
        raise LedgerError(
            f"cached tokens must be in 0..tokens_in ({tokens_in}), got {shown_cached}"
        )
