"""The cyclic garbage collector paused for a batch (grouping lines, replaying them).

Both build hundreds of thousands of small objects that hold no cycles, which reference
counting frees; meanwhile the collector's passes over the growing heap took two thirds
of the time (bench/policy_simulate.py). The pause is process-wide, so it lasts only as
long as the batch, and the collector runs as before afterwards.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
