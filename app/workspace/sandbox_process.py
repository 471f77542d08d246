"""Supervising a sandboxed command: pumping its output line by line, enforcing the time
limit, and killing its whole process group however the run ends."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import signal
from collections import deque
from collections.abc import Awaitable, Callable

from app.counted import counted

#: A line longer than this is passed on in pieces rather than buffered without end.
MAX_LINE_CHARS = 65_536
#: After the command exits, how long stragglers may keep the output pipe open.
DRAIN_GRACE_S = 2.0
#: How often the runner looks whether the command has exited.
POLL_S = 0.05

LineCallback = Callable[[str], Awaitable[None]]


class Output:
    """Keeps the first quarter and the last three quarters of at most ``limit`` chars."""

    def __init__(self, limit: int) -> None:
        self.head_limit = limit // 4
        self.tail_limit = limit - self.head_limit
        self.head: list[str] = []
        self.head_size = 0
        self.tail: deque[str] = deque()
        self.tail_size = 0
        self.dropped = 0

    def add(self, line: str) -> None:
        if not self.tail and self.head_size + len(line) <= self.head_limit:
            self.head.append(line)
            self.head_size += len(line)
            return
        self.tail.append(line)
        self.tail_size += len(line)
        while self.tail_size > self.tail_limit and len(self.tail) > 1:
            self.tail_size -= len(self.tail.popleft())
            self.dropped += 1

    def text(self) -> tuple[str, bool]:
        middle = [f"[… {counted(self.dropped, 'line')} not kept …]\n"] if self.dropped else []
        return "".join([*self.head, *middle, *self.tail]), bool(self.dropped)


async def supervise(
    proc: asyncio.subprocess.Process,
    out: Output,
    on_line: LineCallback | None,
    timeout_s: float,
) -> bool:
    """Pump output until the command ends; True when the time limit killed it.

    The exit is seen by polling ``returncode``: ``Process.wait()`` also waits for the
    output pipe to close, which a straggling background process can hold open for ever.
    """
    assert proc.stdout is not None
    loop = asyncio.get_running_loop()
    pump = asyncio.create_task(_pump(proc.stdout, out, on_line))
    timed_out = False
    try:
        end = loop.time() + timeout_s
        while proc.returncode is None:
            remaining = end - loop.time()
            if remaining <= 0:
                timed_out = True
                break
            if pump.done():  # output closed, command still running
                await asyncio.sleep(min(POLL_S, remaining))
            else:
                await asyncio.wait({pump}, timeout=min(POLL_S, remaining))
            if pump.done() and (exc := pump.exception()) is not None:
                raise exc  # the callback failed: the finally blocks kill the command
        # On a timeout this kills the command; otherwise stragglers holding the pipe.
        kill_group(proc.pid)
        await reaped(proc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(pump), DRAIN_GRACE_S)
    finally:
        if not pump.done():
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
    return timed_out


async def reaped(proc: asyncio.subprocess.Process, limit_s: float = 10.0) -> None:
    """Wait (bounded) until the killed command's exit status is in."""
    for _ in range(int(limit_s / 0.01)):
        if proc.returncode is not None:
            return
        await asyncio.sleep(0.01)


def close_pipe(proc: asyncio.subprocess.Process) -> None:
    # Releases the pipe even if an escaped straggler still holds its other end.
    transport = getattr(proc, "_transport", None)
    if transport is not None:
        with contextlib.suppress(Exception):
            transport.close()


async def _pump(stream: asyncio.StreamReader, out: Output, on_line: LineCallback | None) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    pending = ""

    async def emit(line: str) -> None:
        out.add(line + "\n")
        if on_line is not None:
            await on_line(line)

    while chunk := await stream.read(65_536):
        pending += decoder.decode(chunk)
        *lines, pending = pending.split("\n")
        for line in lines:
            await emit(line)
        while len(pending) > MAX_LINE_CHARS:
            await emit(pending[:MAX_LINE_CHARS])
            pending = pending[MAX_LINE_CHARS:]
    pending += decoder.decode(b"", final=True)
    if pending:
        await emit(pending)


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


__all__ = [
    "DRAIN_GRACE_S",
    "MAX_LINE_CHARS",
    "POLL_S",
    "LineCallback",
    "Output",
    "close_pipe",
    "kill_group",
    "reaped",
    "supervise",
]
