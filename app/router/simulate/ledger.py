"""A simulated budget ledger: one policy's caps over the spend its replay accumulates.

The arithmetic is the real ledger's (:class:`app.router.ledger.caps.Caps`, nano-dollars),
so a replay under the policy that was in force leaves exactly what the router saw. A
replay is sequential: each cost is settled at once, nothing stays reserved. On the team
store the rest of the team's charges come in too (:meth:`SimLedger.charge`), as the
team ledger made them: a reservation while its call was in flight, then what it cost.
"""

from __future__ import annotations

import dataclasses

from app.policy.schema import Budget
from app.router.ledger.caps import Caps, Sums
from app.router.ledger.money import NANO, usd


class SimLedger:
    def __init__(self, budget: Budget, providers: list[str], *, user: str | None = None) -> None:
        """``user``: on the team store, whose chain is replayed. There the day and the
        provider-day caps are the whole team's and ``user_day_usd`` is each user's
        (:mod:`app.router.ledger.pg_ledger`); None: a machine's own file, where every
        cost is its user's and the user's day cap is its day cap (:meth:`Caps.of`)."""
        caps = Caps.of(budget)
        self.user = user
        self.user_cap: int | None = None
        if user is not None:
            caps = dataclasses.replace(caps, day=round(budget.day_usd * NANO))
            if budget.user_day_usd is not None:
                self.user_cap = round(budget.user_day_usd * NANO)
        self.caps = caps
        self.providers = providers
        self._session: dict[str, int] = {}
        self._day: dict[str, int] = {}
        self._provider_day: dict[str, dict[str, int]] = {}
        #: the replayed chain's user's spend per day (the team store's user_day cap)
        self._user_day: dict[str, int] = {}

    def _sums(self, session: str, day: str) -> Sums:
        u = Sums()
        u.s_spent = self._session.get(session, 0)
        u.d_spent = self._day.get(day, 0)
        u.per_provider = {p: (n, 0) for p, n in self._provider_day.get(day, {}).items()}
        return u

    def left_usd(
        self, session: str, day: str, providers: list[str] | None = None
    ) -> dict[str, float]:
        """Per provider, what is left under the tightest of its caps (as the router reads)."""
        left = self.caps.left_usd(self._sums(session, day), providers or self.providers)
        if self.user_cap is None:
            return left
        # (the least of the dollars is the dollars of the least: the team ledger's figure)
        room = usd(max(0, self.user_cap - self._user_day.get(day, 0)))
        return {p: min(v, room) for p, v in left.items()}

    def binding_cap(self, session: str, day: str, provider: str) -> str:
        """Which cap leaves the least for ``provider``: ``session``, ``day``, ``user:NAME``
        or ``provider:NAME`` (the first of them on a tie, the team ledger's order)."""
        u = self._sums(session, day)
        rooms = [("session", self.caps.session - u.s_spent), ("day", self.caps.day - u.d_spent)]
        if self.user_cap is not None:
            rooms.append((f"user:{self.user}", self.user_cap - self._user_day.get(day, 0)))
        cap = self.caps.provider.get(provider)
        if cap is not None:
            rooms.append((f"provider:{provider}", cap - u.provider(provider)[0]))
        return min(rooms, key=lambda r: r[1])[0]

    def limit_usd(self, cap: str) -> float:
        if cap == "session":
            return usd(self.caps.session)
        if cap == "day":
            return usd(self.caps.day)
        if cap.startswith("user:"):
            assert self.user_cap is not None
            return usd(self.user_cap)
        return usd(self.caps.provider[cap.split(":", 1)[1]])

    def settle(self, session: str, day: str, provider: str | None, amount_nusd: int) -> None:
        """A cost of the replayed chain (its user's)."""
        if amount_nusd <= 0:
            return
        self._add(session, day, provider, amount_nusd, own_user=True)

    def charge(self, session: str, day: str, provider: str, amount_nusd: int, *, user: str) -> None:
        """A charge of the rest of the team, ``user``'s: a reservation made (its amount),
        or a call closed (what it cost less what was reserved for it: less than nothing
        when it cost less)."""
        if amount_nusd:
            self._add(session, day, provider, amount_nusd, own_user=user == self.user)

    def _add(
        self, session: str, day: str, provider: str | None, amount_nusd: int, *, own_user: bool
    ) -> None:
        self._session[session] = self._session.get(session, 0) + amount_nusd
        self._day[day] = self._day.get(day, 0) + amount_nusd
        if provider is not None:
            per = self._provider_day.setdefault(day, {})
            per[provider] = per.get(provider, 0) + amount_nusd
        if own_user and self.user is not None:
            self._user_day[day] = self._user_day.get(day, 0) + amount_nusd
