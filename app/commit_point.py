"""Work that must end once it has begun (a leaf): a merge git has started, its audit line.

``asyncio.run`` turns the first Ctrl-C into a cancel of the main task, delivered at its
next ``await``; a worker is cancelled when the TUI quits; an editor sends session/cancel
and then hangs up. Past a commit point (git merged the branch) such a cancel must not cut
the work short: the effect stands, so its audit line and its report must too. Both ways
here wait for the work however often the waiter is cancelled meanwhile; then
:func:`to_the_end` takes the cancels back (``Task.uncancel``) and returns the outcome as
if none had come, saying whether one did, and :func:`finish_then_cancel` lets the cancel
go on (an editor's turn ends cancelled, the merge done and reported).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


async def _wait_out(task: asyncio.Future[T]) -> int:
    """Until ``task`` ends, however often the waiter is cancelled meanwhile: how many
    CancelledErrors the waiter was delivered (not the work's own)."""
    delivered = 0
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.cancelled():
                delivered += 1  # the waiter's (the work's own cancel ends the loop)
        except Exception:
            pass  # the work's own error: its outcome, read by the caller
    return delivered


def _came(before: int, delivered: int) -> int:
    """The cancels the caller was asked for that this wait took: those asked since it
    began, or the ones delivered during it when more (a cancel asked before the call but
    not yet delivered is delivered here, and counting requests alone missed it: the
    caller ended as if never cancelled, its request left standing; a review)."""
    return max(_cancels_since(before), delivered)


def _cancels_since(before: int) -> int:
    """How many cancels the calling task was asked for since it counted ``before``."""
    current = asyncio.current_task()
    return 0 if current is None else current.cancelling() - before


async def to_the_end(work: Awaitable[T]) -> tuple[T, bool]:
    """``work``'s result (or its exception), however often the caller is cancelled
    meanwhile, and whether it was; the cancels are taken back from the calling task.

    Counted as requests (``Task.cancelling``), not as the errors delivered: two cancels
    in one turn of the loop deliver one CancelledError and left one request standing."""
    task = asyncio.ensure_future(work)
    current = asyncio.current_task()
    before = 0 if current is None else current.cancelling()
    delivered = 0
    try:
        delivered = await _wait_out(task)
    finally:
        came = _came(before, delivered)
        for _ in range(came):
            assert current is not None
            current.uncancel()
    return task.result(), came > 0  # the work's own exception, or its own cancel


async def finish_then_cancel(work: Awaitable[T]) -> T:
    """``work``'s result, after it ended however often the caller was cancelled
    meanwhile; a cancel that came then goes on, and what the work failed with is logged
    rather than lost."""
    task = asyncio.ensure_future(work)
    current = asyncio.current_task()
    before = 0 if current is None else current.cancelling()
    if _came(before, await _wait_out(task)):
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "the work ended in an error while its caller was cancelled: %r", task.exception()
            )
        raise asyncio.CancelledError
    return task.result()
