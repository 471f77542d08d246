"""The checkpointer's thread, when it cannot do its work: it ended with an error and was
still taken for alive, so no later poke started another and the WAL grew without a
checkpoint for the life of the process (a long-life audit: "disk I/O error" once)."""

from __future__ import annotations

import time
from pathlib import Path

from app.sqlite import Checkpointer


def _ended(cp: Checkpointer) -> bool:
    deadline = time.monotonic() + 20  # (against a hang, not a timing claim)
    while cp._thread is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_checkpointer_that_failed_is_started_again_by_the_next_poke(tmp_path: Path) -> None:
    cp = Checkpointer(
        tmp_path / "audit.db", "NONSENSE; SELECT", idle_s=5.0
    )  # (a pragma that fails)
    cp.poke()
    assert _ended(cp)  # its connection's set-up failed, and it said so
    assert cp.answered == 0
    cp.synchronous = "NORMAL"
    cp.poke()
    deadline = time.monotonic() + 20
    while not cp.caught_up() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cp.caught_up()  # a new thread made the checkpoint
    cp.close()
