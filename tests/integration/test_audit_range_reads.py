"""What a range read asks of an audit store (``policy simulate --since/--session``,
``audit export --session/--run``), on the SQLite file and the team's PostgreSQL alike:
the first line of a range found exactly (a clock set back included), the sessions' first
lines, and the chain verified and exported from a line to the head."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from app.audit.canonical import verify_lines
from app.clock import ManualClock
from tests.pg import StoreUnderTest


async def _written(store: StoreUnderTest) -> tuple[Any, list[Any]]:
    """Lines of three sessions over two UTC days, the clock set back two hours once
    (a line's ts then stands before an earlier line's)."""
    clock = ManualClock(datetime(2026, 12, 1, 21, 0, tzinfo=UTC))
    log = await store.audit(clock)
    plan = [("a", 3600), ("a", 3600), ("b", 5400), ("a", -7200), ("c", 3600), ("b", 3600)]
    plan += [("c", 3600), ("b", 60), ("a", 60)]
    for session, step in plan:
        await log.append("route", session=session, role="tutor", detail=f"step {step}")
        clock.advance(step)
    return log, await log.lines()


async def _written_file(store: StoreUnderTest) -> Path:
    """:func:`_written` on a SQLite store, closed: its file."""
    log, _ = await _written(store)
    await log.close()
    return log.path  # type: ignore[no-any-return]


def test_the_first_line_of_a_range_is_found_exactly(any_store: StoreUnderTest) -> None:
    async def go() -> None:
        log, lines = await _written(any_store)
        try:
            stamps = [line.ts for line in lines]
            assert sorted(stamps) != stamps and stamps[3] > "2026-12-02" > stamps[4]  # set back
            moments = sorted({line.ts for line in lines} | {line.ts[:10] for line in lines})
            for since in [*moments, "2026-11-30", "2026-12-09"]:
                for session in (None, "a", "b", "c", "nobody"):
                    match = [
                        x
                        for x in lines
                        if x.ts >= since and (session is None or x.session == session)
                    ]
                    want = (match[0].seq, min(x.ts for x in match)) if match else None
                    assert await log.first_of(since=since, session=session) == want
            for session in ("a", "b", "c"):
                own = [x for x in lines if x.session == session]
                assert await log.first_of(session=session) == (
                    own[0].seq,
                    min(x.ts for x in own),
                )
            for seq in range(1, len(lines) + 2):
                later = {x.session for x in lines if x.seq >= seq}
                firsts = [next(x.seq for x in lines if x.session == s) for s in later]
                assert await log.first_of_sessions_from(seq) == (min(firsts) if firsts else None)
        finally:
            await log.close()

    asyncio.run(go())


def test_the_chain_is_verified_and_exported_from_a_line_to_its_head(
    any_store: StoreUnderTest,
) -> None:
    async def go() -> None:
        log, lines = await _written(any_store)
        try:
            for start in range(1, len(lines) + 1):
                report = await log.verify(from_seq=start)
                assert report.ok, (start, report)
                assert report.lines_checked == len(lines) - start + 1
                assert report.head_hash == lines[-1].hash
                out = io.StringIO()
                assert await log.export_jsonl(out, from_seq=start) == len(lines) - start + 1
                exported = out.getvalue().splitlines()
                assert [json.loads(x)["seq"] for x in exported] == list(
                    range(start, len(lines) + 1)
                )
                assert verify_lines(exported, chain=False).ok
            out = io.StringIO()
            assert await log.export_jsonl(out, session="b", from_seq=5) == 2
        finally:
            await log.close()

    asyncio.run(go())


def test_a_range_verify_finds_an_edit_in_the_range_not_before_it(tmp_path: Path) -> None:
    """What a range read relies on is checked: every line from its first to the head.
    An edit before it is ``audit verify``'s to find (the whole chain)."""
    store = StoreUnderTest("sqlite", str(tmp_path / "ledger.db"))
    path = asyncio.run(_written_file(store))
    with sqlite3.connect(path) as con:
        con.execute("DROP TRIGGER IF EXISTS audit_lines_no_update")
        con.execute("UPDATE audit_lines SET line = replace(line, 'step', 'stop') WHERE seq = 6")

    async def check() -> list[Any]:
        log = await store.audit()
        try:
            return [await log.verify(from_seq=n) for n in (1, 6, 7)]
        finally:
            await log.close()

    whole, at, after = asyncio.run(check())
    assert not whole.ok and whole.first_bad_seq == 6
    assert not at.ok and at.first_bad_seq == 6
    assert after.ok and after.lines_checked == 3


def test_a_file_written_before_the_ts_index_gets_it_when_opened(tmp_path: Path) -> None:
    store = StoreUnderTest("sqlite", str(tmp_path / "ledger.db"))
    path = asyncio.run(_written_file(store))
    with sqlite3.connect(path) as con:
        con.execute("DROP INDEX audit_lines_ts")

    async def first() -> Any:
        log = await store.audit()
        try:
            return await log.first_of(since="2026-12-02")
        finally:
            await log.close()

    assert asyncio.run(first()) is not None
    with sqlite3.connect(path) as con:
        plan = con.execute(
            "EXPLAIN QUERY PLAN SELECT MIN(seq) FROM audit_lines INDEXED BY audit_lines_ts"
            " WHERE ts >= '2026-12-02'"
        ).fetchall()
    assert "audit_lines_ts" in str(plan)


@pytest.mark.parametrize("value", ["2026-12-02", "2026-12-02T00:30:00.000Z"])
def test_a_day_or_a_moment_compares_as_text_in_byte_order(
    any_store: StoreUnderTest, value: str
) -> None:
    """A bare day and a moment find the first line as Python's comparison does, on both
    stores. (The team store compares in byte order, ``COLLATE "C"``; this test cluster's
    collation is C already, so it cannot tell that from the database's own: the stamps
    are uniform ISO text, which the collations checked order alike.)"""

    async def go() -> None:
        log, lines = await _written(any_store)
        try:
            match = [x for x in lines if x.ts >= value]
            assert await log.first_of(since=value) == (match[0].seq, min(x.ts for x in match))
        finally:
            await log.close()

    asyncio.run(go())


EDITS = [
    ("ts", "UPDATE audit_lines SET ts = '2026-11-30T00:00:00.000Z' WHERE seq = 4"),
    ("session", "UPDATE audit_lines SET session = 'c' WHERE seq = 4"),
    ("run", "UPDATE audit_lines SET run = 'r-x' WHERE seq = 4"),
    ("text", "UPDATE audit_lines SET line = 'not json at all' WHERE seq = 4"),
    ("not an object", "UPDATE audit_lines SET line = '[1, 2]' WHERE seq = 4"),
]


@pytest.mark.parametrize(("what", "edit"), EDITS, ids=[e[0] for e in EDITS])
def test_an_edited_column_before_a_range_is_found(
    any_store: StoreUnderTest, what: str, edit: str
) -> None:
    """A range read finds where it starts through the index columns of lines before it,
    which it does not verify: an edited one (line 4, session b's first, its ts set back a
    day or its session renamed) moved a `--since` or a `--session b` past b's lines, and
    the read verified and reported without them (a review). The columns of every line
    before the start are checked against the texts, in the database."""

    async def go() -> None:
        log, lines = await _written(any_store)
        try:
            assert await log.first_unlike_before(len(lines) + 1) is None
            await _edit(any_store, log, edit)
            for before in (5, 7, len(lines) + 1):
                assert await log.first_unlike_before(before) == 4, before
            assert await log.first_unlike_before(4) is None  # a range from line 4 verifies it
        finally:
            await log.close()

    asyncio.run(go())


async def _edit(store: StoreUnderTest, log: Any, statement: str) -> None:
    """``statement`` on the store's lines, past its append-only guard (a tamperer's)."""
    if store.shared:
        import asyncpg

        conn = await asyncpg.connect(store.location)
        try:
            await conn.execute("ALTER TABLE audit_lines DISABLE TRIGGER audit_lines_append_only")
            await conn.execute(statement + " AND chain = $1", log.chain)
        finally:
            await conn.close()
        return
    await log.flush()  # the lines out of the spool, into the table edited
    with sqlite3.connect(log.path) as con:
        con.execute("DROP TRIGGER IF EXISTS audit_lines_no_update")
        assert con.execute(statement).rowcount


RANGE_EDITS = [
    # b's lines set back a day by their ts column: `--since` b's first moment read from c's
    (
        "UPDATE audit_lines SET ts = '2026-12-01T23:00:00.000Z' WHERE seq IN (4, 5)",
        ["policy", "simulate", "--since", "2026-12-02T09:00:00.000Z"],
    ),
    # b's first line given to a by its session column: `--session b` exported from line 5
    ("UPDATE audit_lines SET session = 'a' WHERE seq = 4", ["audit", "export", "--session", "b"]),
]


@pytest.mark.parametrize(("edit", "argv"), RANGE_EDITS)
def test_a_range_command_says_an_edited_column_before_it_and_reports_nothing(
    capsys: pytest.CaptureFixture[str], edit: str, argv: list[str]
) -> None:
    """Session a's three lines on one day, b's two and c's four the next. An edited column
    moved a range's start past b's lines: `policy simulate` verified from there and
    reported without them, `audit export --session b` left line 4 out, both exit 0 (a
    review). Now: exit 1 naming line 4, no report."""
    from app.config import load_settings
    from app.resources import default_policy_path
    from tests.reliability.kit import run_cli

    path = load_settings().audit_db
    store = StoreUnderTest("sqlite", str(path.with_name("ledger.db")))

    async def write() -> None:
        clock = ManualClock(datetime(2026, 12, 1, 20, 0, tzinfo=UTC))
        log = await store.audit(clock)
        try:
            for session, count in (("a", 3), ("b", 2), ("c", 4)):
                if session == "b":
                    clock.advance(9 * 3600)  # 12-02 09:00
                for _ in range(count):
                    await log.append("route", session=session, role="tutor")
                    clock.advance(3600)
            await _edit(store, log, edit)
        finally:
            await log.close()

    asyncio.run(write())
    if argv[0] == "policy":
        argv = [*argv, "--policy", str(default_policy_path())]
    rc, out, err = run_cli(argv, capsys)
    assert rc == 1, (argv, out, err)
    assert "does not verify at line 4" in err and "index columns of line 4" in err, err
    assert "Traceback" not in err
    if argv[0] == "policy":
        assert out == ""
