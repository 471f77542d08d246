"""The ledger's fold (app.router.ledger.spooled.fold): a reservation opened and closed
within one fold is inserted closed, and the tables must end exactly as folding each
record on its own leaves them (where no reservation is ever opened and closed in one
fold): the same rows, the same call ids, the same totals."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.router.ledger.schema import migrate
from app.router.ledger.spooled import encode, fold
from app.spool import Spool

# each reservation id keeps its own fields, as the product's close records repeat them
_SESSIONS = ("s1", "s2")
_DAYS = ("2026-12-01", "2026-12-02")
_PROVIDERS = ("openai", "anthropic")


def _where(i: int) -> list[str]:
    """A reservation's day, session, run, role, model, provider (Mirror.where)."""
    return [_DAYS[i % 2], _SESSIONS[i // 2 % 2], "", "architect", "gpt", _PROVIDERS[i // 4 % 2]]


def _record(op: tuple[Any, ...]) -> list[Any]:
    kind, i = op[0], op[1]
    rid = f"r{i}"
    day, session, run, role, model, provider = _where(i)
    if kind == "r":
        amount = op[2]
        return ["r", rid, session, run, provider, role, model, amount, day,
                f"{day}T10:00:00.000Z", f"{day}T10:10:00.000Z", 1.0e9 + i]  # fmt: skip
    if kind == "c":
        status, cost = op[2], op[3]
        return ["c", rid, status, f"{day}T10:00:01.000Z", cost, "ok", 10, 5, 1.5,
                *_where(i)]  # fmt: skip
    if kind == "x":
        return ["x", rid, f"{day}T10:11:00.000Z", *_where(i)]
    # a call without a reservation
    return ["k", f"{day}T10:00:02.000Z", day, session, run, role, model, provider,
            3, 4, 2.0, op[2], "ok"]  # fmt: skip


_ids = st.integers(0, 3)
# (an amount below zero and a status the tables refuse: records no Switchyard writes, which
# the tables refuse the same way however the records are folded)
_ops = st.one_of(
    st.tuples(st.just("r"), _ids, st.integers(-1, 10**9)),
    st.tuples(
        st.just("c"),
        _ids,
        st.sampled_from(("settled", "released", "cancelled")),
        st.integers(0, 10**9),
    ),
    st.tuples(st.just("x"), _ids),
    st.tuples(st.just("k"), _ids, st.integers(0, 10**9)),
)


def _tables(db: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {
        "reservations": db.execute("SELECT * FROM reservations ORDER BY id").fetchall(),
        "calls": db.execute("SELECT * FROM calls ORDER BY id").fetchall(),
        "totals": db.execute("SELECT * FROM totals ORDER BY scope, key, provider").fetchall(),
    }


def _folded(path: Path, records: list[list[Any]], cuts: set[int]) -> dict[str, Any]:
    """``records`` appended to a fresh ledger's spool, folded after each index in
    ``cuts`` and at the end; the tables then (or the error a fold raised)."""
    db = sqlite3.connect(path, isolation_level=None)
    migrate(db, path)
    spool = Spool(path.with_name(path.name + "-spool"))
    try:
        for n, record in enumerate(records):
            assert spool.acquire(blocking=True) is not None
            try:
                spool.write([encode(record)])
            finally:
                spool.release()
            if n in cuts or n == len(records) - 1:
                db.execute("BEGIN IMMEDIATE")
                try:
                    fold(db, spool)
                except sqlite3.IntegrityError as exc:
                    return {"raised": str(exc)}
                db.execute("COMMIT")
        return _tables(db)
    finally:
        spool.close()
        db.close()


# the cases where a close is not the reservation's first, or has no insert to ride on
_R, _C, _X = ("r", 0, 500), ("c", 0, "settled", 100), ("x", 0)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(_ops, max_size=24), cuts=st.sets(st.integers(0, 23), max_size=4))
@example(ops=[_R, _C, ("c", 0, "released", 7)], cuts=set())  # closed twice
@example(ops=[_R, _X, _C], cuts=set())  # expired, then settled
@example(ops=[_R, _R, _C], cuts=set())  # the id written twice
@example(ops=[_C, _R, _C], cuts=set())  # a close before its reservation
@example(ops=[_R, _C, _R, _C], cuts=set())  # reopened after its close
@example(ops=[_R, _C], cuts={0})  # opened in one fold, closed in the next
# a reservation the tables refuse, then one they take under the same id
@example(ops=[("r", 0, -1), _C, _R, ("c", 0, "released", 7)], cuts=set())
@example(ops=[("r", 0, -1), _C, _R], cuts=set())
@example(ops=[_R, ("c", 0, "cancelled", 1)], cuts=set())  # a close the tables refuse
def test_a_fold_of_many_records_ends_as_folding_each_alone(
    tmp_path_factory: Any, ops: list[tuple[Any, ...]], cuts: set[int]
) -> None:
    records = [_record(op) for op in ops]
    work = tmp_path_factory.mktemp("fold")
    alone = _folded(work / "alone.db", records, set(range(len(records))))
    together = _folded(work / "together.db", records, cuts)
    assert together == alone


def test_a_reservation_settled_in_the_same_fold_is_inserted_closed(tmp_path: Path) -> None:
    """The usual request: opened, then settled before the next fold. The row ends
    settled, the reservation's amount is held nowhere, and the call's cost is spent."""
    records = [_record(("r", 0, 500)), _record(("c", 0, "settled", 120))]
    tables = _folded(tmp_path / "l.db", records, set())
    (row,) = tables["reservations"]
    assert row[-2:] == ("settled", "2026-12-01T10:00:01.000Z")
    assert {(t[0], t[3], t[4]) for t in tables["totals"]} == {
        ("session", 120, 0),
        ("day", 120, 0),
        ("provider_day", 120, 0),
    }
    assert tables == _folded(tmp_path / "alone.db", records, {0})
