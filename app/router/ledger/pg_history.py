"""What the team ledger charged, and when: each reservation and each close, by the
database's clock, so a replay (``policy simulate``) can charge the team's spend where it
happened. Reads only.

Why the ledger and not the team audit's ``call`` lines: the caps were checked against
the ledger's totals, and these rows are what moved them. A reservation counted against
every cap while its call was in flight (concurrent requests read less left because of
it); a call cancelled, cut short or failed after billing, a reservation charged in full
by its expiry, a cost past its estimate, each is a charge with no ``call`` line; and a
line's time is its laptop's clock, the ledger's is the one database's.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from app.store.postgres import Conn


class Charged(NamedTuple):
    """One row of the team ledger's history: a reservation made (``cost`` None) or a
    call closed (its reservation's ``reserved`` and ``reserved_at`` when it had one)."""

    reservation: str | None
    reserved_at: datetime | None
    reserved: int
    #: when the call closed (None: the reservation is still live)
    at: datetime | None
    cost: int | None
    day: str
    session: str
    user: str
    provider: str


# Every call row with its reservation (a row written without one, a cost past its
# estimate, has none), and the reservations still live, which have no call row yet.
_HISTORY = (
    "SELECT r.id AS reservation, r.created AS reserved_at, COALESCE(r.amount_nusd, 0) AS reserved,"
    " c.ts AS at, c.cost_nusd AS cost, c.day, c.session, c.user_name, c.provider"
    " FROM ledger_calls c LEFT JOIN ledger_reservations r ON r.id = c.reservation_id"
    " WHERE c.team = $1 AND (c.day BETWEEN $2 AND $3 OR c.session = ANY ($4::text[]))"
    " AND COALESCE(r.created, c.ts) <= $5"
    " UNION ALL SELECT r.id, r.created, r.amount_nusd, NULL, NULL, r.day, r.session,"
    " r.user_name, r.provider FROM ledger_reservations r"
    " WHERE r.team = $1 AND r.status = 'live'"
    " AND (r.day BETWEEN $2 AND $3 OR r.session = ANY ($4::text[])) AND r.created <= $5"
)


async def history(
    conn: Conn,
    team: str,
    *,
    first_day: str,
    last_day: str,
    sessions: Sequence[str],
    until: datetime,
) -> list[Charged]:
    """``team``'s charges on the days from ``first_day`` to ``last_day`` and those of
    ``sessions`` on any day (a session's cap counts its whole life), made up to ``until``;
    in no particular order."""
    rows = await conn.fetch(_HISTORY, team, first_day, last_day, list(sessions), until)
    return [
        Charged(
            reservation=r["reservation"],
            reserved_at=r["reserved_at"],
            reserved=int(r["reserved"]),
            at=r["at"],
            cost=None if r["cost"] is None else int(r["cost"]),
            day=r["day"],
            session=r["session"],
            user=r["user_name"],
            provider=r["provider"],
        )
        for r in rows
    ]
