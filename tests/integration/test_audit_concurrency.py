"""Many writers, one chain: instances and processes are serialised by SQLite."""

from __future__ import annotations

import asyncio
import io
import sys
import textwrap
from collections import Counter
from pathlib import Path

from app.audit import AuditLog, verify_lines

N = 40
ROOT = Path(__file__).resolve().parents[2]  # the checkout, so the child imports `app`

# A writer in another process: opens the chain, says so, waits for "go", appends N lines.
_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from app.audit import AuditLog

    async def main(path, n, session):
        async with AuditLog.open(Path(path)) as log:
            print("ready", flush=True)
            sys.stdin.readline()
            for i in range(n):
                await log.append("call", session=session, values={"i": i})

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
    """
)


async def _spawn_writer(db: Path, n: int, session: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _WRITER,
        str(db),
        str(n),
        session,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"ready"
    return proc


async def _burst(log: AuditLog, session: str, n: int) -> None:
    await asyncio.gather(*(log.append("route", session=session, values={"i": i}) for i in range(n)))


async def _assert_contiguous(db: Path, expected: Counter[str]) -> list[str]:
    """The chain verifies, seqs run 1..n with no gap, and every writer's lines are there."""
    async with AuditLog.open(db) as log:
        report = await log.verify()
        lines = await log.lines()
        buf = io.StringIO()
        await log.export_jsonl(buf)
    assert report.ok, report
    assert report.lines_checked == len(lines) == sum(expected.values())
    assert [x.seq for x in lines] == list(range(1, len(lines) + 1))
    assert Counter(x.session for x in lines) == expected
    assert verify_lines(buf.getvalue().splitlines()).ok
    return [x.session for x in lines]


async def test_two_instances_interleave_into_one_valid_chain(tmp_path: Path) -> None:
    db = tmp_path / "audit.sqlite3"
    async with AuditLog.open(db) as a, AuditLog.open(db) as b:
        await asyncio.gather(_burst(a, "a", N), _burst(b, "b", N))
    await _assert_contiguous(db, Counter({"a": N, "b": N}))


async def test_instances_and_a_subprocess_share_one_chain(tmp_path: Path) -> None:
    db = tmp_path / "audit.sqlite3"
    async with AuditLog.open(db) as a, AuditLog.open(db) as b:
        await a.append("run", session="setup")
        proc = await _spawn_writer(db, N, "proc")
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        await asyncio.gather(_burst(a, "a", N), _burst(b, "b", N))
        assert await asyncio.wait_for(proc.wait(), 60) == 0
    await _assert_contiguous(db, Counter({"setup": 1, "a": N, "b": N, "proc": N}))


async def test_several_processes_start_a_new_chain_at_once(tmp_path: Path) -> None:
    db = tmp_path / "fresh" / "audit.sqlite3"
    procs = await asyncio.gather(*(_spawn_writer(db, 15, f"p{i}") for i in range(3)))
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
    codes = await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), 60)
    assert codes == [0, 0, 0]
    await _assert_contiguous(db, Counter({"p0": 15, "p1": 15, "p2": 15}))


async def test_verify_during_writes_sees_a_consistent_snapshot(tmp_path: Path) -> None:
    db = tmp_path / "audit.sqlite3"
    async with AuditLog.open(db) as writer, AuditLog.open(db) as checker:
        proc = await _spawn_writer(db, N, "proc")
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        writing = asyncio.gather(_burst(writer, "w", N), proc.wait())
        reports = []
        while not writing.done():
            reports.append(await checker.verify())
            await asyncio.sleep(0)
        await writing
        reports.append(await checker.verify())
    assert all(r.ok for r in reports), [r for r in reports if not r.ok][:1]
    assert reports[-1].lines_checked == 2 * N
