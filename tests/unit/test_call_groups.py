"""The budget meter's breakdown kept per ledger (app/router/ledger/call_groups.py): exact
sums in nano-dollars, the same dicts the SQL made, and a cached point that never goes
back to an older one."""

from __future__ import annotations

from app.router.ledger.call_groups import EMPTY, MAX_SESSIONS, GroupCache, Groups


def test_rows_add_up_exactly_and_read_as_the_grouped_sql_did() -> None:
    groups = EMPTY.plus([("judge", "gpt", "openai", 100_000_000, 1, 0)]).plus(
        [
            ("judge", "gpt", "openai", 200_000_000, 2, 1),
            ("coder", "llama", "local", 0, 5, 0),
            ("coder", "ds", "deepseek", 1, 1, 0),
        ]
    )
    assert groups.sums[("judge", "gpt", "openai")] == (300_000_000, 3, 1)
    assert (groups.cost, groups.calls, groups.failed) == (300_000_001, 9, 1)
    # free groups left out, names in code-point order (SQLite's ORDER BY)
    assert list(groups.by(0).items()) == [("coder", 1e-9), ("judge", 0.3)]
    assert groups.by(1) == {"ds": 1e-9, "gpt": 0.3}
    assert groups.by(2) == {"deepseek": 1e-9, "openai": 0.3}
    assert EMPTY.sums == {}  # (plus never changes what it adds to)


def test_a_point_is_never_replaced_by_an_older_one() -> None:
    cache = GroupCache()
    newer = EMPTY.plus([("r", "m", "p", 5, 1, 0)])
    cache.put("s", 10, newer)
    cache.put("s", 7, EMPTY)  # a read whose snapshot was older finished last
    assert cache.get("s") == (10, newer)
    cache.put("s", 12, EMPTY)
    assert cache.get("s") == (12, EMPTY)


def test_the_least_recently_read_session_goes_first() -> None:
    cache = GroupCache()
    for i in range(MAX_SESSIONS):
        cache.put(f"s{i}", 1, EMPTY)
    cache.put("s0", 2, EMPTY)  # read again: kept
    cache.put("new", 1, EMPTY)
    assert cache.get("s1") is None
    assert cache.get("s0") == (2, EMPTY)
    assert cache.get("new") == (1, Groups())
