"""A session's calls summed by role, model and provider (the budget meter's breakdown),
kept per ledger object and brought up to date by reading only the calls written since.

The meter's snapshot read every call of its session, grouped four ways, at each publish
(up to ten a second): 311 ms at 150k calls in one ``serve --tui`` session (a long-life
audit). Calls are only ever inserted (a settlement or an expiry is a call row of its
own, written then; neither store updates or deletes one), so the sums of the calls up to
a point in a store's write order stay true once read: a snapshot adds the calls past it.
Where that point is, and why no call can appear behind it later, is each store's
(:func:`.reports.call_groups`, :func:`.pg_reports.call_groups`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.router.ledger.money import usd

#: role, model, provider
Key = tuple[str, str, str]
#: a group's cost (nano-dollars), calls and calls that did not complete
Sums = tuple[int, int, int]
#: how many sessions a ledger keeps (a long-running process opens a few)
MAX_SESSIONS = 64


@dataclass(frozen=True, slots=True)
class Groups:
    """One session's calls, summed per (role, model, provider)."""

    sums: Mapping[Key, Sums] = field(default_factory=dict)

    def plus(self, rows: Iterable[Sequence[Any]]) -> Groups:
        """These sums and ``rows`` (role, model, provider, cost, calls, failed) added."""
        out = dict(self.sums)
        for role, model, provider, cost, calls, failed in rows:
            key = (str(role), str(model), str(provider))
            c, n, f = out.get(key, (0, 0, 0))
            out[key] = (c + int(cost or 0), n + int(calls or 0), f + int(failed or 0))
        return Groups(out)

    @property
    def cost(self) -> int:
        return sum(s[0] for s in self.sums.values())

    @property
    def calls(self) -> int:
        return sum(s[1] for s in self.sums.values())

    @property
    def failed(self) -> int:
        return sum(s[2] for s in self.sums.values())

    def by(self, at: int) -> dict[str, float]:
        """The cost per role (``at`` 0), model (1) or provider (2) in dollars, those that
        cost nothing left out, by name in code-point order: SQLite's ORDER BY, which read
        them before (a team database's collation may have put them otherwise; every
        reader sorts them or looks them up by name)."""
        total: dict[str, int] = {}
        for key, (cost, _, _) in self.sums.items():
            total[key[at]] = total.get(key[at], 0) + cost
        return {k: usd(v) for k, v in sorted(total.items()) if v > 0}


EMPTY = Groups()


class GroupCache:
    """Each session's groups up to a point (``horizon``) of the store's write order.

    The meter's reads (on a thread of their own) and the ledger's own share it, each in
    a read snapshot of its own: a point only ever replaces an older one, and a reader
    whose snapshot is older than the point held does not use it (the stores check).
    """

    def __init__(self) -> None:
        self._held: dict[str, tuple[int, Groups]] = {}
        self._lock = threading.Lock()

    def get(self, session: str) -> tuple[int, Groups] | None:
        with self._lock:
            return self._held.get(session)

    def put(self, session: str, horizon: int, groups: Groups) -> None:
        with self._lock:
            held = self._held.pop(session, None)
            if held is not None and held[0] > horizon:
                groups, horizon = held[1], held[0]
            self._held[session] = (horizon, groups)  # (last: the most recently read)
            if len(self._held) > MAX_SESSIONS:
                del self._held[next(iter(self._held))]
