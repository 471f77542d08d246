"""The audit log on a real SQLite file: appends, the read side, export and the bus."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.audit import AUDIT_KINDS, GENESIS_HASH, AuditLog, AuditSink, verify_lines
from app.audit.canonical import canonical_json, line_hash
from app.bus import AuditAppended, Bus
from app.clock import ManualClock


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "audit.sqlite3"


async def test_appends_chain_and_verify(db_path: Path) -> None:
    clock = ManualClock()
    async with AuditLog.open(db_path, clock=clock, policy_version="1.0.0") as log:
        first = await log.append(
            "route",
            session="s1",
            run="r1",
            role="architect",
            from_="qwen14b",
            to="qwen32b",
            reason_codes=["default"],
            values={"confidence": 0.81},
            provenance={"policy": "model-policy.toml"},
            detail="routed",
        )
        clock.advance(1.5)
        second = await log.append("runtime_fallback", session="s1", reason_codes="vllm_down")
        report = await log.verify()

    assert (first.seq, second.seq) == (1, 2)
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.hash
    assert first.ts == "2026-01-01T12:00:00.000Z"
    assert second.ts == "2026-01-01T12:00:01.500Z"
    assert first.policy_version == "1.0.0"
    assert second.reason_codes == ["vllm_down"]  # a lone code, not its letters
    assert first.hash == line_hash(first.model_dump(by_alias=True))
    assert report.ok and report.lines_checked == 2 and report.head_hash == second.hash


async def test_a_line_that_would_not_read_back_is_never_written(db_path: Path) -> None:
    # add() does not read a line back when the quick way vouches for it; one whose field
    # has another type than the line's is read when chained, and refused before the spool.
    async with AuditLog.open(db_path) as log:
        first = await log.add("run", session="s", values={"n": [1, 2.5]})
        assert first.line.values == {"n": [1, 2.5]} and first.line.seq == first.seq == 1
        for odd in (
            {"role": 5},
            {"session": None},
            {"detail": None},
            {"values": [1]},
            {"detail": 3.5},
        ):
            with pytest.raises(ValidationError):
                await log.add("run", **{"session": "s", **odd})  # type: ignore[arg-type]
        second = await log.append("run", session="s")
        report = await log.verify()
        lines = await log.lines()
    assert second.seq == 2 and second.prev_hash == first.hash
    assert report.ok and [line.seq for line in lines] == [1, 2]


async def test_satisfies_the_sink_protocol(db_path: Path) -> None:
    log = await AuditLog.open(db_path)
    sink: AuditSink = log
    line = await sink.append("run", session="s")
    await log.close()
    await log.close()  # idempotent
    assert line.seq == 1


async def test_unknown_kind_is_a_programming_error(db_path: Path) -> None:
    async with AuditLog.open(db_path) as log:
        with pytest.raises(ValueError, match="unknown audit kind"):
            await log.append("nonsense", session="s")
        assert await log.last_seq() == 0
        for kind in AUDIT_KINDS:
            await log.append(kind, session="s")
        assert await log.last_seq() == len(AUDIT_KINDS)


async def test_chain_continues_across_reopen(db_path: Path) -> None:
    async with AuditLog.open(db_path) as log:
        a = await log.append("route", session="s")
    async with AuditLog.open(db_path) as log:
        b = await log.append("route", session="s")
        assert b.seq == 2 and b.prev_hash == a.hash
        assert (await log.verify()).ok


async def test_awaited_open_is_also_a_context_manager(db_path: Path) -> None:
    async with await AuditLog.open(db_path) as log:
        await log.append("route", session="s")
    with pytest.raises(RuntimeError, match="closed"):
        await log.append("route", session="s")


async def test_odd_values_are_stored_as_plain_json(db_path: Path) -> None:
    async with AuditLog.open(db_path) as log:
        line = await log.append(
            "call",
            session="s",
            values={"nan": float("nan"), "tuple": (1, 2), "path": Path("/x"), 7: "int key"},
        )
        assert line.values == {"nan": "nan", "tuple": [1, 2], "path": "/x", "7": "int key"}
        assert (await log.verify()).ok


async def test_read_side_filters(db_path: Path) -> None:
    async with AuditLog.open(db_path) as log:
        for i in range(6):
            await log.append("route", session=f"s{i % 2}", run=f"r{i % 3}", detail=str(i))
        assert [x.seq for x in await log.tail(3)] == [4, 5, 6]
        assert [x.seq for x in await log.tail(2, session="s0")] == [3, 5]
        assert [x.seq for x in await log.tail(10, run="r1")] == [2, 5]
        assert await log.tail(0) == []
        assert [x.seq for x in await log.lines()] == [1, 2, 3, 4, 5, 6]
        assert [x.seq for x in await log.lines(session="s1")] == [2, 4, 6]
        assert [x.seq for x in await log.lines(session="s1", run="r0")] == [4]
        assert [x.seq for x in await log.lines(since_seq=4)] == [5, 6]
        assert [x.seq for x in await log.lines(limit=2)] == [1, 2]


async def test_follow_sees_lines_from_another_writer(db_path: Path) -> None:
    async with AuditLog.open(db_path) as reader, AuditLog.open(db_path) as writer:
        await writer.append("route", session="old")
        seen: list[int] = []

        async def collect() -> None:
            async for line in reader.follow(session="live", since_seq=1, interval=0.01):
                seen.append(line.seq)
                if len(seen) == 3:
                    return

        task = asyncio.create_task(collect())
        for _ in range(3):
            await asyncio.sleep(0.02)
            await writer.append("route", session="live")
            await writer.append("route", session="other")
        await asyncio.wait_for(task, 5)
        assert seen == [2, 4, 6]


async def test_export_is_canonical_jsonl(db_path: Path, tmp_path: Path) -> None:
    async with AuditLog.open(db_path) as log:
        for i in range(5):
            await log.append("route", session="s", run=f"r{i % 2}", from_="a", to="b")
        buf = io.StringIO()
        assert await log.export_jsonl(buf) == 5
        out = tmp_path / "run.jsonl"
        assert await log.export_jsonl(out, run="r0") == 3

    texts = buf.getvalue().splitlines()
    first = json.loads(texts[0])
    assert first["from"] == "a" and "from_" not in first
    assert texts[0] == canonical_json(first)
    assert verify_lines(texts).ok
    run_lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(t)["seq"] for t in run_lines] == [1, 3, 5]
    assert verify_lines(run_lines, chain=False).ok


async def test_publishes_each_line_on_the_bus(db_path: Path) -> None:
    bus = Bus()
    sub = bus.subscribe(kinds=(AuditAppended,))
    async with AuditLog.open(db_path, bus=bus) as log:
        line = await log.append(
            "escalation",
            session="s9",
            from_="local",
            to="deepseek",
            values={"x": [1, 2.5, {"y": None}], "big": 10**30, "e": 1e-7, "t": "→"},
            provenance={"p": "q"},
        )
    event = sub.get_nowait()
    assert isinstance(event, AuditAppended)
    assert event.session == "s9"
    assert event.line == line.model_dump(by_alias=True)
    assert event.line["from"] == "local"


async def test_the_published_session_is_the_lines_own(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event names the session as the line has it: escaped characters read back, and
    a secret in it redacted there as in the line (never the argument as given)."""
    canary = f"canary-{'0123456789abcdef' * 2}"
    monkeypatch.setenv("ACME_SERVICE_TOKEN", canary)
    bus = Bus()
    sub = bus.subscribe(kinds=(AuditAppended,))
    sessions = ["plain", 'a "quoted" \\ tab\there → ünïcode', f"s-{canary}"]
    async with AuditLog.open(db_path, bus=bus) as log:
        lines = [await log.append("route", session=session) for session in sessions]
        lines += await log.append_many([{"kind": "run", "session": s} for s in sessions])
    events = [sub.get_nowait() for _ in lines]
    assert [e.session for e in events] == [line.session for line in lines]
    assert [e.line["session"] for e in events] == [line.session for line in lines]
    assert events[1].session == sessions[1]
    assert canary not in events[2].session and canary not in events[2].text


async def test_appends_are_append_only_in_sql(db_path: Path) -> None:
    import sqlite3

    async with AuditLog.open(db_path) as log:
        await log.append("route", session="s")
    con = sqlite3.connect(db_path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            con.execute("UPDATE audit_lines SET line = 'x'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            con.execute("DELETE FROM audit_lines")
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        con.close()
