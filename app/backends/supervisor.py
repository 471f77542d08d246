"""Run a local model server until told to stop (``switchyard local serve``).

The child gets its own session (process group), waits to answer its health probe, and
the whole group is taken down on SIGINT/SIGTERM or when it is no longer wanted. Its
environment is never inherited: the caller's (``launcher.serve_env``), else the server
allowlist of :mod:`app.subprocess_env`; the provider keys are removed from either.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import TextIO

from app.backends.http import make_client
from app.backends.probe import PROBE_TIMEOUT_S, probe_endpoint
from app.subprocess_env import server_env, without_secrets

STOP_GRACE_S = 10.0


def wait_healthy(
    base_url: str,
    *,
    deadline: float,
    alive: Callable[[], bool],
    stop: threading.Event,
    interval: float = 0.25,
) -> bool:
    """Poll until the server answers /health (or /v1/models), it dies, or time runs out."""
    # our own child, wherever --host put it: not a call the local_only guard is about.
    # A client per probe, closed after it: a probe left waiting on a server that drips
    # its headers ends with its client, where a shared one piled the waiting threads up
    # until its pool was full and every probe read "down"
    while time.monotonic() < deadline and not stop.is_set():
        if not alive():
            return False
        with make_client(local_only=False, timeout=PROBE_TIMEOUT_S) as client:
            if probe_endpoint("server", base_url, client=client).up:
                return True
        stop.wait(interval)
    return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def stop_process_group(proc: subprocess.Popen[bytes], grace: float = STOP_GRACE_S) -> int:
    """SIGTERM the child's process group, wait, then SIGKILL; returns its exit code."""
    if proc.poll() is None:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    # whether the leader went at once, after the grace or not at all, stragglers in its
    # group (a worker that ignores SIGTERM) must not outlive us: an audit found one alive
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return proc.returncode


@contextmanager
def _stop_on_signals(stop: threading.Event, caught: list[int]) -> Iterator[None]:
    """SIGINT, SIGTERM, SIGHUP (the terminal closed, the SSH link dropped) and SIGQUIT set
    ``stop`` and are noted in ``caught`` (main thread only; elsewhere the caller sets
    ``stop``). The server runs in a session of its own, so a hang-up never reaches it:
    untrapped, SIGHUP ended us and left it serving."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)
        stop.set()

    caught_signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
    saved = {s: signal.signal(s, handler) for s in caught_signals}
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


def supervise(
    argv: list[str],
    base_url: str,
    *,
    log_path: Path,
    timeout_s: float,
    out: TextIO,
    stop: threading.Event | None = None,
    grace_s: float = STOP_GRACE_S,
    env: dict[str, str] | None = None,
    on_ready: Callable[[], None] | None = None,
) -> int:
    """Run a server until it is told to stop. Exit codes: 0 stopped by ``stop`` (or the
    ready callback returned), 130 / 143 stopped by Ctrl-C / SIGTERM (as a process the
    signal ended, and as ``switchyard serve`` exits), 1 it failed to start or died.

    The child gets its own session (process group), so stopping it also stops whatever
    it spawned (vLLM's engine workers), and a Ctrl-C in the terminal reaches us first.
    ``env`` is the child's whole environment (without the provider keys, whatever it
    holds); None: the server allowlist, online (callers that know local_only pass
    ``launcher.serve_env``).
    """
    stop = stop or threading.Event()
    child_env = without_secrets(env) if env is not None else server_env(local_only=False)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    caught: list[int] = []
    with _stop_on_signals(stop, caught), log_path.open("ab") as log:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=child_env,
            )
        except OSError as exc:
            print(f"switchyard: cannot start {argv[0]}: {exc.strerror or exc}", file=out)
            return 1
        try:
            ready = wait_healthy(
                base_url,
                deadline=time.monotonic() + timeout_s,
                alive=lambda: proc.poll() is None,
                stop=stop,
            )
            if not ready:
                if stop.is_set():
                    print("switchyard: stopped before the server was ready", file=out)
                    return _stopped(caught)
                if proc.poll() is not None:
                    print(f"switchyard: the server exited with code {proc.returncode}:", file=out)
                else:
                    print(f"switchyard: the server did not answer within {timeout_s:g}s", file=out)
                tail = _tail(log_path)
                if tail:
                    print(tail, file=out)
                print(f"(full log: {log_path})", file=out)
                return 1
            print(f"ready: {base_url} (pid {proc.pid}); Ctrl-C stops it", file=out, flush=True)
            if on_ready is not None:
                on_ready()
                return 0
            while not stop.is_set():
                if proc.poll() is not None:
                    print(f"switchyard: the server exited with code {proc.returncode}", file=out)
                    print(f"(log: {log_path})", file=out)
                    return 1
                stop.wait(0.5)
            print("stopping the server...", file=out, flush=True)
            return _stopped(caught)
        finally:
            stop_process_group(proc, grace_s)


def _stopped(caught: list[int]) -> int:
    """0 when the caller's ``stop`` ended the server; 128 + the signal when a signal did (a
    script or a service manager reads a Ctrl-C'd server as interrupted, not as done)."""
    return 128 + caught[0] if caught else 0
