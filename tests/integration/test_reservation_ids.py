"""Reservation ids: unique in a process, across processes and across a fork."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from app.router.ledger.ids import reservation_id

HEX32 = re.compile(r"[0-9a-f]{32}")


def test_ids_are_32_hex_digits_and_never_repeat_in_a_process() -> None:
    ids = [reservation_id() for _ in range(10_000)]
    assert all(HEX32.fullmatch(i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: what the parent would give next, had it not forked
        os.close(read)
        os.write(write, "".join(reservation_id() for _ in range(3)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        theirs = pipe.read().decode()
    os.waitpid(pid, 0)
    ours = "".join(reservation_id() for _ in range(3))
    child = [theirs[i : i + 32] for i in range(0, 96, 32)]
    parent = [ours[i : i + 32] for i in range(0, 96, 32)]
    assert len(child) == 3 and all(HEX32.fullmatch(i) for i in child)
    assert not set(child) & set(parent)
    assert child[0][:16] != parent[0][:16]  # a prefix of its own


def test_two_processes_draw_different_prefixes() -> None:
    code = "from app.router.ledger.ids import reservation_id; print(reservation_id())"
    got = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    }
    assert len(got) == 2 and all(HEX32.fullmatch(i) for i in got)
