"""Connecting to the team database and migrating its schema.

Privacy (GR-009): the database is an egress path like any HTTP endpoint. Under
local_only it must be on loopback (or a unix socket) or a host the policy names as local
(``[privacy] local_hosts``), and a name passes only when every address it resolves to is
loopback or private, the rule of :mod:`app.hosts`. The connection then goes to the
address that was checked, so the name cannot resolve elsewhere in between.

Migrations are versioned per component (``ledger``, ``audit``) in ``switchyard_schema``
and applied under one advisory lock, so machines starting together migrate once. A
version newer than the code is refused, naming both.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

from app.hosts import HostPort, is_loopback_address, named_host_refusal, resolve_sync
from app.store.errors import (
    SchemaTooNew,
    StorePrivacyError,
    StoreRefused,
    StoreUnavailable,
    TeamSpelledOtherwise,
)
from app.store.url import DatabaseUrl

if TYPE_CHECKING:  # asyncpg is imported when a database is used, not by the CLI's start
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

CONNECT_TIMEOUT_S = 5.0
#: the longest one statement, or a wait for a pooled connection, may take. A database
#: that stopped answering (a stopped server, a partition that drops packets) held a
#: gateway's requests with no limit: 100 s until the server came back, every pooled
#: connection stuck. The team stores' statements are small; a report's page is too.
STATEMENT_TIMEOUT_S = 15.0
#: a migration's statement may build an index over a team's whole log (3M lines took 5 s
#: in a review, and a team's may hold many more): under the statement timeout above it
#: rolled back, and every next start tried again, appends waiting each time
MIGRATION_TIMEOUT_S = 900.0

# The pool logs its own retries (the server gone: "Failed to restore the pool connection
# floor", with a traceback each time). A command with no log configured printed them on
# stderr, through logging's last resort, over the one line that says what happened; a
# face with a log file (the ACP agent, the TUI) still gets them there, by propagation.
logging.getLogger("asyncpg").addHandler(logging.NullHandler())
#: the advisory lock key every migration takes (an arbitrary constant: "swyd" in ASCII)
MIGRATION_LOCK = 0x73777964
#: one migration: the statements that take a component from version i to i + 1
Migration = Sequence[str]
#: a connection of its own or one lent by a pool
Conn: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"


def checked_host(
    url: DatabaseUrl,
    *,
    local_only: bool,
    named: frozenset[HostPort],
    resolver: Callable[[str, int], list[str]] = resolve_sync,
) -> str | None:
    """The address to connect to (None: as the URL says), after the local_only check.

    Raises :class:`StorePrivacyError` when local_only is on and the host is neither
    loopback nor a named local host whose every address is private.
    """
    if url.host is None:  # a unix socket: this machine
        return None
    if not local_only:
        return None
    addresses = _addresses(url.host, url.port, resolver)
    if addresses and all(is_loopback_address(a) for a in addresses):
        return addresses[0]
    why = named_host_refusal(url.host, url.port, named, addresses)
    if why is None:
        return addresses[0]
    raise StorePrivacyError(
        f"local_only is on and the team database {url.display()} is not local: {why}. "
        "Use a database on loopback or a LAN host named in [privacy] local_hosts, "
        "or unset SWITCHYARD_DATABASE_URL"
    )


def _addresses(host: str, port: int, resolver: Callable[[str, int], list[str]]) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        return resolver(host, port)


async def connect_pool(
    url: DatabaseUrl,
    *,
    local_only: bool,
    named: frozenset[HostPort],
    min_size: int = 1,
    max_size: int = 4,
    timeout_s: float = CONNECT_TIMEOUT_S,
) -> asyncpg.Pool:
    """A pool of connections to ``url``; :class:`StoreUnavailable` when it cannot be had."""
    import asyncpg

    kwargs = await _where(url, local_only=local_only, named=named)
    missing = url.missing_files()
    if missing:  # (ssl's own error names no file, and read as a server away)
        raise StoreRefused(
            f"the team database {url.display()}: ?{missing[0]}= names a file that is not "
            f"there ({missing[1]}) (check SWITCHYARD_DATABASE_URL's parameters)"
        )
    try:
        pool = await asyncpg.create_pool(
            dsn=url.raw,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout_s,
            command_timeout=STATEMENT_TIMEOUT_S,
            # statements are few and fixed; the cache is per connection
            statement_cache_size=64,
            # no session state to undo (no SET, LISTEN or session locks: every lock is a
            # transaction's), so a released connection skips asyncpg's reset round trip
            reset=_no_reset,
            **kwargs,
        )
    except (
        asyncpg.InvalidAuthorizationSpecificationError,  # the user, its password, pg_hba
        asyncpg.InvalidCatalogNameError,  # no such database
    ) as exc:
        raise StoreRefused(
            f"the team database {url.display()} refused the connection: {_why(exc, url)} "
            "(check the user, the password and the database in SWITCHYARD_DATABASE_URL)"
        ) from None
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        if refused_as_configured(exc):
            raise StoreRefused(
                f"the team database {url.display()} refused what the URL asks: "
                f"{_why(exc, url)} (check SWITCHYARD_DATABASE_URL's parameters)"
            ) from None
        raise StoreUnavailable(
            f"cannot reach the team database {url.display()}: {_why(exc, url)}"
        ) from None
    assert pool is not None
    if url.setting("search_path") is not None:
        await _refuse_no_schema(pool, url)
    return pool


async def _where(
    url: DatabaseUrl, *, local_only: bool, named: frozenset[HostPort]
) -> dict[str, Any]:
    """The host and port to connect to, after the local_only check (:func:`checked_host`).
    Always the ones checked here: asyncpg would otherwise read its own from the DSN (its
    last ?host=, its failover lists), which parse_database_url refuses."""
    address = await asyncio.to_thread(checked_host, url, local_only=local_only, named=named)
    return {"host": address or url.host or url.socket_dir, "port": url.port}


async def _refuse_no_schema(pool: asyncpg.Pool, url: DatabaseUrl) -> None:
    """:class:`StoreRefused` (the pool closed) when the URL's ``?search_path=`` leaves no
    schema to create in or read from: every store failed later, at its first table, with
    "no schema has been selected to create in" (exit 1, the parameter unnamed)."""
    import asyncpg

    try:
        async with pool.acquire(timeout=STATEMENT_TIMEOUT_S) as conn:
            schema = await conn.fetchval("SELECT current_schema()")
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        await pool.close()
        raise StoreUnavailable(
            f"cannot reach the team database {url.display()}: {_why(exc, url)}"
        ) from None
    if schema is None:
        await pool.close()
        path = " ".join(str(url.setting("search_path")).split())[:80]
        raise StoreRefused(
            f"the team database {url.display()}: ?search_path={path} names no schema of "
            f"{url.database} that this user may use (Switchyard's tables are in the first "
            "one it names: check SWITCHYARD_DATABASE_URL's parameters)"
        )


def refused_as_configured(exc: BaseException) -> bool:
    """Whether a failed connection is the URL's doing, not the server's absence: a server
    that answered and refused a setting (``?sslmod=`` sent as a setting it does not know,
    a bad value), an SSL upgrade it does not do, a file the URL names (``sslrootcert``)
    missing, a parameter asyncpg cannot take. Those are a usage error (exit 2) and never
    a fallback to this machine's files: they read "cannot reach" (exit 1), and with the
    fallback on, the team's caps were left for the SQLite ones (a team-store audit). A
    server starting, shutting down or out of connections is away for now, as before."""
    import asyncpg

    if isinstance(exc, asyncpg.PostgresError):
        # the classes that say the request was wrong: a setting or value refused (22, 42),
        # a feature not supported (0A); anything else (a pooler's 08P01 "cannot connect
        # to server", out of memory or disk 53, a system error 58) is a server away for
        # now, where the fallback may serve (a review)
        return str(getattr(exc, "sqlstate", "") or "")[:2] in _REFUSED_CLASSES
    if isinstance(exc, asyncpg.ClientConfigurationError):
        return True
    if isinstance(exc, OSError) and getattr(exc, "filename", None):
        return True  # (a socket that is not there names no file: that server is away)
    return isinstance(exc, ConnectionError) and "rejected SSL upgrade" in str(exc)


#: SQLSTATE classes of a connection the URL's parameters made the server refuse
_REFUSED_CLASSES = frozenset({"22", "42", "0A"})


async def _no_reset(conn: Any) -> None:
    return None


def why(exc: BaseException) -> str:
    """A database failure in words (a timeout's own text is empty)."""
    return _why(exc)


def _why(exc: BaseException, url: DatabaseUrl | None = None) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer (timed out)"
    if isinstance(exc, socket.gaierror):
        return "the host name does not resolve"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is PostgreSQL running there?)"
    text = " ".join(str(exc).split()) or type(exc).__name__
    if url is not None:  # a server's refusal quotes the value it refused: not a password
        for secret in url.secrets():
            text = text.replace(secret, "***")
    return text[:300]


async def refuse_newer(conn: Conn, component: str, known: int, what: str) -> int | None:
    """``component``'s schema version on file (None: none yet); :class:`SchemaTooNew` when
    it is past ``known``, before anything is written. A store whose writes the other one
    must record (the ledger charging a dead reservation, which the audit log tells) asks
    for both: an older Switchyard charged them and could not audit them."""
    import asyncpg

    try:
        found = await conn.fetchval(
            "SELECT version FROM switchyard_schema WHERE component = $1", component
        )
    except asyncpg.UndefinedTableError:
        return None
    if found is not None and int(found) > known:
        raise SchemaTooNew(what, int(found), known)
    return None if found is None else int(found)


async def refuse_team_spelled_otherwise(conn: Conn, team: str, where: str) -> None:
    """:class:`TeamSpelledOtherwise` when ``team`` has no audit chain yet and a team whose
    name differs from it only in case has: a laptop set to "Platform" beside the team's
    "platform" reserved against caps of its own, the team's day cap crossed unseen (team
    names were case-sensitive; an earlier stop's note). A spelling that already has a
    chain is the team's own, even beside another (a database holding both is told once,
    by the newcomer). Read from the audit's chains (one row per instance, small): every
    session opens the audit log with the ledger, and the ledger's open asks too."""
    import asyncpg

    try:
        rows = await conn.fetch(
            "SELECT DISTINCT team FROM audit_chains WHERE lower(team) = lower($1)", team
        )
    except asyncpg.UndefinedTableError:  # no audit log yet: no team either
        return
    known = sorted(str(r["team"]) for r in rows)
    if known and team not in known:
        raise TeamSpelledOtherwise(team, known, where)


async def migrate(conn: Conn, component: str, migrations: Sequence[Migration], what: str) -> None:
    """Bring ``component``'s tables to ``len(migrations)``, in one transaction.

    Tables already current are only read: a role that may read but not create (an
    auditor's, for ``audit verify`` and ``budget``) was refused at the ``CREATE TABLE IF
    NOT EXISTS``, which needs the right to create even when the table is there."""
    known = len(migrations)
    found = await refuse_newer(conn, component, known, what)
    if found == known:
        return
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS switchyard_schema"
            " (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        )
        found = await conn.fetchval(
            "SELECT version FROM switchyard_schema WHERE component = $1", component
        )
        current = int(found or 0)
        if current > known:
            raise SchemaTooNew(what, current, known)
        for version in range(current, known):
            for statement in migrations[version]:
                await conn.execute(statement, timeout=MIGRATION_TIMEOUT_S)
        if current < known:
            await conn.execute(
                "INSERT INTO switchyard_schema (component, version) VALUES ($1, $2)"
                " ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                component,
                known,
            )


def db_errors() -> tuple[type[BaseException], ...]:
    """What a database gone away (or a connection it broke) raises: the team stores answer
    each as "unavailable". asyncpg's ``InternalClientError`` is neither a PostgresError
    nor an InterfaceError: a pooled connection whose backend was terminated mid-statement
    raised it ("cannot switch to state 12; another operation is in progress"), and the
    gateway answered a bare 500 and dropped the client's connection."""
    import asyncpg

    return (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)


#: SQLSTATE classes of a server that is going or gone: a connection exception (08…),
#: shut down by an operator or a crash, or not taking connections yet (57P01-57P03)
_GONE_STATES = ("08", "57P")


def gone(exc: BaseException) -> bool:
    """Whether ``exc`` (one of :func:`db_errors`) says by itself that the database is not
    there: the connection refused, broken or shut down. Not a server that answered with
    an error (a permission revoked, a check, a statement timeout) nor a wait that ran out
    (a pool busy under locks, or a host that may only be slow; :func:`gone_or_silent`
    asks a probe which): those fail the request closed; database_fallback moves a
    session off the team's caps only when the database is gone (a review: any SQL error
    had moved it, a cap refusal turned into a local grant)."""
    import asyncpg

    if isinstance(exc, TimeoutError):
        return False
    # (not every InterfaceError: a query argument of the wrong type is one, this
    # process's fault, and no reason to leave the team's caps)
    if isinstance(exc, OSError | asyncpg.ConnectionDoesNotExistError):
        return True
    if isinstance(exc, asyncpg.InternalClientError):  # a backend terminated mid-statement
        return True
    state = str(getattr(exc, "sqlstate", "") or "")
    return state.startswith(_GONE_STATES)


#: what a probe found: None when the database answered it, else what the probe raised
Probed: TypeAlias = BaseException | None


async def gone_or_silent(exc: BaseException, probe: Callable[[], Awaitable[Probed]]) -> bool:
    """Whether the database is gone after ``exc`` (one of :func:`db_errors`) failed a
    statement mid-run: what database_fallback switches on. A timeout cannot tell a slow
    or locked server from one that stopped answering with its TCP still open (every
    statement timed out, and the fallback never switched: a review), so only then is
    ``probe`` asked (a new connection's ``SELECT 1``, :class:`Probe`): gone when it got
    no answer either, or found the database gone. One that answered, even with a refusal
    (out of connections, or the URL's doing), is a server alive: the request fails
    closed, as for any other error it answered with."""
    if not isinstance(exc, TimeoutError):
        return gone(exc)
    found = await probe()
    if found is None or refused_as_configured(found):
        return False
    return isinstance(found, TimeoutError) or gone(found)


async def probe(url: DatabaseUrl, *, local_only: bool, named: frozenset[HostPort]) -> Probed:
    """Whether the database answers a connection of its own: None when a new connection
    was made within :data:`CONNECT_TIMEOUT_S` (the local_only check and the connection in
    it), else what it raised (TimeoutError past it). Its ``SELECT 1`` is asked too, and a
    wait there is an answer: whatever took the connection's start-up and password is
    there and busy (a pooler such as PgBouncer queues a query behind a lock that holds
    every server connection; timed as one with the connection, the probe had called
    that database gone and moved the session off the team's caps: a review)."""
    import asyncpg

    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            where = await _where(url, local_only=local_only, named=named)
            conn = await asyncpg.connect(dsn=url.raw, timeout=CONNECT_TIMEOUT_S, **where)
    except Exception as exc:  # (any: what it says is for gone_or_silent to judge)
        return exc
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await conn.execute("SELECT 1")
    except TimeoutError:
        return None  # (there, and busy)
    except Exception as exc:
        return exc
    finally:
        conn.terminate()  # (no goodbye: a silent server would never read it)
    return None


class Probe:
    """:func:`probe` of one database, one at a time: the requests that timed out together
    share its answer (a pool's worth of timeouts is one connection tried, not one each)."""

    def __init__(self, url: DatabaseUrl, *, local_only: bool, named: frozenset[HostPort]) -> None:
        self._url, self._local_only, self._named = url, local_only, named
        self._asking: asyncio.Task[Probed] | None = None

    async def __call__(self) -> Probed:
        if self._asking is None or self._asking.done():
            self._asking = asyncio.ensure_future(
                probe(self._url, local_only=self._local_only, named=self._named)
            )
        # (one waiter cancelled does not cancel the others' answer)
        return await asyncio.shield(self._asking)


def this_host() -> str:
    return socket.gethostname() or "unknown"
