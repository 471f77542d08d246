"""Work that must end once it has begun (a leaf): a merge git has started, its audit line.

``asyncio.run`` turns the first Ctrl-C into a cancel of the main task, delivered at its
next ``await``; a worker is cancelled when the TUI quits. Past a commit point (git merged
the branch) such a cancel must not cut the work short: the effect stands, so its audit
line and its outcome must too. ``to_the_end`` finishes the work first and then takes
the cancels back (``Task.uncancel``), so the caller returns the outcome as if none had
come, and says how many did.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


async def to_the_end(work: Coroutine[Any, Any, T]) -> tuple[T, int]:
    """``work``'s result (or its exception), however often the caller is cancelled
    meanwhile, and how many cancels came; each is taken back from the calling task."""
    task = asyncio.ensure_future(work)
    cancels = 0
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():  # the work itself was cancelled: that is its outcome
                raise
            # ours (the work may have ended in the same turn: a cancel is not its end)
            cancels += 1
    result = task.result()  # its own exception, if it raised one
    current = asyncio.current_task()
    for _ in range(cancels if current is not None else 0):
        assert current is not None
        current.uncancel()
    return result, cancels
