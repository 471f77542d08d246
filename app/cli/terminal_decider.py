"""The CLI's approval prompt: asks on the terminal whether an escalation may leave the machine.

The router only knows the :class:`~app.router.approvals.Decider` protocol; this is the
plain command line's decider (the TUI answers through the bus instead).
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, TextIO

from app.dollars import dollars
from app.router import approvals
from app.router.approvals import ApprovalDecision, ApprovalRequest, Decider, DecisionKind
from app.shown import clean

if TYPE_CHECKING:
    from app.bus import Bus
    from app.config import ApproveMode

#: what a typed answer means; anything else is asked again
_ANSWERS: dict[str, DecisionKind] = {
    "y": "allow_once",
    "yes": "allow_once",
    "a": "allow_session",
    "always": "allow_session",
    "n": "deny",
    "no": "deny",
    "d": "deny_all",
    "deny all": "deny_all",
    "": "deny",  # Enter alone takes the safe default
}


#: The answer is a line, a letter and Enter, and every message says so: "by keypress",
#: with a line read, left a "y" typed alone waiting until the timeout denied it (a user
#: audit). A single key needs the terminal in cbreak mode, which this design cannot make
#: safe: the read of :class:`_Reader` (shared with the tutor's and merge's line prompts)
#: outlives a prompt that timed out, blocked in the kernel, so the terminal would stay in
#: cbreak, without line editing, until some key came; setting the mode back from a
#: background job stops the whole gateway (SIGTTOU) or, with SIGTTOU blocked, overwrites
#: the mode of the shell now in front; and Ctrl-Z would stop the job in cbreak unless
#: SIGTSTP and SIGCONT were caught to set the mode back and again, as editors do, around
#: a read another thread is blocked in. The TUI's modal is the single-key way (--tui).
HOW_TO_ANSWER = "type the letter, then Enter"
PROMPT = (
    "Approve? [y]es once / [a]lways this session / [N]o / [d]eny all, stay local "
    f"({HOW_TO_ANSWER}): "
)


def _describe_reason(reason: dict[str, Any]) -> str:
    code = reason.get("code") or reason.get("reason") or "?"
    rest = ", ".join(f"{k}={v}" for k, v in reason.items() if k not in ("code", "reason"))
    return f"{code} ({rest})" if rest else str(code)


class _Reader:
    """The one reader of a terminal, for every prompt of the process.

    A thread reads a line only when a prompt wants one, and hands it to the prompt asking
    *now*. With a thread blocked on ``readline`` per prompt, a withdrawn prompt's thread
    swallowed the "y" typed for the next request, which then timed out denied. A line
    read while nobody asks is kept for the next reader (the tutor's typed-ahead question
    was dropped), and an approval prompt's :meth:`flush` drops it with what the terminal
    holds: an answer typed for a withdrawn prompt never answers the next approval.

    The thread's read may outlive its prompt (a timeout): after Ctrl-Z and ``bg`` the
    kernel restarted it from the background and stopped the whole process (SIGTTIN), and
    a gateway's every client with it (a review). The thread blocks SIGTTIN, so such a
    read fails (EIO) instead, and reads again once the process is in the foreground.
    """

    def __init__(self, stdin: TextIO) -> None:
        self.stdin = stdin
        self._mutex = threading.Lock()
        self._want = threading.Event()
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[str]] | None = None
        self._eof = False
        self._thread: threading.Thread | None = None
        #: lines read while nobody was asking, oldest first
        self._kept: list[str] = []

    async def readline(self) -> str:
        with self._mutex:
            if self._kept:
                return self._kept.pop(0)
        if self._eof:
            return ""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        with self._mutex:
            self._waiter = (loop, future)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="terminal", daemon=True)
            self._thread.start()
        self._want.set()
        try:
            return await future
        finally:
            with self._mutex:
                if self._waiter is not None and self._waiter[1] is future:
                    self._waiter = None

    def _run(self) -> None:
        if hasattr(signal, "pthread_sigmask"):  # (POSIX; this thread's mask alone)
            # Blocked, a read from the background fails with EIO rather than stopping
            # the process (POSIX read()); the other threads keep the signal's default.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTTIN})
        while True:
            self._want.wait()
            self._want.clear()
            line = self._read_line()
            with self._mutex:
                if not line:
                    self._eof = True
                waiter, self._waiter = self._waiter, None
                if (waiter is None or waiter[1].done()) and line:
                    self._kept.append(line)
            if waiter is not None and not waiter[1].done():
                loop, future = waiter
                loop.call_soon_threadsafe(_answer, future, line)
            if not line:
                return

    def _read_line(self) -> str:
        """The next line, "" at the end of input; never read in the background."""
        retried = False
        while True:
            if in_background(self.stdin):
                # Nobody can type to a background job: wait for fg (no event says it).
                time.sleep(BACKGROUND_POLL_S)
                retried = False
                continue
            try:
                return self.stdin.readline()
            except OSError as exc:
                # EIO: the read began, or was restarted, in the background ("not now",
                # not the end: that denied every later prompt), or the terminal is
                # gone (its other end closed). A gone one fails again in the foreground;
                # one retry tells them apart when fg came between the read and the check.
                if exc.errno != errno.EIO or (retried and not in_background(self.stdin)):
                    return ""
                retried = True
            except ValueError:  # closed under us
                return ""

    def flush(self) -> None:
        """Drop what was typed before the prompt (a stray key is nobody's answer)."""
        with self._mutex:
            self._kept.clear()
        if in_background(self.stdin):
            return  # a background job's tcflush stops the whole process (SIGTTOU)
        try:
            fd = self.stdin.fileno()
        except (AttributeError, OSError, ValueError):
            return
        try:
            import termios
        except ImportError:  # not a POSIX terminal
            return
        try:
            termios.tcflush(fd, termios.TCIFLUSH)
        except (termios.error, OSError):  # not a terminal after all (a pipe)
            return


def in_background(stdin: TextIO) -> bool:
    """``stdin`` is this process's controlling terminal, and the process is not in its
    foreground process group (``switchyard serve &``, a job moved with ``bg``): reading
    it or flushing it stops the whole process (SIGTTIN, SIGTTOU) until ``fg``, every
    client of a gateway with it (a user audit). Not a terminal, or not this process's
    controlling one (no job control applies to it): False."""
    try:
        fd = stdin.fileno()
        return os.tcgetpgrp(fd) != os.getpgrp()
    except (AttributeError, OSError, ValueError):  # (io.UnsupportedOperation is both)
        return False


def _answer(future: asyncio.Future[str], line: str) -> None:
    if not future.done():
        future.set_result(line)


#: how often a read put off in the background looks whether the process is in front again
BACKGROUND_POLL_S = 0.2

_readers: dict[int, _Reader] = {}


def _reader_for(stdin: TextIO) -> _Reader:
    reader = _readers.get(id(stdin))
    if reader is None or reader.stdin is not stdin:
        reader = _readers[id(stdin)] = _Reader(stdin)
    return reader


async def terminal_line(stdin: TextIO) -> str:
    """The next line of ``stdin`` ("" at its end) through the reader every prompt of the
    process shares: a command's own lines (the tutor's questions) and the approval
    prompts never race for the same input."""
    return await _reader_for(stdin).readline()


#: how early a cancellation may come and still be the broker's timeout (its timer and
#: this clock are read at different moments)
TIMEOUT_SLACK_S = 0.05
#: what a prompt waiting for its turn allows each prompt before it beyond its timeout
#: (the broker's cancel of it, the lock handed on)
TURN_SLACK_S = 1.0


class TerminalDecider:
    """Asks on the terminal (the plain CLI without the TUI).

    The prompt goes to stderr so that ``--json`` output on stdout stays clean. Prompts are
    asked one at a time (the gateway's requests come together), each naming its request
    and timed from when it is shown, and a withdrawn one says so; lines are read by one
    reader (:class:`_Reader`). A background job cannot ask: it denies.
    """

    name = "terminal"
    max_tries = 3

    def __init__(self, *, stdin: TextIO | None = None, out: TextIO | None = None) -> None:
        self._stdin = stdin
        self._out = out
        self._turn: asyncio.Lock | None = None
        self._turn_loop: asyncio.AbstractEventLoop | None = None
        #: prompts shown or waiting for their turn
        self._asking = 0

    async def decide(self, req: ApprovalRequest) -> ApprovalDecision:
        stdin = self._stdin if self._stdin is not None else sys.stdin
        out = self._out if self._out is not None else sys.stderr
        if stdin is None or not stdin.isatty():
            return ApprovalDecision(decision="deny", decided_by=self.name, reason="no terminal")
        loop = asyncio.get_running_loop()
        if self._turn is None or self._turn_loop is not loop:
            self._turn, self._turn_loop, self._asking = asyncio.Lock(), loop, 0
        ahead = self._asking
        self._asking += 1
        try:
            if ahead and req.timeout_s:
                # The wait for the terminal is not the human's time: the timeout starts
                # when the prompt is shown. The wait is bounded all the same: the lock
                # is first come, first served, and each prompt before this one ends
                # within its own timeout once shown.
                approvals.waiting_turn(ahead * (req.timeout_s + TURN_SLACK_S))
            async with self._turn:  # one prompt on the terminal at a time
                return await self._turn_taken(req, stdin, out)
        finally:
            self._asking -= 1

    async def _turn_taken(
        self, req: ApprovalRequest, stdin: TextIO, out: TextIO
    ) -> ApprovalDecision:
        # Asked at each prompt, not once at start: a job moves with fg and bg.
        if in_background(stdin):
            return ApprovalDecision(
                decision="deny",
                decided_by=self.name,
                reason="not in the terminal's foreground (a background job): nobody can "
                "be asked; bring it to the foreground (fg) to approve",
            )
        approvals.shown()
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            return await self._ask(req, _reader_for(stdin), out)
        except asyncio.CancelledError:
            # the broker's timeout cancels the prompt as a request gone away does:
            # "withdrawn" for a timeout contradicted the audit's APPROVAL_TIMEOUT
            waited = loop.time() - started
            if req.timeout_s and waited >= req.timeout_s - TIMEOUT_SLACK_S:
                said = f"timed out after {req.timeout_s:g}s: {_who(req)} is denied"
            else:
                said = f"withdrawn: {_who(req)} no longer waits for an answer"
            out.write(f"\n({clean(said, one_line=True)})\n")  # (it names a client)
            out.flush()
            raise

    async def _ask(self, req: ApprovalRequest, reader: _Reader, out: TextIO) -> ApprovalDecision:
        lines = [
            f"Escalation for role {req.role!r} wants to leave the machine ({_who(req)}):",
            f"  model   {req.model} ({req.provider})",
            f"  cost    ~{dollars(req.est_cost_usd)}   budget left {dollars(req.budget_left_usd)}",
        ]
        lines += [f"  trigger {_describe_reason(r)}" for r in req.reasons]
        if req.values:
            lines.append("  values  " + ", ".join(f"{k}={v}" for k, v in req.values.items()))
        if req.timeout_s:
            lines.append(f"  (denied automatically after {req.timeout_s:g}s)")
        # What the human approves must read as it is: a reason's or a value's text cannot
        # move the cursor or restyle the prompt (app/shown.py).
        out.write("\n".join(clean(line, one_line=True) for line in lines) + "\n")
        reader.flush()
        for _ in range(self.max_tries):
            out.write(PROMPT)
            out.flush()
            line = await reader.readline()
            if not line:
                return ApprovalDecision(
                    decision="deny", decided_by=self.name, reason="no answer (end of input)"
                )
            answer = _ANSWERS.get(line.strip().lower())
            if answer is not None:
                return ApprovalDecision(decision=answer, decided_by=self.name, reason="terminal")
            out.write("Please type y, a, n or d, then Enter.\n")
        return ApprovalDecision(decision="deny", decided_by=self.name, reason="no valid answer")


def _who(req: ApprovalRequest) -> str:
    if not req.run:
        return f"session {req.session}"
    # a gateway's request names its client: two agents may be asking at once
    return f"request {req.run} from {req.origin}" if req.origin else f"request {req.run}"


def decider_for(mode: ApproveMode, said: str | None = None, bus: Bus | None = None) -> Decider:
    """``--approve`` on the command line: the core's deciders, with this prompt for ``ask``
    when no UI listens on a bus. ``said``: where the mode was given (``approve_setting``)."""
    return approvals.decider_for(mode, bus, ask=TerminalDecider, said=said)
