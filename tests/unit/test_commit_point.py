"""``to_the_end``: work past a commit point ends however often its caller is cancelled."""

from __future__ import annotations

import asyncio

import pytest

from app.commit_point import to_the_end


def test_cancels_wait_for_the_work_and_are_taken_back() -> None:
    async def main() -> tuple[str, int, int]:
        started, release = asyncio.Event(), asyncio.Event()

        async def work() -> str:
            started.set()
            await release.wait()
            return "landed"

        async def caller() -> tuple[str, int]:
            return await to_the_end(work())

        task = asyncio.create_task(caller())
        await started.wait()
        task.cancel()  # Ctrl-C, then the hang-up's stop: both wait
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.sleep(0)
        assert not task.done()
        release.set()
        result, cancels = await task
        return result, cancels, task.cancelling()

    assert asyncio.run(main()) == ("landed", 2, 0)


def test_the_works_own_error_and_its_own_cancel_are_its_outcome() -> None:
    async def fails() -> None:
        await asyncio.sleep(0)
        raise ValueError("git broke")

    async def cancelled() -> None:
        current = asyncio.current_task()
        assert current is not None
        current.cancel()
        await asyncio.sleep(0)

    with pytest.raises(ValueError, match="git broke"):
        asyncio.run(to_the_end(fails()))
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(to_the_end(cancelled()))
