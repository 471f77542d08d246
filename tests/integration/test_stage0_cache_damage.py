"""Stage0's cache is derived data: a damaged file is made again, and a cache emptied by
another process (other secrets, so other masking) under a built index is built again,
never a traceback until the user deletes it by hand (both were, an audit found)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from app.policy.schema import Policy
from app.stage0.engine import Stage0
from tests.integration.test_stage0_corpus import make_repo

FILES = {"pay.py": "def refund(order):\n    return order.total\n", "README.md": "refunds\n"}


def _query(repo: Path, policy: Policy) -> list[str]:
    with Stage0(repo, policy) as s0:
        return [c.path for c in s0.query("refund").chunks]


def test_a_damaged_snapshot_or_cache_file_is_made_again(tmp_path: Path, policy: Policy) -> None:
    repo = make_repo(tmp_path, FILES)
    first = _query(repo, policy)
    assert "pay.py" in first
    folder = repo / ".switchyard" / "stage0"
    for damage in (b"", b"PK\x03\x04 cut short"):  # a crash's empty file, a cut zip
        (folder / "index.npz").write_bytes(damage)
        assert _query(repo, policy) == first
    cache = folder / "cache.sqlite"
    with sqlite3.connect(cache) as db:  # every page after the first unreadable
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(cache.read_bytes())
    data[4096:] = b"\x5a" * (len(data) - 4096)
    cache.write_bytes(bytes(data))
    (folder / "index.npz").unlink(missing_ok=True)
    assert _query(repo, policy) == first


def test_a_cache_emptied_under_a_built_index_is_built_again(tmp_path: Path, policy: Policy) -> None:
    repo = make_repo(tmp_path, FILES)
    with Stage0(repo, policy) as s0:
        s0.refresh()
        # another Switchyard, with another key in its environment, empties the cache
        with sqlite3.connect(repo / ".switchyard" / "stage0" / "cache.sqlite") as other:
            other.execute("DELETE FROM blob")
            other.execute("UPDATE meta SET value = 'someone else' WHERE key = 'masking'")
        picked = s0.query("refund").chunks
    assert "pay.py" in [c.path for c in picked] and all(c.text for c in picked)
