"""The team audit log: one hash chain per Switchyard instance in a shared PostgreSQL.

Each instance writes its own chain (:mod:`app.audit.pg_schema`), so machines never wait
on each other's appends; an append is one call of ``sy_audit_append``, which takes the
chain's advisory lock and extends it only from the head this instance last saw (another
writer on the same chain makes it re-read the head and hash the line again). The lines
are the same canonical text as in the SQLite file, checked by the same code.

The instance reads its own chain through the usual methods (the judge's evidence, an
export); the team reads everyone's: :meth:`team_tail` with each line's user and host,
:meth:`verify_chains` over every chain or one.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TextIO, TypeVar

import asyncpg
from pydantic import BaseModel, ConfigDict

from app.audit.base import AuditBase
from app.audit.canonical import (
    GENESIS_HASH,
    ChainChecker,
    Problem,
    VerifyReport,
    canonical_json,
    check_row,
)
from app.audit.pg_schema import COMPONENT, MIGRATIONS
from app.audit.prepared import PreparedLine
from app.audit.types import Appended, AuditLine
from app.bus import Bus
from app.clock import Clock, SystemClock, iso
from app.commit_point import finish_then_cancel
from app.errors import AuditTamperError, SwitchyardError, UsageError
from app.hosts import HostPort
from app.opener import Opener
from app.store import postgres
from app.store.errors import StoreUnavailable
from app.store.postgres import (
    Conn,
    connect_pool,
    db_errors,
    migrate,
    refuse_team_spelled_otherwise,
    this_host,
)
from app.store.url import DatabaseUrl, parse_database_url

T = TypeVar("T")
_DB_ERRORS = db_errors()


class _Unwritten(Exception):
    """Internal: writing the output failed while rows were read (not in ``_DB_ERRORS``)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error)
        self.error = error


#: appends that found the head moved before giving up (only a second writer moves it)
MAX_RACES = 100


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ChainInfo(_Frozen):
    chain: str
    team: str
    user: str
    host: str
    started: str
    lines: int


class ChainMatch(_Frozen):
    """A chain holding lines of a session or run, and how many (:meth:`holding`)."""

    chain: str
    user: str
    host: str
    lines: int


class TeamLine(_Frozen):
    """A line of the team audit, with the chain it is in and who wrote that chain."""

    chain: str
    user: str
    host: str
    line: AuditLine


class ChainReport(_Frozen):
    chain: str
    user: str
    host: str
    report: VerifyReport


def chain_id(team: str, user: str, host: str, started: str, nonce: str) -> str:
    """A chain's id: a hash of its owner record (so the record cannot be edited unseen)."""
    owner = {"team": team, "user": user, "host": host, "started": started, "nonce": nonce}
    return hashlib.sha256(canonical_json(owner).encode("utf-8")).hexdigest()[:32]


def another_teams(owner: Any, team: str) -> bool:
    """``owner`` (an audit_chains row) is an intact record of a chain of another team than
    ``team``: not this team's to read. A record whose id no longer hashes from it was
    edited, and stays in view, so that verify reports it (its team edited included)."""
    made = chain_id(
        owner["team"], owner["user_name"], owner["host"], owner["started"], owner["nonce"]
    )
    return bool(owner["team"] != team and made == owner["chain"])


class PgAuditLog(AuditBase):
    """The team's audit log; this instance's chain is :attr:`chain`."""

    shared = True

    def __init__(
        self,
        pool: asyncpg.Pool,
        url: DatabaseUrl,
        *,
        clock: Clock,
        bus: Bus | None,
        policy_version: str | None,
        team: str,
        user: str,
        host: str,
        owns_pool: bool,
        probe: postgres.Probe,
    ) -> None:
        super().__init__(clock=clock, bus=bus, policy_version=policy_version)
        self._pool = pool
        self.url = url
        #: asked, after a statement timed out, whether the database is there at all
        self._probe = probe
        self.team, self.user, self.host = team, user, host
        self._owns_pool = owns_pool
        self.started = iso(clock.now())
        self._nonce = uuid.uuid4().hex
        self.chain = chain_id(team, user, host, self.started, self._nonce)
        self._head: tuple[int, str] = (0, GENESIS_HASH)
        self._registered = False

    @property
    def where(self) -> str:
        return self.url.display()

    @classmethod
    def open(
        cls,
        url: DatabaseUrl | str,
        *,
        team: str,
        user: str,
        host: str | None = None,
        clock: Clock | None = None,
        bus: Bus | None = None,
        policy_version: str | None = None,
        local_only: bool = False,
        named: frozenset[HostPort] = frozenset(),
        pool: asyncpg.Pool | None = None,
        chain: str | None = None,
    ) -> Opener[PgAuditLog]:
        """A new chain for this instance, or (``chain``) an existing one to read."""
        parsed = parse_database_url(url) if isinstance(url, str) else url
        kw: dict[str, Any] = dict(team=team, user=user, host=host or this_host())
        return Opener(
            cls._open(
                parsed,
                clock or SystemClock(),
                bus,
                policy_version,
                local_only,
                named,
                pool,
                chain,
                kw,
            )
        )

    @classmethod
    async def _open(
        cls,
        url: DatabaseUrl,
        clock: Clock,
        bus: Bus | None,
        policy_version: str | None,
        local_only: bool,
        named: frozenset[HostPort],
        pool: asyncpg.Pool | None,
        chain: str | None,
        kw: dict[str, Any],
    ) -> PgAuditLog:
        owns = pool is None
        if pool is None:
            pool = await connect_pool(url, local_only=local_only, named=named)
        try:
            async with pool.acquire(timeout=postgres.STATEMENT_TIMEOUT_S) as conn:
                await migrate(conn, COMPONENT, MIGRATIONS, f"team audit log {url.display()}")
                await refuse_team_spelled_otherwise(conn, kw["team"], url.display())
                row = None
                if chain is not None:
                    row = await conn.fetchrow("SELECT * FROM audit_chains WHERE chain = $1", chain)
        except _DB_ERRORS as exc:
            if owns:
                await pool.close()
            raise StoreUnavailable(f"team audit log {url.display()}: {exc}") from None
        except BaseException:
            if owns:
                await pool.close()
            raise
        probe = postgres.Probe(url, local_only=local_only, named=named)
        log = cls(
            pool,
            url,
            clock=clock,
            bus=bus,
            policy_version=policy_version,
            owns_pool=owns,
            probe=probe,
            **kw,
        )
        if chain is not None:
            if row is None or another_teams(row, kw["team"]):
                await log._close_store()
                raise UsageError(
                    f"no audit chain {chain} of team {kw['team']} in {url.display()}"
                    " (see `switchyard audit chains`)"
                )
            log.chain, log.team, log.user, log.host = (
                chain,
                row["team"],
                row["user_name"],
                row["host"],
            )
            log.started, log._nonce = row["started"], row["nonce"]
            log._head, log._registered = (int(row["head_seq"]), str(row["head_hash"])), True
        return log

    async def _close_store(self) -> None:
        if self._owns_pool:
            await self._pool.close()

    async def _with(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """``fn`` on a pooled connection, to its end: a cancel that comes meanwhile is
        raised once it has ended (cut mid-query, a line may stand or not, and a caller
        could not tell)."""
        return await finish_then_cancel(self._with_now(fn))

    async def _with_now(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        try:
            async with self._pool.acquire(timeout=postgres.STATEMENT_TIMEOUT_S) as conn:
                return await fn(conn)
        except _DB_ERRORS as exc:
            # StoreUnavailable when the database is gone: what database_fallback switches
            # on (app.router.store_fallback); an error it answered, or a timeout of a
            # database that still answers a probe (slow, locked), fails closed
            gone = await postgres.gone_or_silent(exc, self._probe)
            away = StoreUnavailable if gone else SwitchyardError
            raise away(f"team audit log {self.where} unavailable: {postgres.why(exc)}") from None

    # ── write ────────────────────────────────────────────────────────────────────────────

    async def _insert(self, lines: list[PreparedLine]) -> list[Appended]:
        async def appended(conn: Conn) -> list[Appended]:
            if len(lines) == 1:
                return [await self._append(conn, lines[0])]
            async with conn.transaction():  # several lines: all of them or none
                return [await self._append(conn, prepared) for prepared in lines]

        return await self._with(appended)

    async def _append(self, conn: Conn, prepared: PreparedLine) -> Appended:
        if not self._registered:
            await conn.execute(
                "INSERT INTO audit_chains (chain, team, user_name, host, started, nonce)"
                " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (chain) DO NOTHING",
                self.chain,
                self.team,
                self.user,
                self.host,
                self.started,
                self._nonce,
            )
            self._registered = True
        for _ in range(MAX_RACES):
            seq, prev = self._head
            appended = prepared.chain(seq + 1, prev, iso(self._clock.now()))
            line = appended.line  # its index columns
            row = await conn.fetchrow(
                "SELECT * FROM sy_audit_append($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                self.chain,
                line.seq,
                prev,
                line.hash,
                line.ts,
                line.session,
                line.run,
                line.kind,
                appended.text,
            )
            assert row is not None
            self._head = (int(row["head_seq"]), str(row["head_hash"]))
            if row["ok"]:
                return appended
        raise SwitchyardError(f"audit chain {self.chain}: the head kept moving; not appended")

    # ── this instance's chain ────────────────────────────────────────────────────────────

    async def last_seq(self) -> int:
        found = await self._with(
            lambda c: c.fetchval("SELECT head_seq FROM audit_chains WHERE chain = $1", self.chain)
        )
        return int(found or 0)

    async def tail(
        self, n: int = 20, *, session: str | None = None, run: str | None = None
    ) -> list[AuditLine]:
        where, params = self._where(session, run, 0)
        rows = await self._with(
            lambda c: c.fetch(
                f"SELECT seq, line FROM audit_lines WHERE {where} ORDER BY seq DESC"
                f" LIMIT ${len(params) + 1}",
                *params,
                max(n, 0),
            )
        )
        return [_to_line(r["seq"], r["line"]) for r in reversed(rows)]

    async def lines(
        self,
        session: str | None = None,
        run: str | None = None,
        since_seq: int = 0,
        *,
        limit: int | None = None,
    ) -> list[AuditLine]:
        where, params = self._where(session, run, since_seq)
        rows = await self._with(
            lambda c: c.fetch(
                f"SELECT seq, line FROM audit_lines WHERE {where} ORDER BY seq"
                f" LIMIT ${len(params) + 1}",
                *params,
                limit,
            )
        )
        return [_to_line(r["seq"], r["line"]) for r in rows]

    async def run_lines(self, run: str) -> list[AuditLine]:
        rows = await self._with(
            lambda c: c.fetch(
                "SELECT l.seq, l.line FROM audit_lines l JOIN audit_chains c ON c.chain = l.chain"
                " WHERE l.run = $1 AND c.team = $2 ORDER BY l.chain, l.seq",
                run,
                self.team,
            )
        )
        return [_to_line(r["seq"], r["line"]) for r in rows]

    def _where(
        self, session: str | None, run: str | None, since_seq: int
    ) -> tuple[str, tuple[Any, ...]]:
        clauses, params = ["chain = $1", "seq > $2"], [self.chain, since_seq]
        for column, value in (("session", session), ("run", run)):
            if value is not None:
                params.append(value)
                clauses.append(f"{column} = ${len(params)}")
        return " AND ".join(clauses), tuple(params)

    async def _write_jsonl(
        self, out: TextIO, session: str | None, run: str | None, from_seq: int
    ) -> int:
        where, params = self._where(session, run, max(from_seq, 1) - 1)

        async def write(conn: Conn) -> int:
            count = 0
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                sql = f"SELECT seq, line FROM audit_lines WHERE {where} ORDER BY seq"
                async for rec in conn.cursor(sql, *params):
                    _to_line(rec["seq"], rec["line"])  # a line that is none is refused
                    try:
                        out.write(rec["line"] + "\n")
                    except OSError as exc:  # the output's failure, not the database's
                        raise _Unwritten(exc) from exc
                    count += 1
            return count

        try:
            return await self._with(write)
        except _Unwritten as failed:
            # a reader gone away (``| head``) was "team audit log … unavailable: Broken pipe"
            raise failed.error from None

    async def verify(self, *, from_seq: int = 1) -> VerifyReport:
        """This instance's chain, checked as ``audit verify`` checks every chain."""
        reports = await self.verify_chains(self.chain, from_seq=from_seq)
        return reports[0].report if reports else ChainChecker().report()

    async def first_of(
        self, *, since: str | None = None, session: str | None = None, run: str | None = None
    ) -> tuple[int, str] | None:
        clauses, params = ["chain = $1"], [self.chain]
        # ts in byte order, as the SQLite file and the simulation compare it (a locale's
        # collation may not): the (chain, ts "C") index of schema v4
        given = (('ts COLLATE "C" >=', since), ("session =", session), ("run =", run))
        for clause, value in given:
            if value is not None:
                params.append(value)
                clauses.append(f"{clause} ${len(params)}")
        sql = (
            f'SELECT min(seq) AS seq, min(ts COLLATE "C") AS ts FROM audit_lines'
            f" WHERE {' AND '.join(clauses)}"
        )
        row = await self._with(lambda c: c.fetchrow(sql, *params))
        return None if row is None or row["seq"] is None else (int(row["seq"]), row["ts"])

    async def first_of_sessions_from(self, seq: int) -> int | None:
        sql = (
            "SELECT min((SELECT min(b.seq) FROM audit_lines b"
            "  WHERE b.session = a.session AND b.chain = $1))"
            " FROM (SELECT DISTINCT session FROM audit_lines WHERE chain = $1 AND seq >= $2) a"
        )
        found = await self._with(lambda c: c.fetchval(sql, self.chain, seq))
        return None if found is None else int(found)

    async def first_unlike_before(self, seq: int) -> int | None:
        # each text read as JSON once (OFFSET 0 keeps the planner from copying the cast
        # into each test); a text that is no JSON fails the cast, and is then found by a
        # pass in Python
        sql = (
            "SELECT min(seq) FROM (SELECT seq, ts, session, run, line::jsonb AS j"
            " FROM audit_lines WHERE chain = $1 AND seq < $2 OFFSET 0) x"
            " WHERE jsonb_typeof(j) <> 'object' OR j ->> 'ts' IS DISTINCT FROM ts"
            " OR j ->> 'session' IS DISTINCT FROM session OR j ->> 'run' IS DISTINCT FROM run"
        )

        async def check(conn: Conn) -> int | None:
            try:
                found = await conn.fetchval(sql, self.chain, seq)
            except asyncpg.DataError:  # a text that is no JSON (a tampered chain only)
                return await _first_no_json(conn, self.chain, seq)
            return None if found is None else int(found)

        return await self._with(check)

    async def received(self, seqs: Sequence[int]) -> dict[int, datetime]:
        """When the database received these lines of this chain, by its own clock (the
        clock the team ledger's rows are stamped by; a line's ``ts`` is its laptop's). A
        line from before audit schema v2 has no such time: left out."""
        rows = await self._with(
            lambda c: c.fetch(
                "SELECT seq, received FROM audit_lines WHERE chain = $1"
                " AND seq = ANY ($2::bigint[]) AND received IS NOT NULL",
                self.chain,
                list(seqs),
            )
        )
        return {int(r["seq"]): r["received"] for r in rows}

    # ── the team ─────────────────────────────────────────────────────────────────────────

    async def chains(self) -> list[ChainInfo]:
        rows = await self._with(
            lambda c: c.fetch(
                "SELECT * FROM audit_chains WHERE team = $1 ORDER BY started", self.team
            )
        )
        return [
            ChainInfo(
                chain=r["chain"],
                team=r["team"],
                user=r["user_name"],
                host=r["host"],
                started=r["started"],
                lines=int(r["head_seq"]),
            )
            for r in rows
        ]

    async def holding(
        self, *, session: str | None = None, run: str | None = None
    ) -> list[ChainMatch]:
        """The team's chains that hold lines of ``session`` (and ``run``, each when given),
        with how many, oldest chain first: an export by session finds its chain (on the
        (session, chain, seq) and (run, chain, seq) indexes)."""
        clauses: list[str] = ["c.team = $1"]
        params: list[Any] = [self.team]
        for column, value in (("l.session", session), ("l.run", run)):
            if value is not None:
                params.append(value)
                clauses.append(f"{column} = ${len(params)}")
        sql = (
            "SELECT l.chain, c.user_name, c.host, count(*) AS lines FROM audit_lines l"
            f" JOIN audit_chains c ON c.chain = l.chain WHERE {' AND '.join(clauses)}"
            " GROUP BY l.chain, c.user_name, c.host, c.started ORDER BY c.started, l.chain"
        )
        rows = await self._with(lambda c: c.fetch(sql, *params))
        return [
            ChainMatch(chain=r["chain"], user=r["user_name"], host=r["host"], lines=r["lines"])
            for r in rows
        ]

    async def team_tail(
        self,
        n: int = 20,
        *,
        user: str | None = None,
        session: str | None = None,
        run: str | None = None,
    ) -> list[TeamLine]:
        """The team's newest ``n`` lines by when the database received them (a laptop's
        clock ahead or behind orders nothing), ``user``: one user's; oldest first."""
        clauses: list[str] = ["c.team = $1"]
        params: list[Any] = [self.team]
        for column, value in (("c.user_name", user), ("l.session", session), ("l.run", run)):
            if value is not None:
                params.append(value)
                clauses.append(f"{column} = ${len(params)}")
        params.append(max(n, 0))
        sql = (
            "SELECT l.chain, l.seq, l.line, c.user_name, c.host FROM audit_lines l"
            f" JOIN audit_chains c ON c.chain = l.chain WHERE {' AND '.join(clauses)}"
            f" ORDER BY l.received DESC NULLS LAST, l.ts DESC, l.chain DESC, l.seq DESC"
            f" LIMIT ${len(params)}"
        )
        rows = await self._with(lambda c: c.fetch(sql, *params))
        return [_team_line(r) for r in rows][::-1]

    async def team_heads(self) -> dict[str, int]:
        """Each of the team's chains and the seq of its newest line (a follow's start)."""
        rows = await self._with(
            lambda c: c.fetch("SELECT chain, head_seq FROM audit_chains WHERE team = $1", self.team)
        )
        return {str(r["chain"]): int(r["head_seq"]) for r in rows}

    async def team_after(
        self,
        seen: Mapping[str, int],
        n: int = 500,
        *,
        user: str | None = None,
        session: str | None = None,
        run: str | None = None,
    ) -> tuple[list[TeamLine], dict[str, int]]:
        """The team's lines past ``seen`` (chain → the seq last read; a chain it does not
        name: from its first line) that match the filters, in time order, and each chain's
        newest seq read (``n`` lines a chain at most).

        A follow keeps a place per chain: each chain's lines are written in seq order, one
        writer at a time, each committed before the next. A place by time stamp, (ts,
        chain, seq), missed lines: a laptop whose clock ran behind wrote lines "before"
        the place, and a line stamped before a poll but committed after it was never shown.
        Each chain is read on its own (chain, seq) index, every line past its place (the
        session and run filters then), so a place moves past lines the filters leave out:
        one join over all the team's lines read the whole table each poll (177 ms at 600k
        lines, a review)."""
        params: list[Any] = [self.team, list(seen), list(seen.values()), max(n, 0)]
        owner = ""
        if user is not None:
            params.append(user)
            owner = f" AND c.user_name = ${len(params)}"
        sql = (
            "SELECT l.chain, l.seq, l.line, l.session, l.run, c.user_name, c.host"
            " FROM audit_chains c CROSS JOIN LATERAL ("
            " SELECT l.chain, l.seq, l.line, l.session, l.run FROM audit_lines l"
            " WHERE l.chain = c.chain AND l.seq > COALESCE((SELECT s.seq FROM"
            " unnest($2::text[], $3::bigint[]) AS s(chain, seq) WHERE s.chain = c.chain), 0)"
            " ORDER BY l.seq LIMIT $4) l"
            f" WHERE c.team = $1{owner}"
        )
        rows = await self._with(lambda c: c.fetch(sql, *params))
        read: dict[str, int] = {}
        found = []
        for r in rows:
            read[r["chain"]] = max(read.get(r["chain"], 0), int(r["seq"]))
            if (session is None or r["session"] == session) and (run is None or r["run"] == run):
                found.append(_team_line(r))
        # shown in time order; each chain's own order is its seq's
        return sorted(found, key=lambda t: (t.line.ts, t.chain, t.line.seq)), read

    async def verify_chains(
        self, chain: str | None = None, *, from_seq: int = 1
    ) -> list[ChainReport]:
        """Every chain of the team (or one): lines, links, index columns, head, owner;
        from ``from_seq`` to each one's head."""

        async def run(conn: Conn) -> list[ChainReport]:
            out: list[ChainReport] = []
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                # every owner record, not this team's by its column: a record whose team
                # was edited must stay in view to be reported (another_teams keeps it),
                # and a WHERE on that column hid it, the whole chain with it (an audit)
                sql, args = "SELECT * FROM audit_chains", []
                if chain is not None:
                    sql, args = "SELECT * FROM audit_chains WHERE chain = $1", [chain]
                for owner in await conn.fetch(sql + " ORDER BY started, chain", *args):
                    if another_teams(owner, self.team):
                        continue
                    report = await _verify_chain(conn, owner, from_seq)
                    out.append(
                        ChainReport(
                            chain=owner["chain"],
                            user=owner["user_name"],
                            host=owner["host"],
                            report=report,
                        )
                    )
            return out

        return await self._with(run)


async def _verify_chain(conn: Conn, owner: asyncpg.Record, from_seq: int = 1) -> VerifyReport:
    checker = ChainChecker(chain=True, start=max(from_seq, 1))
    try:
        made = chain_id(
            owner["team"], owner["user_name"], owner["host"], owner["started"], owner["nonce"]
        )
        if made != owner["chain"]:
            raise Problem(None, "its owner record (team, user, host, start) was edited")
        sql = (
            "SELECT seq, ts, hash, session, run, kind, line FROM audit_lines WHERE chain = $1"
            " AND seq > $2 ORDER BY seq"
        )
        async for r in conn.cursor(sql, owner["chain"], checker.last_seq):
            check_row(
                checker,
                int(r["seq"]),
                r["ts"],
                r["hash"],
                r["session"],
                r["run"],
                r["kind"],
                r["line"],
            )
        head_seq = int(owner["head_seq"])
        checker.finish(head_hash=owner["head_hash"] if head_seq else None, head_seq=head_seq)
    except Problem as problem:
        return checker.report(problem)
    return checker.report()


async def _first_no_json(conn: Conn, chain: str, seq: int) -> int | None:
    """The first line of ``chain`` before ``seq`` whose text is no JSON."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        sql = "SELECT seq, line FROM audit_lines WHERE chain = $1 AND seq < $2 ORDER BY seq"
        async for rec in conn.cursor(sql, chain, seq):
            try:
                json.loads(rec["line"])
            except ValueError:
                return int(rec["seq"])
    return None


def _team_line(r: Any) -> TeamLine:
    return TeamLine(
        chain=r["chain"], user=r["user_name"], host=r["host"], line=_to_line(r["seq"], r["line"])
    )


def _to_line(seq: int, text: str) -> AuditLine:
    try:
        return AuditLine.model_validate_json(text)
    except ValueError:
        raise AuditTamperError(
            f"audit line {seq} is unreadable; run `switchyard audit verify`"
        ) from None
