"""The ledger's records as callers see them: a reservation, one cap's usage, a snapshot."""

from __future__ import annotations

from typing import NamedTuple

from pydantic import BaseModel, ConfigDict

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
    failed: int = 0  # of which did not complete (failed, cancelled, broken, expired: $0)
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


def caps_crossed(snapshot: BudgetSnapshot, provider: str) -> list[Crossed]:
    """The caps ``snapshot`` shows spent past (settled spend alone, not reservations),
    among those a call to ``provider`` counts against: the session's, the day's (the
    team's, on a shared store), the provider's and, on a shared store, this user's."""
    caps: list[tuple[str, CapUsage | None]] = [
        ("session", snapshot.per_session),
        ("day", snapshot.per_day),
        (f"{provider} day", snapshot.per_provider.get(provider)),
        ("user day", snapshot.per_user),
    ]
    return [
        Crossed(name, cap.cap_usd, cap.spent_usd)
        for name, cap in caps
        if cap is not None and cap.cap_usd is not None and cap.spent_usd > cap.cap_usd
    ]
