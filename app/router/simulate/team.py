"""The rest of the team's spend, for a replay of one chain of the team store: what the
team ledger charged that the replayed lines do not hold, each charge at the database's
time it was made, and the database's time of each replayed line, so that
:func:`~app.router.simulate.simulation.simulate` charges them in between, where they
happened (the shared caps then bind as they did).

The team's day and provider-day caps are everyone's and a user's day cap is that user's
(:class:`~app.router.simulate.ledger.SimLedger` keeps them apart); on a machine's own
SQLite file every cost is in its one log, and none of this is read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

from app.errors import SwitchyardError
from app.router.ledger.pg_history import Charged, history
from app.router.simulate.requests import Collected

if TYPE_CHECKING:
    import asyncpg

    from app.audit.pg_log import PgAuditLog


class Charge(NamedTuple):
    """A change to the team ledger's totals: a reservation made (``cost`` None, +its
    amount) or a call closed (``cost``; ``amount`` is what it cost less its reservation)."""

    at: datetime
    #: 0 a reservation, 1 a close: a reservation goes first on a tie
    order: int
    day: str
    session: str
    user: str
    provider: str
    amount: int
    reservation: str | None
    cost: int | None


@dataclass
class TeamCharges:
    """What a replay of ``chain`` reads besides its lines."""

    #: whose chain is replayed (the user's day cap is charged that user's spend only)
    user: str
    #: the replayed lines' seqs (requests and calls) → when the database received them
    received: dict[int, datetime] = field(default_factory=dict)
    #: the rest of the team's charges, in time order
    charges: list[Charge] = field(default_factory=list)


def event_seqs(collected: Collected) -> list[int]:
    """The lines a replay charges or decides at: each request's first decision line and
    every call line."""
    seqs = [c.seq for c in collected.loose_calls]
    for req in collected.requests:
        seqs.append(req.seq)
        seqs += [c.seq for c in req.calls]
    return seqs


def own_sessions(collected: Collected) -> set[str]:
    return (
        {r.session for r in collected.requests}
        | {c.session for c in collected.loose_calls}
        | {o.session for o in collected.old}
    )


def charges_of(rows: Iterable[Charged], own: set[str], own_from: datetime | None) -> list[Charge]:
    """The ledger's rows as charges, in time order, leaving out the replayed chain's own:
    a row of a session the lines read hold, made from the first of them on (the replay
    makes those costs itself). The ledger does not name a row's chain: a row of such a
    session made before that line is another chain's (a session resumed elsewhere) and
    counts toward the caps as it did; one that another instance made in the same session
    at the same time (rare) is taken for the chain's own."""
    out: list[Charge] = []
    for row in rows:
        first = row.reserved_at or row.at
        assert first is not None
        if row.session in own and (own_from is None or first >= own_from):
            continue
        common = (row.day, row.session, row.user, row.provider)
        if row.reserved_at is not None:
            out.append(Charge(row.reserved_at, 0, *common, row.reserved, row.reservation, None))
        if row.at is not None and row.cost is not None:
            close = row.cost - row.reserved
            out.append(Charge(row.at, 1, *common, close, row.reservation, row.cost))
    out.sort(key=lambda c: (c.at, c.order))
    return out


async def read_team_charges(
    log: PgAuditLog, pool: asyncpg.Pool, collected: Collected
) -> TeamCharges:
    """The rest of ``log``'s team's spend over the days and sessions ``collected`` holds,
    up to its last line (nothing after it bears on a replayed decision)."""
    import asyncpg

    from app.store import postgres

    found = TeamCharges(user=log.user)
    seqs = event_seqs(collected)
    if not seqs:
        return found
    found.received = await log.received([collected.start, *seqs])
    times = [found.received[s] for s in seqs if s in found.received]
    if not times:  # (lines from before the database stamped them: nowhere to put a charge)
        return found
    days = [r.day for r in collected.requests] + [c.ts[:10] for c in collected.loose_calls]
    sessions = own_sessions(collected)
    try:
        async with pool.acquire(timeout=postgres.STATEMENT_TIMEOUT_S) as conn:
            rows = await history(
                conn,
                log.team,
                first_day=min(days, default=""),
                last_day=max(days, default=""),
                sessions=sorted(sessions),
                until=max(times),
            )
    except asyncpg.UndefinedTableError:
        return found  # no ledger in this database: nothing was ever charged
    except postgres.db_errors() as exc:
        raise SwitchyardError(
            f"team ledger {log.where}: the team's spend cannot be read ({postgres.why(exc)});"
            " nothing was simulated"
        ) from None
    found.charges = charges_of(rows, sessions, found.received.get(collected.start))
    return found
