"""bench/p1_floor.py at a small count: each floor does the whole of the work its figure
stands for (every line made, chained and stored; every reservation kept), so that a floor
that skipped some would fail here rather than look fast. Its timings are the bench's."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bench import p1_floor

WARM = 200  # main_async's warm-up requests per side


async def test_each_floor_writes_every_line_and_row(tmp_path: Path) -> None:
    res = await p1_floor.main_async(40, 4, tmp_path)

    requests = WARM + 40
    # an escalation line each, and a call line for each but the last (still pending)
    assert res["floor_lines"] == res["journal_lines"] == 2 * requests - 1
    assert res["floor_chain_ok"] and res["journal_chain_ok"] and res["router_audit_ok"]
    assert res["floor_us"]["n"] == res["journal_us"]["n"] == res["router_us"]["n"] == 40

    db = sqlite3.connect(tmp_path / "floor.db")
    statuses = dict(db.execute("SELECT status, COUNT(*) FROM reservations GROUP BY status"))
    assert statuses == {"settled": requests - 1, "live": 1}
    records = p1_floor.journal_records(tmp_path / "floor.journal")
    assert len(records) == requests
    assert all("reserve" in record[0] for record in records)
    assert sum("settled" in record[0] for record in records) == requests - 1


def test_a_torn_journal_record_is_found(tmp_path: Path) -> None:
    journal = p1_floor.JournalFloor(tmp_path / "j")
    journal.timed(3)
    whole = (tmp_path / "j").read_bytes()
    assert len(p1_floor.journal_records(tmp_path / "j")) == 3

    (tmp_path / "j").write_bytes(whole[:-5])
    with pytest.raises(ValueError, match="torn record"):
        p1_floor.journal_records(tmp_path / "j")
