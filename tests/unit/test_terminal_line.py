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
