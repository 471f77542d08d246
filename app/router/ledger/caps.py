"""The caps (session, day, provider-day) and the running totals they are checked against.

A cap is crossed when spent + reserved + requested would exceed it; reaching it exactly
is allowed. Everything here is in nano-dollars (:mod:`app.router.ledger.money`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from app.policy.schema import Budget
from app.router.ledger.errors import CapExceeded
from app.router.ledger.money import NANO, usd
from app.router.ledger.records import Reservation


class Sums:
    """Settled spend and live reservations for a session, a day and that day's providers."""

    __slots__ = ("d_res", "d_spent", "per_provider", "s_res", "s_spent")

    def __init__(self) -> None:
        self.s_spent = self.s_res = self.d_spent = self.d_res = 0
        self.per_provider: dict[str, tuple[int, int]] = {}

    def provider(self, name: str) -> tuple[int, int]:
        return self.per_provider.get(name, (0, 0))


# One index lookup per scope (UNION ALL) rather than an OR, which SQLite plans as a wider
# scan, or an IN list, for which it builds an ephemeral table at every read (~30k
# instructions, a reservation's whole cap check doubled).
_SUMS = (
    "SELECT scope, provider, spent_nusd, reserved_nusd FROM totals"
    " WHERE scope = 'session' AND key = ?1"
    " UNION ALL SELECT scope, provider, spent_nusd, reserved_nusd FROM totals"
    " WHERE scope = 'day' AND key = ?2"
    " UNION ALL SELECT scope, provider, spent_nusd, reserved_nusd FROM totals"
    " WHERE scope = 'provider_day' AND key = ?2"
)


def sums(db: sqlite3.Connection, session: str, day: str) -> Sums:
    """One read of the running totals (kept by triggers, see :mod:`.schema`): the cost of
    the sums no longer grows with the number of calls and reservations on file."""
    u = Sums()
    rows = db.execute(_SUMS, (session, day)).fetchall()
    for scope, provider, spent, reserved in rows:
        if scope == "session":
            u.s_spent, u.s_res = int(spent), int(reserved)
        elif scope == "day":
            u.d_spent, u.d_res = int(spent), int(reserved)
        else:
            u.per_provider[str(provider)] = (int(spent), int(reserved))
    return u


@dataclass(frozen=True, slots=True)
class Caps:
    """A budget's caps in nano-dollars; a provider not in ``provider`` has no cap of its own."""

    session: int
    day: int
    provider: Mapping[str, int]

    @classmethod
    def of(cls, budget: Budget) -> Caps:
        # One machine's file holds one user's costs: the user's day cap is its day cap.
        day = budget.day_usd
        if budget.user_day_usd is not None:
            day = min(day, budget.user_day_usd)
        return cls(
            session=round(budget.session_usd * NANO),
            day=round(day * NANO),
            provider={k: round(v * NANO) for k, v in budget.provider_day_usd.items()},
        )

    def crossed(
        self, session_used: int, day_used: int, provider_used: int, provider: str, amount: int
    ) -> str | None:
        """The first cap reserving ``amount`` for ``provider`` would cross ("session",
        "day" or "provider"), None when none: from the totals themselves, what the session,
        the day and the provider that day have spent and reserved (the request path's
        reservation reads them from the mirror, no :class:`Sums` made: issue 20)."""
        if session_used + amount > self.session:
            return "session"
        if day_used + amount > self.day:
            return "day"
        cap = self.provider.get(provider)
        if cap is not None and provider_used + amount > cap:
            return "provider"
        return None

    def check(self, u: Sums, res: Reservation, amount: int) -> CapExceeded | None:
        """The first cap that reserving ``amount`` for ``res`` would cross, if any."""
        p_spent, p_res = u.provider(res.provider)
        which = self.crossed(
            u.s_spent + u.s_res, u.d_spent + u.d_res, p_spent + p_res, res.provider, amount
        )
        if which is None:
            return None
        name, cap, spent, reserved = {
            "session": ("session", self.session, u.s_spent, u.s_res),
            "day": ("day", self.day, u.d_spent, u.d_res),
            "provider": (
                f"provider:{res.provider}",
                self.provider.get(res.provider, 0),
                p_spent,
                p_res,
            ),
        }[which]
        return CapExceeded(
            cap=name,
            limit_usd=usd(cap),
            spent_usd=usd(spent),
            reserved_usd=usd(reserved),
            requested_usd=usd(amount),
            session=res.session,
            provider=res.provider,
            model=res.model,
        )

    def left_usd(self, u: Sums, providers: Iterable[str]) -> dict[str, float]:
        """Per provider: the smallest remaining of the session, day and provider-day caps."""
        return self.left_of(u.s_spent + u.s_res, u.d_spent + u.d_res, u.per_provider, providers)

    def left_of(
        self,
        session_used: int,
        day_used: int,
        per_provider: Mapping[str, Sequence[int]],
        providers: Iterable[str],
    ) -> dict[str, float]:
        """:meth:`left_usd` from the totals themselves: what the session and the day have
        spent and reserved, and each provider's (spent, reserved) that day."""
        base = min(self.session - session_used, self.day - day_used)
        # (a provider with no cap of its own has the base left: worked out once)
        left_base = usd(max(0, base))
        caps = self.provider
        out: dict[str, float] = {}
        for provider in providers:
            cap = caps.get(provider)
            if cap is None:
                out[provider] = left_base
                continue
            used = per_provider.get(provider)
            left = min(base, cap if used is None else cap - used[0] - used[1])
            out[provider] = usd(max(0, left))
        return out
