"""Reservation ids: 32 hex digits, unique across processes and machines without a system
call each.

An id was ``secrets.token_hex(16)``, a ``getrandom`` call per reservation (issue 20: the
request path's reservation). Now it is a random 64-bit prefix drawn once per process
(again in a forked child, which would otherwise repeat its parent's ids) and a 64-bit
counter: two processes collide only when their prefixes do (one chance in 2^64 per
pair), and one process never repeats an id. Nothing reads meaning into an id, and it
was never a secret: it is printed, logged and shared with every writer of the ledger.
"""

from __future__ import annotations

import itertools
import os
import secrets

_prefix = ""
_counter: itertools.count[int] = itertools.count()


def _draw() -> None:
    global _prefix, _counter
    _prefix = secrets.token_hex(8)
    _counter = itertools.count(1)


def reservation_id() -> str:
    """A new id, never given before by any process (but by chance)."""
    return f"{_prefix}{next(_counter):016x}"


_draw()
os.register_at_fork(after_in_child=_draw)
