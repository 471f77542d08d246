"""The audit log on both stores, and the team audit's own: a chain per instance, appends
serialised per chain, ``audit verify`` of every chain or one (tampering found in a line,
a link, the order, the end, or who wrote the chain), ``audit tail --team`` with user and
host, and the bad inputs (a malformed URL, an unreachable database, local_only)."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from app.audit import verify_lines
from app.audit.canonical import canonical_json, line_hash
from app.config import load_settings
from app.store.errors import SchemaTooNew
from tests.pg import PgServer, StoreUnderTest
from tests.reliability.kit import closed_port, run_cli

Tamper = Callable[[asyncpg.Connection, str], Awaitable[None]]


async def _write(log: object, n: int, session: str = "s1") -> None:
    for i in range(n):
        await log.append(  # type: ignore[attr-defined]
            "route", session=session, run="r1" if i % 2 else None, detail=f"line {i}"
        )


async def test_appends_verify_and_export_on_both_stores(
    any_store: StoreUnderTest, tmp_path: Path
) -> None:
    async with await any_store.audit() as log:
        await asyncio.gather(*(_write(log, 25, f"s{k}") for k in range(4)))
        report = await log.verify()
        assert report.ok and report.lines_checked == 100
        assert await log.last_seq() == 100
        tail = await log.tail(5, session="s2")
        assert [line.session for line in tail] == ["s2"] * 5
        out = tmp_path / "export.jsonl"
        assert await log.export_jsonl(out) == 100
        assert verify_lines(out.read_text().splitlines(), head_hash=report.head_hash).ok
        assert await log.export_jsonl(out, run="r1") == 48
        assert verify_lines(out.read_text().splitlines(), chain=False).ok


def test_audit_verify_json_is_one_shape_on_both_stores(
    any_store: StoreUnderTest, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """It was one chain's report on a machine's SQLite log and ``ok`` plus ``chains`` on
    the team store: a script had to know which store answered. Both stores' output,
    intact and tampered, is held to one model (every key there, no other)."""
    from app.audit.log import AuditLog
    from app.audit.pg_log import PgAuditLog
    from app.audit.verify_result import VerifyResult

    shared = any_store.shared
    users = ("alice", "bob") if shared else ("alice",)
    if shared:
        monkeypatch.setenv("SWITCHYARD_DATABASE_URL", any_store.location)
        monkeypatch.setenv("SWITCHYARD_TEAM", any_store.team)

    async def build() -> list[str]:
        chains = []
        for user in users:
            if shared:
                team = await PgAuditLog.open(
                    any_store.location, team=any_store.team, user=user, host="h"
                )
                async with team:
                    await _write(team, 4)
                    chains.append(team.chain)
            else:
                async with AuditLog.open(load_settings().audit_db) as own:
                    await _write(own, 4)
        return chains

    def verify(*argv: str) -> tuple[int, VerifyResult, str]:
        rc, out, err = run_cli(["audit", "verify", "--json", *argv], capsys)
        return rc, VerifyResult.model_validate_json(out, strict=True), err

    chains = asyncio.run(build())
    rc, result, _ = verify()
    assert rc == 0 and result.ok and result.store == ("postgresql" if shared else "sqlite")
    assert result.first_bad_seq is None and result.problem is None
    assert result.lines_checked == 4 * len(users) == sum(c.lines_checked for c in result.chains)
    assert [c.chain for c in result.chains] == (chains if shared else [None])
    assert [c.user for c in result.chains] == (list(users) if shared else [None])
    # one head where one chain was checked; several have none
    assert result.head_hash == (None if shared else result.chains[0].head_hash)
    if shared:
        rc, one, _ = verify("--chain", chains[1])
        assert rc == 0 and one.head_hash == one.chains[0].head_hash is not None

    forge = "UPDATE audit_lines SET line = replace(line, 'line 2', 'forged') WHERE seq = 3"

    async def tamper() -> None:
        if shared:
            conn = await asyncpg.connect(any_store.location)
            try:
                guard = "audit_lines_append_only"
                await conn.execute(f"ALTER TABLE audit_lines DISABLE TRIGGER {guard}")
                await conn.execute(forge + " AND chain = $1", chains[0])
            finally:
                await conn.close()
            return
        con = sqlite3.connect(load_settings().audit_db)
        try:
            con.execute("DROP TRIGGER audit_lines_no_update")
            con.execute(forge)
            con.commit()
        finally:
            con.close()

    asyncio.run(tamper())
    rc, result, err = verify()
    assert rc == 1 and not result.ok and len(err.strip().splitlines()) == 1
    bad = [c for c in result.chains if not c.ok]
    assert len(bad) == 1 and bad[0].user == ("alice" if shared else None)
    assert result.first_bad_seq == bad[0].first_bad_seq == 3
    assert result.problem == bad[0].problem is not None and result.problem in err


class _ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


async def test_an_export_whose_reader_went_away_is_not_the_stores_failure(
    any_store: StoreUnderTest,
) -> None:
    """``audit export | head`` on the team store said "team audit log … unavailable:
    Broken pipe" and ended 1; the output's own error goes through as it is."""
    async with await any_store.audit() as log:
        await _write(log, 3, "s1")
        with pytest.raises(BrokenPipeError):
            await log.export_jsonl(_ClosedPipe())


async def test_two_instances_append_at_once_each_chain_verifies(pg_url: str) -> None:
    from app.audit.pg_log import PgAuditLog

    a = await PgAuditLog.open(pg_url, team="t", user="alice", host="box-a")
    b = await PgAuditLog.open(pg_url, team="t", user="bob", host="box-b")
    # a third writer on alice's chain: the advisory lock and the head check serialise it
    a2 = await PgAuditLog.open(pg_url, team="t", user="alice", host="box-a")
    try:
        await a.append("run", session="sa", detail="start")
        a2.chain, a2._registered = a.chain, True  # the same chain from another connection
        a2._head = (1, (await a.tail(1))[0].hash)
        await asyncio.gather(_write(a, 100, "sa"), _write(b, 100, "sb"), _write(a2, 50, "sa"))
        reports = await a.verify_chains()
        assert [(r.user, r.report.ok, r.report.lines_checked) for r in reports] == [
            ("alice", True, 151),
            ("bob", True, 100),
        ]
        team = await b.team_tail(1000)
        assert len(team) == 251
        assert {(t.user, t.host) for t in team} == {("alice", "box-a"), ("bob", "box-b")}
        # in the order the database received them: each chain's lines in its own order
        for user in ("alice", "bob"):
            seqs = [t.line.seq for t in team if t.user == user]
            assert seqs == sorted(seqs)
    finally:
        for log in (a, b, a2):
            await log.close()


async def test_a_laptop_clock_ahead_does_not_hide_the_teams_newer_lines(pg_url: str) -> None:
    """``audit tail --team`` ordered by each line's own stamp: a laptop a day ahead put
    its lines after everyone's newer ones, and a short tail showed only them (a team-store
    audit). The database's time of arrival orders them."""
    from datetime import timedelta

    from app.audit.pg_log import PgAuditLog
    from app.clock import ManualClock, SystemClock

    ahead = ManualClock(SystemClock().now() + timedelta(days=1))
    a = await PgAuditLog.open(pg_url, team="t", user="ahead", host="box-f", clock=ahead)
    b = await PgAuditLog.open(pg_url, team="t", user="normal", host="box-n")
    try:
        await _write(a, 4, "sa")
        await _write(b, 2, "sb")  # written after: the newest
        newest = await b.team_tail(2)
        assert [t.user for t in newest] == ["normal", "normal"]
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_lines SET kind = 'x'",
        "DELETE FROM audit_lines",
        "TRUNCATE audit_lines",
        "TRUNCATE audit_chains CASCADE",
    ],
)
async def test_the_team_audits_lines_cannot_be_changed_deleted_or_truncated(
    pg_url: str, statement: str
) -> None:
    """The row trigger refused UPDATE and DELETE, but TRUNCATE fires no row trigger:
    ``TRUNCATE audit_lines`` (or the chains', with CASCADE) emptied the log, and ``audit
    verify`` then found nothing to fail. Every way is refused, and the lines stay."""
    from app.audit.pg_log import PgAuditLog

    log = await PgAuditLog.open(pg_url, team="t", user="u", host="h")
    try:
        await _write(log, 3)
    finally:
        await log.close()
    conn = await asyncpg.connect(pg_url)
    try:
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute(statement)
        assert await conn.fetchval("SELECT count(*) FROM audit_lines") == 3
        assert await conn.fetchval("SELECT count(*) FROM audit_chains") == 1
    finally:
        await conn.close()


async def _edit(conn: asyncpg.Connection, chain: str, seq: int = 3, rehash: bool = False) -> None:
    text = await conn.fetchval(
        "SELECT line FROM audit_lines WHERE chain = $1 AND seq = $2", chain, seq
    )
    data = json.loads(text)
    data["detail"] = "nothing to see here"
    if rehash:
        data["hash"] = line_hash(data)
    await conn.execute(
        "UPDATE audit_lines SET line = $1, hash = $2 WHERE chain = $3 AND seq = $4",
        canonical_json(data),
        data["hash"],
        chain,
        seq,
    )


async def _delete(conn: asyncpg.Connection, chain: str) -> None:
    await conn.execute("DELETE FROM audit_lines WHERE chain = $1 AND seq = 4", chain)


async def _swap(conn: asyncpg.Connection, chain: str) -> None:
    for src, dst in ((2, -2), (5, 2), (-2, 5)):
        await conn.execute(
            "UPDATE audit_lines SET seq = $1 WHERE chain = $2 AND seq = $3", dst, chain, src
        )


async def _cut(conn: asyncpg.Connection, chain: str) -> None:
    await conn.execute("DELETE FROM audit_lines WHERE chain = $1 AND seq >= 7", chain)


async def _owner(conn: asyncpg.Connection, chain: str) -> None:
    await conn.execute("UPDATE audit_chains SET user_name = 'mallory' WHERE chain = $1", chain)


async def _team(conn: asyncpg.Connection, chain: str) -> None:
    # the team's verify selected its chains by this column: the chain vanished from it
    await conn.execute("UPDATE audit_chains SET team = 'other' WHERE chain = $1", chain)


async def _time(conn: asyncpg.Connection, chain: str) -> None:
    # the team's tail pages by ts: a line moved to 1970 dropped out of it, and verified
    await conn.execute(
        "UPDATE audit_lines SET ts = '1970-01-01T00:00:00.000Z' WHERE chain = $1 AND seq = 5",
        chain,
    )


async def _forge_first_keys(conn: asyncpg.Connection, chain: str) -> None:
    # the audit's forgery, as a superuser with the triggers bypassed: fields put before
    # the line's own, which Python's reader (the last of a key given twice) never saw
    await conn.execute("SET session_replication_role = replica")
    await conn.execute(
        """UPDATE audit_lines SET line = '{"detail":"FORGED: 0 in / 0 out, $0.00","""
        """"values":{"cost_usd":0},' || substr(line, 2) WHERE chain = $1 AND seq = 5""",
        chain,
    )


TAMPERS: list[tuple[str, Tamper, int | None]] = [
    ("edit", _edit, 3),
    ("forged-first-keys", _forge_first_keys, 5),
    ("edit-and-rehash", lambda c, ch: _edit(c, ch, rehash=True), 4),
    ("delete", _delete, 4),
    ("reorder", _swap, 2),
    ("cut-the-end", _cut, 7),
    ("owner", _owner, None),
    ("owner-team", _team, None),
    ("time-column", _time, 5),
]


@pytest.mark.parametrize(("name", "tamper", "bad_seq"), TAMPERS, ids=[t[0] for t in TAMPERS])
def test_tampering_with_the_team_audit_makes_audit_verify_exit_1(
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    tamper: Tamper,
    bad_seq: int | None,
) -> None:
    from app.audit.pg_log import PgAuditLog

    monkeypatch.setenv("SWITCHYARD_DATABASE_URL", pg_url)
    monkeypatch.setenv("SWITCHYARD_TEAM", "default")

    async def build() -> tuple[str, str]:
        chains = []
        for user in ("alice", "bob"):
            async with await PgAuditLog.open(pg_url, team="default", user=user, host="h") as log:
                await _write(log, 8)
                chains.append(log.chain)
        return chains[0], chains[1]

    alice, bob = asyncio.run(build())
    assert run_cli(["audit", "verify"], capsys)[0] == 0

    async def change() -> None:
        conn = await asyncpg.connect(pg_url)
        try:
            await conn.execute("ALTER TABLE audit_lines DISABLE TRIGGER audit_lines_append_only")
            await tamper(conn, alice)
        finally:
            await conn.close()

    asyncio.run(change())
    rc, out, err = run_cli(["audit", "verify"], capsys)
    assert rc == 1, out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"switchyard: audit chain {alice[:8]}")
    if bad_seq is not None:
        assert str(bad_seq) in lines[0]
    else:
        assert "owner record" in lines[0]
    rc, out, _ = run_cli(["audit", "verify", "--chain", bob], capsys)  # the other chain is fine
    assert rc == 0 and "1 chain, 8 lines" in out
    # an export (the docs' outside anchor) of the broken chain says so, and exits 1
    rc, out, err = run_cli(["audit", "export", "--chain", alice], capsys)
    assert rc == 1 and "the exported chain does not verify" in err, (rc, err)
    rc, out, err = run_cli(["audit", "export", "--chain", bob], capsys)
    assert rc == 0 and len(out.splitlines()) == 8 and err == ""
    rc, out, _ = run_cli(["audit", "verify", "--json"], capsys)
    data = json.loads(out)
    assert rc == 1 and data["ok"] is False
    assert {c["user"]: c["ok"] for c in data["chains"]} == {
        "mallory" if name == "owner" else "alice": False,
        "bob": True,
    }


def test_audit_tail_team_shows_every_users_lines_with_user_and_host(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.audit.pg_log import PgAuditLog

    monkeypatch.setenv("SWITCHYARD_DATABASE_URL", pg_url)
    monkeypatch.setenv("SWITCHYARD_USER", "alice")

    async def build() -> str:
        for user, host in (("alice", "box-a"), ("bob", "box-b")):
            async with await PgAuditLog.open(pg_url, team="default", user=user, host=host) as log:
                await log.append("route", session=f"s-{user}", detail=f"hello from {user}")
                chain = log.chain if user == "bob" else ""
        return chain

    bob_chain = asyncio.run(build())
    rc, out, _ = run_cli(["audit", "tail", "--team", "--json"], capsys)
    rows = [json.loads(x) for x in out.splitlines()]
    assert rc == 0 and {(r["user"], r["host"], r["detail"]) for r in rows} == {
        ("alice", "box-a", "hello from alice"),
        ("bob", "box-b", "hello from bob"),
    }
    rc, out, _ = run_cli(["audit", "tail"], capsys)  # without --team: this user's own
    assert rc == 0 and "alice@box-a" in out and "bob" not in out
    # a user with no line of their own is told why nothing shows, and where the rest is
    monkeypatch.setenv("SWITCHYARD_USER", "carol")
    rc, out, err = run_cli(["audit", "tail"], capsys)
    assert (rc, out) == (0, "")
    assert "no audit line of user carol on the team store" in err and "--team" in err
    rc, out, err = run_cli(["audit", "tail", "--team"], capsys)
    assert rc == 0 and "alice@box-a" in out and err == ""
    monkeypatch.setenv("SWITCHYARD_USER", "alice")
    rc, out, _ = run_cli(["audit", "chains", "--json"], capsys)
    assert rc == 0 and len(json.loads(out)["chains"]) == 2
    rc, out, _ = run_cli(["audit", "export", "--chain", bob_chain], capsys)
    assert rc == 0 and verify_lines(out.splitlines()).ok
    rc, _, err = run_cli(["audit", "export"], capsys)
    assert rc == 2 and "--chain" in err


def test_audit_export_by_session_finds_the_chain_that_holds_it(
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """``audit export --session S`` on the team store said "name one with --chain", though
    a session lives in one chain: the chain holding it is exported. Lines of a filter in
    several chains are refused (exit 2) naming each: one file of two chains' lines would
    never verify as an export does."""
    from app.audit.pg_log import PgAuditLog

    monkeypatch.setenv("SWITCHYARD_DATABASE_URL", pg_url)
    monkeypatch.setenv("SWITCHYARD_USER", "carol")  # the sessions are others'

    async def build() -> dict[str, str]:
        chains = {}
        for user in ("alice", "bob"):
            async with await PgAuditLog.open(pg_url, team="default", user=user, host="h") as log:
                await _write(log, 4, session=f"s-{user}")
                await _write(log, 2, session="both")
                await log.append("route", session="other", run=f"r-{user}", detail="x")
                chains[user] = log.chain
        async with await PgAuditLog.open(pg_url, team="another", user="bob", host="h") as log:
            await _write(log, 3, session="s-alice")  # another team's: not this team's to read
        return chains

    chains = asyncio.run(build())
    rc, out, err = run_cli(["audit", "export", "--session", "s-bob"], capsys)
    assert (rc, err) == (0, ""), err
    lines = out.splitlines()
    assert [json.loads(x)["session"] for x in lines] == ["s-bob"] * 4
    assert [json.loads(x)["seq"] for x in lines] == [1, 2, 3, 4]
    assert verify_lines(lines, chain=False).ok
    assert all(json.loads(x)["detail"].startswith("line ") for x in lines)
    target = tmp_path / "alice.jsonl"
    rc, _, err = run_cli(["audit", "export", "--session", "s-alice", "-o", str(target)], capsys)
    assert rc == 0 and "exported 4 audit lines" in err
    exported = target.read_text().splitlines()
    assert verify_lines(exported, chain=False).ok and len(exported) == 4
    rc, out, _ = run_cli(["audit", "export", "--run", "r-alice"], capsys)
    assert rc == 0 and [json.loads(x)["run"] for x in out.splitlines()] == ["r-alice"]

    # in two chains: refused, naming both, nothing written
    rc, out, err = run_cli(["audit", "export", "--session", "both"], capsys)
    assert (rc, out) == (2, "")
    assert len(err.strip().splitlines()) == 1 and "are in 2 chains" in err
    assert f"{chains['alice']} (alice@h, 2 lines)" in err
    assert f"{chains['bob']} (bob@h, 2 lines)" in err and "--chain" in err
    rc, out, _ = run_cli(["audit", "export", "--session", "both", "--chain", chains["bob"]], capsys)
    assert rc == 0 and len(out.splitlines()) == 2

    # an id no chain holds: one line, exit 2, as `audit tail` says it
    rc, out, err = run_cli(["audit", "export", "--session", "nosuch"], capsys)
    assert (rc, out) == (2, "") and len(err.strip().splitlines()) == 1
    assert "--session nosuch: no such session in the audit log" in err
    rc, out, err = run_cli(["audit", "tail", "--team", "--session", "nosuch"], capsys)
    assert (rc, out) == (2, "") and "--session nosuch: no such session" in err
    # another user's session (tail shows carol's own by default): there, not carol's: 0
    rc, out, err = run_cli(["audit", "tail", "--session", "s-alice"], capsys)
    assert (rc, out) == (0, "") and "no audit line matched --session s-alice" in err
    # ids that are there, never together: nothing matched, exit 1
    rc, out, err = run_cli(["audit", "export", "--session", "s-alice", "--run", "r-bob"], capsys)
    assert (rc, out) == (1, "") and "no audit line matched --session s-alice --run r-bob" in err
    # no filter: a chain must still be named
    rc, _, err = run_cli(["audit", "export"], capsys)
    assert rc == 2 and "--chain" in err

    # a tampered chain's session is exported as it is, and said not to verify (exit 1)
    async def forge() -> None:
        conn = await asyncpg.connect(pg_url)
        try:
            await _forge_first_keys(conn, chains["alice"])
        finally:
            await conn.close()

    asyncio.run(forge())
    rc, out, err = run_cli(["audit", "export", "--session", "s-alice"], capsys)
    assert rc == 1 and len(out.splitlines()) == 4
    assert "line 5 is not in canonical form" in err


async def test_team_tail_follow_from_zero_shows_only_lines_to_come(pg_url: str) -> None:
    """``audit tail --team -n 0 --follow``: nothing already on file, then each new line
    (a follow that found no line to start from read the team's oldest 500 instead)."""
    from app.audit.pg_log import PgAuditLog
    from app.cli.audit_cmd import _team_tail

    class Shown(Exception):
        pass

    shown: list[str] = []

    def show(line: Any, who: dict[str, str]) -> None:
        shown.append(line.detail)
        raise Shown

    args = argparse.Namespace(
        n=0, follow=True, team=True, user=None, session=None, run=None, interval=0.02
    )
    async with await PgAuditLog.open(pg_url, team="default", user="alice", host="a") as log:
        await _write(log, 3)
        follow = asyncio.create_task(_team_tail(args, log, show))
        n = 0
        while not follow.done():  # the follower starts at its own pace: add until it shows
            await log.append("route", session="s1", detail=f"new {n}")
            n += 1
            await asyncio.sleep(0.05)
        with pytest.raises(Shown):
            await follow
    assert len(shown) == 1 and shown[0].startswith("new ")


def test_a_chain_of_another_team_is_not_this_teams_to_read(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--chain`` looked a chain up by its id alone: SWITCHYARD_TEAM=other exported
    platform's lines. A chain whose owner record names another team is refused (exit 2),
    unless the record was edited: then verify reports it, as before."""
    from app.audit.pg_log import PgAuditLog

    monkeypatch.setenv("SWITCHYARD_DATABASE_URL", pg_url)

    async def build() -> str:
        async with await PgAuditLog.open(pg_url, team="platform", user="alice") as log:
            await _write(log, 3)
            return log.chain

    chain = asyncio.run(build())
    monkeypatch.setenv("SWITCHYARD_TEAM", "other")
    rc, out, err = run_cli(["audit", "export", "--chain", chain], capsys)
    assert (rc, out) == (2, "") and f"no audit chain {chain} of team other" in err
    rc, _, err = run_cli(["audit", "verify", "--chain", chain], capsys)
    assert rc == 2 and f"no audit chain {chain}" in err
    monkeypatch.setenv("SWITCHYARD_TEAM", "platform")
    assert run_cli(["audit", "export", "--chain", chain], capsys)[0] == 0

    async def move() -> None:  # the record moved to the other team: it no longer hashes
        conn = await asyncpg.connect(pg_url)
        try:
            await conn.execute("UPDATE audit_chains SET team = 'other' WHERE chain = $1", chain)
        finally:
            await conn.close()

    asyncio.run(move())
    monkeypatch.setenv("SWITCHYARD_TEAM", "other")
    rc, _, err = run_cli(["audit", "verify", "--chain", chain], capsys)
    assert rc == 1 and "owner record" in err


def test_team_flags_without_a_team_store_are_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc, _, err = run_cli(["audit", "tail", "--team"], capsys)
    assert rc == 2 and "SWITCHYARD_DATABASE_URL" in err


async def test_a_newer_sqlite_audit_schema_is_refused_naming_both(tmp_path: Path) -> None:
    from app.audit.log import AuditLog
    from app.audit.store import SCHEMA_VERSION

    db = tmp_path / "audit.sqlite3"
    async with AuditLog.open(db) as log:
        await log.append("run", session="s")
    with sqlite3.connect(db) as con:
        con.execute("PRAGMA user_version = 5")
    with pytest.raises(SchemaTooNew, match=rf"version 5 is newer .*\({SCHEMA_VERSION}\)"):
        await AuditLog.open(db)


# ── bad input ────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "url",
    [
        "postgres//nohost/db",
        "mysql://u@127.0.0.1/db",
        "postgresql://u@127.0.0.1:99999/db",
        "postgresql://u@127.0.0.1:5432/",
        "postgresql://u:secret@bad host/db",
        # named in the query too: dropped by asyncpg, unsaid (it connected as "u" to "db")
        "postgresql://u:secret@127.0.0.1:5432/db?user=postgres",
        "postgresql://u:secret@127.0.0.1:5432/db?dbname=sy2",
        "postgresql://u:secret@127.0.0.1:5432/db?password=secret2",
    ],
)
def test_a_malformed_database_url_exits_2_and_never_shows_the_password(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SWITCHYARD_DATABASE_URL", url)
    for argv in (["audit", "verify"], ["budget"]):
        rc, _, err = run_cli(argv, capsys)
        assert rc == 2, err
        assert len(err.strip().splitlines()) == 1 and "database URL" in err
        assert "secret" not in err
    assert not load_settings().audit_db.exists()  # never a silent SQLite


def test_an_unreachable_database_exits_1_and_never_falls_back_silently(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(
        "SWITCHYARD_DATABASE_URL", f"postgresql://u:secret@127.0.0.1:{closed_port()}/db"
    )
    for argv in (["audit", "verify"], ["budget"]):
        rc, _, err = run_cli(argv, capsys)
        assert rc == 1, err
        assert "cannot reach the team database" in err and "secret" not in err
    assert not load_settings().audit_db.exists()
    assert not load_settings().ledger_db.exists()


@pytest.mark.parametrize("wrong", ["database", "user"])
def test_a_database_that_refuses_the_url_is_exit_2_and_no_fallback(
    pg_server: PgServer,
    wrong: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A wrong user (or its password) or a database the server does not have read as
    "cannot reach the team database" (exit 1), and database_fallback went on with this
    machine's files: what the URL says is wrong, the server answered."""
    url = (
        pg_server.url_for("sy_no_such_database")
        if wrong == "database"
        else f"postgresql://nobody_here@{pg_server.host}:{pg_server.port}/postgres"
    )
    monkeypatch.setenv("SWITCHYARD_DATABASE_URL", url)
    monkeypatch.setenv("SWITCHYARD_DATABASE_FALLBACK", "true")
    for argv in (["audit", "verify"], ["budget"]):
        rc, _, err = run_cli(argv, capsys)
        assert rc == 2, err
        assert "refused the connection" in err and "SWITCHYARD_DATABASE_URL" in err
        assert "reading this machine's SQLite files" not in err
    assert not load_settings().ledger_db.exists()


@pytest.mark.parametrize(
    "query",
    [
        "sslmod=require",  # a setting the server does not know
        "statement_timeout=soon",  # a value the server refuses
        "sslmode=require",  # an SSL upgrade the server does not do
        "sslmode=verify-full&sslrootcert=/nonexistent/root.crt",  # a file it names, missing
        "target_session_attrs=bogus",  # a parameter asyncpg cannot take
    ],
)
def test_a_url_whose_parameters_the_server_refuses_is_exit_2_and_no_fallback(
    pg_server: PgServer,
    query: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each read "cannot reach the team database" (exit 1), and with database_fallback on
    a session went on with this machine's files, outside the team's caps (a team-store
    audit): the server answered, and what the URL asks is what is wrong."""
    monkeypatch.setenv("SWITCHYARD_DATABASE_URL", f"{pg_server.url_for('postgres')}?{query}")
    monkeypatch.setenv("SWITCHYARD_DATABASE_FALLBACK", "true")
    rc, _, err = run_cli(["budget"], capsys)
    assert rc == 2, err
    assert "SWITCHYARD_DATABASE_URL's parameters" in err, err
    assert "reading this machine's SQLite files" not in err
    assert not load_settings().ledger_db.exists()


@pytest.mark.parametrize("path", ["nosuch", "nosuch,%20also_not"])
def test_a_search_path_naming_no_schema_is_exit_2_naming_it_and_no_fallback(
    pg_server: PgServer,
    path: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``?search_path=nosuch`` reached the server as a setting it took, and every store
    failed at its first table: "no schema has been selected to create in" (exit 1, the
    parameter unnamed). It is refused at the connection (exit 2), naming it."""
    url = f"{pg_server.url_for('postgres')}?search_path={path}"
    monkeypatch.setenv("SWITCHYARD_DATABASE_URL", url)
    monkeypatch.setenv("SWITCHYARD_DATABASE_FALLBACK", "true")
    for argv in (["audit", "verify"], ["budget"]):
        rc, _, err = run_cli(argv, capsys)
        assert rc == 2, err
        assert len(err.strip().splitlines()) == 1, err
        assert f"?search_path={path.replace('%20', ' ')} names no schema" in err, err
        assert "reading this machine's SQLite files" not in err
    assert not load_settings().ledger_db.exists()


def test_a_search_path_naming_a_schema_is_taken(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SWITCHYARD_DATABASE_URL", f"{pg_url}?search_path=nosuch,public")
    assert run_cli(["audit", "verify"], capsys)[0] == 0


def test_with_database_fallback_reads_fall_back_to_the_files_sessions_wrote(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ask`` fell back to this machine's files with database_fallback on, but ``budget``
    and ``audit tail`` then exited 1 (cannot reach the team database): what that session
    wrote could not be read."""
    from app.audit.log import AuditLog

    async def seed() -> None:
        async with AuditLog.open(load_settings().audit_db) as log:
            await log.append("route", session="s-fell-back", detail="written while away")

    asyncio.run(seed())
    monkeypatch.setenv(
        "SWITCHYARD_DATABASE_URL", f"postgresql://u:secret@127.0.0.1:{closed_port()}/db"
    )
    monkeypatch.setenv("SWITCHYARD_DATABASE_FALLBACK", "true")
    for argv in (["audit", "tail", "--json"], ["audit", "verify"], ["budget", "--json"]):
        rc, out, err = run_cli(argv, capsys)
        assert rc == 0, err
        assert "cannot reach the team database" in err and "secret" not in err
        assert "reading this machine's SQLite files instead" in err
        if argv[1] == "tail":
            assert json.loads(out)["session"] == "s-fell-back"
    rc, _, err = run_cli(["audit", "tail", "--team"], capsys)  # the team's alone: no files
    assert rc == 1 and "cannot reach the team database" in err


def test_under_local_only_a_database_on_a_public_host_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked by address before any connection: 192.0.2.10 (TEST-NET, public) is refused;
    the socket guard would see any attempt to reach it."""
    monkeypatch.setenv("SWITCHYARD_DATABASE_URL", "postgresql://u@192.0.2.10:5432/team")
    monkeypatch.setenv("SWITCHYARD_LOCAL_ONLY", "true")
    rc, _, err = run_cli(["audit", "verify"], capsys)
    assert rc == 2 and "local_only is on" in err and "192.0.2.10" in err
    rc, _, err = run_cli(["ask", "--role", "tutor", "--local-only", "hello"], capsys)
    assert rc == 2 and "local_only is on" in err


# ── a whole session on the team store ────────────────────────────────────────────────────


def _on_the_team_store(
    monkeypatch: pytest.MonkeyPatch, fake_openai_factory: Callable[..., object], url: str
) -> None:
    """Sessions on the team store at ``url``, their local roles served by a vLLM fake."""
    from tests.reliability.kit import LOCAL_MODELS

    vllm = fake_openai_factory("vllm", models=LOCAL_MODELS, default_reply="ok")
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", vllm.base_url)  # type: ignore[attr-defined]
    monkeypatch.setenv("SWITCHYARD_LLAMACPP_SERVER_URL", f"http://127.0.0.1:{closed_port()}/v1")
    monkeypatch.setenv("SWITCHYARD_DATABASE_URL", url)


def test_ask_on_the_team_store_writes_the_team_audit_and_ledger(
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fake_openai_factory: Callable[..., object],
) -> None:
    from tests.reliability.kit import run_json

    _on_the_team_store(monkeypatch, fake_openai_factory, pg_url)
    for user in ("alice", "bob"):
        monkeypatch.setenv("SWITCHYARD_USER", user)
        rc, _, err = run_json(["ask", "--role", "tutor", "--local-only", "hello"], capsys)
        assert rc == 0, err
    rc, out, _ = run_cli(["audit", "tail", "--team", "-n", "100", "--json"], capsys)
    rows = [json.loads(x) for x in out.splitlines()]
    assert rc == 0 and {r["user"] for r in rows} == {"alice", "bob"}
    assert any("TEAM_STORE" in r["reason_codes"] for r in rows)
    assert {r["kind"] for r in rows} >= {"route", "call"}
    rc, out, _ = run_cli(["audit", "verify"], capsys)
    assert rc == 0 and "2 chains" in out
    rc, report, _ = run_json(["budget"], capsys)
    assert rc == 0 and report["team"] == "default" and report["total"]["calls"] == 2
    assert {u["user"] for u in report["by_user"]} == {"alice", "bob"}
    assert not load_settings().audit_db.exists()  # nothing went to the SQLite files


def test_a_team_spelled_in_another_case_is_refused_not_a_team_apart(
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fake_openai_factory: Callable[..., object],
) -> None:
    """Team names were case-sensitive: a laptop set to "Platform" beside the team's
    "platform" reserved against a day cap of its own. A spelling the database does not
    have, beside one differing only in case, is a usage error naming both, before any
    line or reservation; the team's own spelling goes on working."""
    from tests.reliability.kit import run_json

    _on_the_team_store(monkeypatch, fake_openai_factory, pg_url)
    monkeypatch.setenv("SWITCHYARD_TEAM", "platform")
    assert run_json(["ask", "--role", "tutor", "--local-only", "hello"], capsys)[0] == 0
    monkeypatch.setenv("SWITCHYARD_TEAM", "Platform")
    for argv in (["ask", "--role", "tutor", "--local-only", "hello"], ["budget"]):
        rc, out, err = run_cli(argv, capsys)
        assert (rc, out) == (2, ""), (argv, rc, err)
        assert "team 'Platform' differs only in case from 'platform'" in err, err
    monkeypatch.setenv("SWITCHYARD_TEAM", "platform")
    rc, out, _ = run_cli(["audit", "chains", "--json"], capsys)
    assert rc == 0 and {c["team"] for c in json.loads(out)["chains"]} == {"platform"}
    rc, out, _ = run_cli(["audit", "verify"], capsys)
    assert rc == 0 and "1 chain," in out
    monkeypatch.setenv("SWITCHYARD_TEAM", "data")  # another team altogether is welcome
    assert run_json(["ask", "--role", "tutor", "--local-only", "hello"], capsys)[0] == 0


def test_policy_simulate_on_the_team_store_replays_the_chain_it_is_given(
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fake_openai_factory: Callable[..., object],
) -> None:
    """It opened this process's own chain, new and empty, and said "no decisions in this
    range: nothing to simulate" of a team's 42 (an audit found it)."""
    from app.resources import default_policy_path
    from tests.reliability.kit import run_json

    _on_the_team_store(monkeypatch, fake_openai_factory, pg_url)
    for _ in range(2):
        assert run_json(["ask", "--role", "tutor", "--local-only", "hello"], capsys)[0] == 0
    rc, out, _ = run_cli(["audit", "chains", "--json"], capsys)
    (chain,) = [c["chain"] for c in json.loads(out)["chains"] if c["lines"]][:1]
    policy = str(default_policy_path())
    rc, out, err = run_cli(["policy", "simulate", "--policy", policy], capsys)
    assert (rc, out) == (2, "") and "--chain" in err and "audit chains" in err
    rc, report, err = run_json(["policy", "simulate", "--policy", policy, "--chain", chain], capsys)
    assert rc == 0 and report["decisions"] == 1, (report, err)
    monkeypatch.delenv("SWITCHYARD_DATABASE_URL")
    rc, _, err = run_cli(["policy", "simulate", "--policy", policy, "--chain", chain], capsys)
    assert rc == 2 and "--chain names a chain of the team store" in err


def test_a_fallback_the_user_asked_for_is_audited(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fake_openai_factory: Callable[..., object],
) -> None:
    from tests.reliability.kit import LOCAL_MODELS, run_json

    vllm = fake_openai_factory("vllm", models=LOCAL_MODELS, default_reply="ok")
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", vllm.base_url)  # type: ignore[attr-defined]
    monkeypatch.setenv("SWITCHYARD_LLAMACPP_SERVER_URL", f"http://127.0.0.1:{closed_port()}/v1")
    monkeypatch.setenv("SWITCHYARD_DATABASE_URL", f"postgresql://u@127.0.0.1:{closed_port()}/db")
    monkeypatch.setenv("SWITCHYARD_DATABASE_FALLBACK", "true")
    rc, _, err = run_json(["ask", "--role", "tutor", "--local-only", "hello"], capsys)
    assert rc == 0, err
    with sqlite3.connect(load_settings().audit_db) as con:
        first = json.loads(con.execute("SELECT line FROM audit_lines ORDER BY seq").fetchone()[0])
    assert first["kind"] == "degradation" and first["reason_codes"] == ["GR005_STORE_FALLBACK"]
    assert "cannot reach the team database" in first["detail"]


def test_an_auditors_read_only_role_verifies_the_log_and_reads_the_budget(
    pg_url: str,
    pg_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A role that may only read (an auditor's) was refused by every command ("permission
    denied for schema public"): opening a store created its version table IF NOT EXISTS,
    which needs the right to create even when the table is there."""
    from app.audit.pg_log import PgAuditLog
    from tests.pg import _admin, run_sync

    monkeypatch.setenv("SWITCHYARD_DATABASE_URL", pg_url)
    monkeypatch.setenv("SWITCHYARD_USER", "alice")
    # the owner's set-up: the team's tables, some lines and a ledger
    rc, _, err = run_cli(["budget", "--json"], capsys)
    assert rc == 0, err

    async def build() -> None:
        async with await PgAuditLog.open(pg_url, team="default", user="alice", host="h") as log:
            await _write(log, 5)

    asyncio.run(build())
    database = pg_url.rsplit("/", 1)[1]
    role = f"auditor_{database}"
    run_sync(_admin(pg_server, f"CREATE ROLE {role} LOGIN"))
    run_sync(
        _admin(
            pg_server,
            f"GRANT CONNECT ON DATABASE {database} TO {role}",
        )
    )
    conn_url = pg_server.url_for(database)

    async def grant() -> None:
        conn = await asyncpg.connect(conn_url)
        try:
            await conn.execute(f"REVOKE CREATE ON SCHEMA public FROM PUBLIC, {role}")
            await conn.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
            await conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
        finally:
            await conn.close()

    asyncio.run(grant())
    auditor = f"postgresql://{role}@{pg_server.host}:{pg_server.port}/{database}"
    monkeypatch.setenv("SWITCHYARD_DATABASE_URL", auditor)
    rc, out, err = run_cli(["audit", "verify"], capsys)
    assert rc == 0 and "5 lines" in out, err
    rc, out, err = run_cli(["audit", "tail", "--team", "--json"], capsys)
    assert rc == 0 and len(out.splitlines()) == 5, err
    rc, _, err = run_cli(["budget", "--json"], capsys)
    assert rc == 0, err


async def test_a_connection_the_database_broke_is_the_store_unavailable(pg_url: str) -> None:
    """A pooled connection whose backend was terminated mid-statement raised asyncpg's
    InternalClientError ("cannot switch to state 12; another operation is in progress"),
    which is neither a PostgresError nor an InterfaceError: it escaped the store, and the
    gateway answered a bare 500 and dropped the client's connection (the PG-down test
    failed about one run in three)."""
    from app.audit.pg_log import PgAuditLog
    from app.errors import SwitchyardError
    from app.policy.schema import Budget
    from app.router.ledger.pg_ledger import PgBudgetLedger

    def broken(conn: Any) -> Any:
        raise asyncpg.InternalClientError("cannot switch to state 12; another operation (2)")

    async with await PgAuditLog.open(pg_url, team="default", user="u", host="h") as log:
        with pytest.raises(SwitchyardError, match=r"team audit log .* unavailable: cannot switch"):
            await log._with(broken)
    budget = Budget(session_usd=5.0, day_usd=20.0, reservation_ttl_s=900)
    async with await PgBudgetLedger.open(pg_url, budget, team="default", user="u") as led:
        with pytest.raises(SwitchyardError, match=r"team ledger .* unavailable: cannot switch"):
            await led._with(broken)


async def test_team_follow_shows_a_line_whose_laptop_clock_runs_behind(pg_url: str) -> None:
    """The follow kept its place by time stamp: a laptop whose clock ran 120 s behind wrote
    lines "before" the place, and they were never shown (an audit). It keeps a place per
    chain now."""
    from datetime import UTC, datetime, timedelta

    from app.audit.pg_log import PgAuditLog
    from app.cli.audit_cmd import _team_tail
    from app.clock import ManualClock

    shown: list[str] = []

    def show(line: Any, who: dict[str, str]) -> None:
        shown.append(f"{who['user']}: {line.detail}")

    args = argparse.Namespace(
        n=0, follow=True, team=True, user=None, session=None, run=None, interval=0.02
    )
    behind = ManualClock(datetime.now(UTC) - timedelta(seconds=120))
    async with (
        await PgAuditLog.open(pg_url, team="default", user="alice", host="a") as alice,
        await PgAuditLog.open(pg_url, team="default", user="bob", host="b") as bob,
        await PgAuditLog.open(
            pg_url, team="default", user="carol", host="c", clock=behind
        ) as carol,
    ):
        await _write(alice, 2)
        follow = asyncio.create_task(_team_tail(args, alice, show))
        await asyncio.sleep(0.2)  # the follow has its place
        await bob.append("route", session="s1", detail="bob's")
        await asyncio.sleep(0.2)  # shown: the time-stamp place moved past carol's stamps
        await carol.append("route", session="s1", detail="carol's")
        for _ in range(100):
            if len(shown) >= 2:
                break
            await asyncio.sleep(0.05)
        follow.cancel()
    assert shown == ["bob: bob's", "carol: carol's"]


async def test_team_after_moves_each_chains_place_past_lines_its_filter_leaves_out(
    pg_url: str,
) -> None:
    """Filtered by session, the other sessions' lines never moved a chain's place: each
    poll read them again (a review)."""
    from app.audit.pg_log import PgAuditLog

    async with await PgAuditLog.open(pg_url, team="default", user="alice", host="a") as log:
        heads = await log.team_heads()
        await log.append("route", session="s2", detail="another session's")
        await log.append("route", session="s1", detail="mine")
        await log.append("route", session="s2", detail="another session's again")
        shown, read = await log.team_after(heads, 500, session="s1")
        assert [t.line.detail for t in shown] == ["mine"]
        assert read == {log.chain: heads.get(log.chain, 0) + 3}
        assert await log.team_after({**heads, **read}, 500, session="s1") == ([], {})
