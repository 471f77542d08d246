"""Work past a commit point ends however often its caller is cancelled: ``to_the_end``
takes the cancels back, ``finish_then_cancel`` lets them go on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from app.commit_point import finish_then_cancel, to_the_end


async def _cancelled_while_working(
    wait: Callable[[Awaitable[str]], Awaitable[Any]], *, same_turn: bool
) -> tuple[asyncio.Task[Any], list[str]]:
    """The caller's task cancelled twice while the work runs (in one turn of the loop,
    or one turn apart), then the work released; the task, once done, and what ran."""
    started, release = asyncio.Event(), asyncio.Event()
    ran: list[str] = []

    async def work() -> str:
        started.set()
        await release.wait()
        ran.append("landed")
        return "landed"

    async def caller() -> Any:
        out = await wait(work())
        ran.append(f"cancelling left: {asyncio.current_task().cancelling()}")  # type: ignore[union-attr]
        return out

    task = asyncio.create_task(caller())
    await started.wait()
    task.cancel()  # Ctrl-C, then the hang-up's stop
    if not same_turn:
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.sleep(0)
    assert not task.done()
    release.set()
    await asyncio.wait([task])
    return task, ran


@pytest.mark.parametrize("same_turn", [True, False])
def test_to_the_end_waits_and_takes_every_cancel_back(same_turn: bool) -> None:
    """Two cancels in one turn deliver one CancelledError: counting those left one
    request standing on the task (a review)."""

    async def main() -> None:
        task, ran = await _cancelled_while_working(to_the_end, same_turn=same_turn)
        assert task.result() == ("landed", True)
        assert ran == ["landed", "cancelling left: 0"]

    asyncio.run(main())


def test_finish_then_cancel_waits_then_lets_the_cancel_go_on() -> None:
    async def main() -> None:
        task, ran = await _cancelled_while_working(finish_then_cancel, same_turn=False)
        assert task.cancelled() and ran == ["landed"]

    asyncio.run(main())


def test_no_cancel_is_no_stop_and_the_works_own_error_and_cancel_are_its_outcome() -> None:
    async def fine() -> str:
        await asyncio.sleep(0)
        return "ok"

    async def fails() -> None:
        await asyncio.sleep(0)
        raise ValueError("git broke")

    async def cancelled() -> None:
        current = asyncio.current_task()
        assert current is not None
        current.cancel()
        await asyncio.sleep(0)

    assert asyncio.run(to_the_end(fine())) == ("ok", False)
    assert asyncio.run(finish_then_cancel(fine())) == "ok"
    for wait in (to_the_end, finish_then_cancel):
        with pytest.raises(ValueError, match="git broke"):
            asyncio.run(wait(fails()))  # type: ignore[operator]
        with pytest.raises(asyncio.CancelledError):
            asyncio.run(wait(cancelled()))  # type: ignore[operator]


@pytest.mark.parametrize("wait", ["to_the_end", "finish_then_cancel"])
def test_a_cancel_asked_before_the_call_and_delivered_in_it_is_not_lost(wait: str) -> None:
    """The caller cancelled before it reached the commit point, the error not delivered
    yet: counting requests since the call began missed it, and the caller ended as if
    never cancelled, with its request left standing (a review)."""

    async def main() -> None:
        ran: list[str] = []

        async def work() -> str:
            await asyncio.sleep(0)
            ran.append("landed")
            return "landed"

        async def caller() -> Any:
            asyncio.current_task().cancel()  # type: ignore[union-attr]  # asked, not delivered
            if wait == "to_the_end":
                out = await to_the_end(work())
            else:
                out = await finish_then_cancel(work())
            ran.append(f"cancelling left: {asyncio.current_task().cancelling()}")  # type: ignore[union-attr]
            return out

        task = asyncio.create_task(caller())
        await asyncio.wait([task])
        if wait == "to_the_end":
            assert task.result() == ("landed", True)
            assert ran == ["landed", "cancelling left: 0"]
        else:
            assert task.cancelled() and ran == ["landed"]

    asyncio.run(main())
