"""A simulated budget ledger: one policy's caps over the spend its replay accumulates.

The arithmetic is the real ledger's (:class:`app.router.ledger.caps.Caps`, nano-dollars),
so a replay under the policy that was in force leaves exactly what the router saw. A
replay is sequential: each cost is settled at once, nothing stays reserved.
"""

from __future__ import annotations

from app.policy.schema import Budget
from app.router.ledger.caps import Caps, Sums
from app.router.ledger.money import usd


class SimLedger:
    def __init__(self, budget: Budget, providers: list[str]) -> None:
        self.caps = Caps.of(budget)
        self.providers = providers
        self._session: dict[str, int] = {}
        self._day: dict[str, int] = {}
        self._provider_day: dict[str, dict[str, int]] = {}

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
        return self.caps.left_usd(self._sums(session, day), providers or self.providers)

    def binding_cap(self, session: str, day: str, provider: str) -> str:
        """Which cap leaves the least for ``provider``: ``session``, ``day`` or
        ``provider:NAME`` (the first of them on a tie)."""
        u = self._sums(session, day)
        rooms = [("session", self.caps.session - u.s_spent), ("day", self.caps.day - u.d_spent)]
        cap = self.caps.provider.get(provider)
        if cap is not None:
            rooms.append((f"provider:{provider}", cap - u.provider(provider)[0]))
        return min(rooms, key=lambda r: r[1])[0]

    def limit_usd(self, cap: str) -> float:
        if cap == "session":
            return usd(self.caps.session)
        if cap == "day":
            return usd(self.caps.day)
        return usd(self.caps.provider[cap.split(":", 1)[1]])

    def settle(self, session: str, day: str, provider: str | None, amount_nusd: int) -> None:
        if amount_nusd <= 0:
            return
        self._session[session] = self._session.get(session, 0) + amount_nusd
        self._day[day] = self._day.get(day, 0) + amount_nusd
        if provider is not None:
            per = self._provider_day.setdefault(day, {})
            per[provider] = per.get(provider, 0) + amount_nusd
