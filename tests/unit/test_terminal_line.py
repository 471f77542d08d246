"""The tutor's own lines and the approval prompts read the terminal through one reader: a
prompt that timed out kept a reader waiting, and it took the next question typed, which
was lost (the tutor read with input() beside it)."""

from __future__ import annotations

import asyncio
import os

from app.cli.terminal_decider import _reader_for, terminal_line


async def test_a_withdrawn_prompt_never_takes_the_next_line() -> None:
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "r") as stdin:
        prompt = asyncio.ensure_future(_reader_for(stdin).readline())
        await asyncio.sleep(0.05)
        prompt.cancel()  # the approval prompt timed out: withdrawn
        os.write(write_fd, b"second question\n")
        line = await asyncio.wait_for(terminal_line(stdin), 10)
        assert line == "second question\n"
        os.close(write_fd)
        assert await asyncio.wait_for(terminal_line(stdin), 10) == ""  # the end of input


async def test_a_line_typed_ahead_is_kept_for_the_next_read_and_an_approval_drops_it() -> None:
    """After a withdrawn prompt, the thread read on with nobody asking and dropped the
    tutor's next question; an approval prompt still never takes a line typed before it."""
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "r") as stdin:
        reader = _reader_for(stdin)
        prompt = asyncio.ensure_future(reader.readline())
        await asyncio.sleep(0.05)
        prompt.cancel()
        await asyncio.sleep(0)
        first = asyncio.ensure_future(terminal_line(stdin))
        await asyncio.sleep(0.05)
        os.write(write_fd, b"q1\n")
        assert await asyncio.wait_for(first, 10) == "q1\n"
        os.write(write_fd, b"q2\n")  # typed before the tutor asks again
        for _ in range(100):  # the reader thread takes it with nobody asking
            await asyncio.sleep(0.02)
            if reader._kept:
                break
        assert await asyncio.wait_for(terminal_line(stdin), 10) == "q2\n"
        os.write(write_fd, b"y\n")  # a "y" typed before an approval prompt
        for _ in range(100):
            await asyncio.sleep(0.02)
            if reader._kept:
                break
        reader.flush()  # what the approval prompt does first
        assert reader._kept == []
        os.close(write_fd)
