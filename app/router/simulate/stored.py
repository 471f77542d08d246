"""A simulation of the audit log the settings name: this machine's file, or one chain of
the team store with the rest of the team's spend (:mod:`.team`). The one path both faces
take, ``switchyard policy simulate`` and the TUI's Simulate screen: the screen replayed
its chain without the team's spend, and said a cap held where the CLI said it was
crossed (a user audit of the team store).

The log is read on a store of its own, never the session's: a verify and an export of a
SQLite log hold its lock to their end, and every line the session wrote meanwhile (a
run's routes and escalations) waited for them, 34 s on a log of 955k lines.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from app.errors import UsageError
from app.router.simulate.report import PolicyRef
from app.router.simulate.simulation import Filters, simulate
from app.router.simulate.source import read_log

if TYPE_CHECKING:
    from app.config import Settings
    from app.policy import LoadedPolicy
    from app.router.simulate.report import SimulationReport
    from app.router.simulate.requests import Collected
    from app.router.simulate.team import TeamCharges
    from app.store.url import DatabaseUrl


def simulate_stored(
    new: LoadedPolicy,
    against: LoadedPolicy,
    settings: Settings,
    *,
    since: str | None = None,
    until: str | None = None,
    session: str | None = None,
    chain: str | None = None,
    local_only: bool = False,
) -> SimulationReport:
    """Read the verified chain of the audit log the settings name (this machine's file, or
    ``chain`` in the team store) and simulate ``new`` against ``against``.

    The team store holds a chain per instance, and opening it without ``chain`` starts
    this process's own, empty: "no decisions in this range" was said of a team's 42. So
    there ``chain`` is required (a usage error names where to find one). There the caps
    are shared: the rest of the team's spend is read from the team ledger besides (a
    replay of one chain charged that chain's costs alone, and a request a teammate's
    spend had kept local replayed as a cloud call). ``local_only``: a session's own
    GR-009, on top of the policy's and the settings' (the database is an egress path).

    Blocking, on a loop of its own for the reads: the CLI calls it, the TUI in a worker's
    thread (the replay is CPU only, and in the CLI's main thread Ctrl-C stops it)."""
    from app.backends.local_only import effective_local_only
    from app.router.stores import database_url, open_audit

    url = database_url(settings)
    if url is None:
        if chain is not None:
            raise UsageError("--chain names a chain of the team store; none is set")
    elif chain is None:
        raise UsageError(
            "the team store holds a chain per instance: name the one to replay with "
            "--chain (see `switchyard audit chains`)"
        )
    privacy: dict[str, Any] = {
        "local_only": effective_local_only(against.policy, settings, local_only),
        "named": against.policy.named_local_hosts(),
    }

    async def read() -> tuple[Collected, TeamCharges | None]:
        if url is None:
            log = await open_audit(settings, **privacy)
            try:
                return await read_log(log, since=since, session=session), None
            finally:
                await log.close()
        return await _read_team(settings, url, privacy, chain, since, session)

    collected, team = asyncio.run(read())
    return simulate(
        collected,
        new.policy,
        against.policy,
        new_ref=PolicyRef(path=str(new.path), version=new.policy.version),
        against_ref=PolicyRef(path=str(against.path), version=against.policy.version),
        filters=Filters(since=since, until=until, session=session),
        team=team,
    )


async def _read_team(
    settings: Settings,
    url: DatabaseUrl,
    privacy: dict[str, Any],
    chain: str | None,
    since: str | None,
    session: str | None,
) -> tuple[Collected, TeamCharges]:
    """``chain`` of the team store, and the rest of the team's spend, on one pool."""
    from app.audit.pg_log import PgAuditLog
    from app.router.simulate.team import read_team_charges
    from app.router.stores import open_audit
    from app.store.postgres import connect_pool

    pool = await connect_pool(url, **privacy)
    try:
        log = await open_audit(settings, pool=pool, chain=chain, **privacy)
        try:
            assert isinstance(log, PgAuditLog)
            collected = await read_log(log, since=since, session=session)
            return collected, await read_team_charges(log, pool, collected)
        finally:
            await log.close()
    finally:
        await pool.close()
