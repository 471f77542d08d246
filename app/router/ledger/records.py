"""The ledger's records as callers see them: a reservation, one cap's usage, a snapshot."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, TypedDict

from pydantic import BaseModel, ConfigDict

from app.dollars import dollars
from app.router.ledger.money import usd


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Reservation(_Frozen):
    id: str
    session: str
    run: str = ""
    provider: str
    role: str
    model: str
    amount_usd: float
    created: str
    expires: str


class CapUsage(_Frozen):
    """One cap's state. ``cap_usd``/``left_usd`` are None when nothing caps it."""

    cap_usd: float | None
    spent_usd: float
    reserved_usd: float
    left_usd: float | None


class BudgetSnapshot(_Frozen):
    session: str
    day: str
    ts: str
    per_session: CapUsage
    per_day: CapUsage
    # Every provider with a cap, plus any uncapped one with spend or reservations today.
    per_provider: dict[str, CapUsage]
    reserved_usd: float  # the session's reservations in flight
    calls: int  # the session's recorded calls
    failed: int = 0  # of which did not complete (failed, cancelled, broken, timed out, expired)
    by_role: dict[str, float]  # the session's settled cost; free (local) calls left out
    by_model: dict[str, float]
    by_provider: dict[str, float]
    # A shared (team) store: per_day and per_provider are the team's, per_user this user's day
    team: str | None = None
    user: str | None = None
    per_user: CapUsage | None = None


def usage(cap: int | None, spent: int, reserved: int) -> CapUsage:
    """A cap's usage from nano-dollar amounts; ``cap`` None: uncapped."""
    return CapUsage(
        cap_usd=None if cap is None else usd(cap),
        spent_usd=usd(spent),
        reserved_usd=usd(reserved),
        left_usd=None if cap is None else usd(max(0, cap - spent - reserved)),
    )


class Crossed(NamedTuple):
    """A cap spent past: its name, its amount and what was spent against it."""

    cap: str
    cap_usd: float
    spent_usd: float


class CapTotal(NamedTuple):
    """A cap that a write to the ledger (a settlement, a release, a call recorded) left
    spent past: its name ("session", "day", "<provider> day", "user day"), its amount, and
    what was spent against it (settled spend, not reservations) just before and just
    after that write, read under the lock the write held. Nano-dollars."""

    cap: str
    cap_nusd: int
    before: int
    after: int


#: what a write returns: each cap it counted against and left spent past. The usual
#: write, within every cap, returns an empty tuple (nothing made on the request path).
CapTotals = tuple[CapTotal, ...]


class LateClose(_Frozen):
    """A settlement or release the store could not take when it was made (the team's
    database was away), written once it answered again: the audit says so."""

    reservation: str
    session: str
    run: str = ""
    role: str
    model: str
    provider: str
    #: "settled" or "released"
    status: str
    outcome: str
    cost_usd: float
    #: charged by expiry meanwhile (at its amount): what it cost past that is a row apart
    expired: bool = False
    #: the caps this close (expired: its row apart) left spent past (:class:`CapTotal`)
    caps: tuple[CapTotal, ...] = ()


def crossed_by(totals: CapTotals | None) -> list[Crossed]:
    """The caps a write carried past: within the cap just before it, past it just after
    (reaching a cap exactly is not crossing it). Decided from the write's own totals,
    taken with it under one lock, so of writes landing at once exactly one crosses each
    cap: a snapshot read after the write also held the writes that landed meanwhile, each
    writer then found the cap crossed before its own, and none said it (a user's audit).
    ``None``: a stand-in that told nothing (a test's wrapper of a store's write)."""
    if not totals:
        return []
    return [
        Crossed(t.cap, usd(t.cap_nusd), usd(t.after))
        for t in totals
        if t.before <= t.cap_nusd < t.after
    ]


class Expired(Reservation):
    """A reservation charged in full by its expiry, as ``on_expired`` is told of it, with
    the caps that charge left spent past (``caps``: its totals just before and after it,
    taken with the write, as a settlement's are; empty when the expiry is told again by
    another process than the one that charged it, which kept no totals)."""

    caps: tuple[CapTotal, ...] = ()


class CrossedLine(TypedDict):
    to: str
    reason_codes: list[str]
    values: dict[str, Any]
    detail: str


def crossed_line(model: str, crossed: Sequence[Crossed], cost_usd: float, why: str) -> CrossedLine:
    """The ``budget`` line's fields (GR011_CAP_CROSSED) that say ``model``'s charge of
    ``cost_usd`` carried the spend past each cap of ``crossed`` (:func:`crossed_by`),
    ``why`` it could: the same line whichever write crossed (a settlement, an expiry, a
    close written late)."""
    return {
        "to": model,
        "reason_codes": ["GR011_CAP_CROSSED"],
        "values": {"caps": [c._asdict() for c in crossed], "cost_usd": round(cost_usd, 9)},
        "detail": f"{model} {why}: past the "
        + ", ".join(
            f"{c.cap} cap ({dollars(c.spent_usd)} of {dollars(c.cap_usd)})" for c in crossed
        ),
    }
