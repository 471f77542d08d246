"""Run a build/test command in a sandbox (GR-010): no network, writes only in the worktree.

Runners, strongest first; the first that works on this machine is used:

* ``bwrap``: bubblewrap. The host's root read-only, the worktree writable, a private
  ``/tmp``, ``/run`` and ``/dev``, every namespace unshared (so no network: only the
  sandbox's own loopback), a new session, all capabilities dropped, killed with its
  parent. Well-known secret stores under ``$HOME`` (~/.ssh, ~/.aws, …) are hidden.
* ``unshare``: ``unshare -rn`` with a pid namespace. No network, but the filesystem is
  not confined: degraded.
* ``rlimit``: a plain subprocess with time and memory limits only: degraded.

Every runner: a clean, minimal environment; a time limit that kills the whole process
group (and, under bwrap and unshare, the whole pid namespace); a memory limit
(RLIMIT_AS); output merged and streamed line by line to an optional async callback.

A degraded runner must be audited before it runs (GR-005): call :func:`probe_sandbox`
first and write :func:`sandbox_degradation_line` when it says ``degraded``.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from app.errors import SwitchyardError

Runner = Literal["bwrap", "unshare", "rlimit"]
RUNNERS: tuple[Runner, ...] = ("bwrap", "unshare", "rlimit")
DEGRADED_CODE = "GR010_SANDBOX_DEGRADED"

DEFAULT_TIMEOUT_S = 600.0
DEFAULT_MEMORY_MB = 4096
#: Output kept in the result (the callback still sees every line): a quarter from the
#: start, the rest from the end, where test runners print their summary.
DEFAULT_MAX_OUTPUT_CHARS = 2_000_000
#: A line longer than this is passed on in pieces rather than buffered without end.
MAX_LINE_CHARS = 65_536
#: After the command exits, how long stragglers may keep the output pipe open.
DRAIN_GRACE_S = 2.0
#: How often the runner looks whether the command has exited.
POLL_S = 0.05
PROBE_TIMEOUT_S = 15.0

# Secret stores under $HOME that a test has no business reading: hidden under bwrap.
MASKED_HOME_PATHS = (
    ".ssh",
    ".gnupg",
    ".aws",
    ".azure",
    ".kube",
    ".docker",
    ".config/gcloud",
    ".config/gh",
    ".netrc",
    ".git-credentials",
    ".pypirc",
    ".npmrc",
    ".cargo/credentials",
    ".cargo/credentials.toml",
)
# Toolchain locations passed through when set, so `cargo`, `go` and friends still find
# their installs although HOME points into the sandbox.
PASSTHROUGH_ENV = (
    "RUSTUP_HOME",
    "CARGO_HOME",
    "GOROOT",
    "GOPATH",
    "GOMODCACHE",
    "GOFLAGS",
    "JAVA_HOME",
    "VIRTUAL_ENV",
)

_WEAKNESS: dict[Runner, str] = {
    "unshare": "no network, but writes are not confined to the worktree",
    "rlimit": "no network or filesystem isolation: only time and memory limits",
}

LineCallback = Callable[[str], Awaitable[None]]


class SandboxError(SwitchyardError):
    """The sandbox could not start the command (not a failure of the command itself)."""


class SandboxProbe(BaseModel):
    """Which runner this machine allows, and why the stronger ones are not used."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    runner: Runner
    degraded: bool
    #: "" for bwrap; why bwrap (and unshare) could not be used otherwise
    reason: str
    #: each runner → "ok" or why it is unavailable
    runners: dict[str, str]


class SandboxResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    argv: list[str]
    cwd: str
    #: the command's exit code; negative: killed by that signal (-9 after a timeout)
    exit_code: int
    #: stdout and stderr merged, in the order written (truncated in the middle if huge)
    output: str
    timed_out: bool
    runner: Runner
    degraded: bool
    reason: str
    duration_s: float
    timeout_s: float
    memory_mb: int | None
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


# ── probing ──────────────────────────────────────────────────────────────────────────────

_probe_lock = threading.Lock()
_probe_cache: SandboxProbe | None = None


def probe_sandbox(*, refresh: bool = False) -> SandboxProbe:
    """Find the strongest runner that works here. Probed once per process, then cached."""
    global _probe_cache
    with _probe_lock:
        if _probe_cache is None or refresh:
            _probe_cache = _probe()
        return _probe_cache


def _probe() -> SandboxProbe:
    status: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="switchyard-probe-") as tmp:
        cwd = Path(tmp)
        for runner in ("bwrap", "unshare"):
            tool = shutil.which(runner)
            if tool is None:
                status[runner] = f"{runner} is not installed"
                continue
            argv = _wrap(runner, ["true"], cwd=cwd, env=_base_env("/tmp", "/tmp"), ro=())
            try:
                proc = subprocess.run(
                    argv,
                    cwd=cwd,
                    env=_base_env("/tmp", "/tmp"),
                    capture_output=True,
                    text=True,
                    errors="replace",
                    timeout=PROBE_TIMEOUT_S,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                status[runner] = f"{runner} cannot run here: {exc}"
                continue
            if proc.returncode == 0:
                status[runner] = "ok"
            else:
                msg = _first_line(proc.stderr) or f"exit {proc.returncode}"
                status[runner] = f"{runner} is not permitted here: {msg}"
    status["rlimit"] = "ok"
    runner = next(r for r in RUNNERS if status[r] == "ok")
    reason = "" if runner == "bwrap" else _degraded_reason(runner, status)
    return SandboxProbe(runner=runner, degraded=runner != "bwrap", reason=reason, runners=status)


def _degraded_reason(runner: Runner, status: Mapping[str, str]) -> str:
    stronger = [status[r] for r in RUNNERS[: RUNNERS.index(runner)] if status.get(r) != "ok"]
    why = "; ".join(stronger) or "a weaker runner was asked for"
    return f"{why}; using {runner} ({_WEAKNESS[runner]})"


# ── running ──────────────────────────────────────────────────────────────────────────────


async def run_sandboxed(
    argv: Sequence[str],
    *,
    cwd: Path,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int | None = DEFAULT_MEMORY_MB,
    env: Mapping[str, str] | None = None,
    on_line: LineCallback | None = None,
    runner: Runner | None = None,
    readonly_paths: Sequence[Path] = (),
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
) -> SandboxResult:
    """Run ``argv`` in ``cwd`` (the worktree, the one writable place) and collect its output.

    ``env`` adds to the minimal environment. ``runner`` forces a runner (tests, or a
    user who wants a weaker one); by default the strongest available is used.
    ``readonly_paths`` stay visible read-only under bwrap even where a private mount
    hides them (a repo's ``.venv`` under /tmp, say). Cancelling the call kills the command.
    """
    plan = await asyncio.to_thread(_prepare, argv, cwd, runner, env, readonly_paths, memory_mb)
    out = _Output(max_output_chars)
    started = time.monotonic()
    timed_out = False
    try:
        try:
            proc = await asyncio.create_subprocess_exec(
                *plan.argv,
                cwd=plan.cwd,
                env=plan.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: one kill reaches all
            )
        except OSError as exc:
            # As a shell would: 127 not found, 126 not executable; a failed run, not a crash.
            code = 127 if isinstance(exc, FileNotFoundError) else 126
            out.add(f"{argv[0]}: {exc.strerror or exc}\n")
            return _result(argv, plan, code, out, False, started, timeout_s, memory_mb)
        try:
            timed_out = await _supervise(proc, out, on_line, timeout_s)
        finally:
            _kill_group(proc.pid)
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await _reaped(proc)
            _close(proc)
    finally:
        if plan.private_tmp is not None:
            shutil.rmtree(plan.private_tmp, ignore_errors=True)
    code = proc.returncode if proc.returncode is not None else -signal.SIGKILL
    return _result(argv, plan, code, out, timed_out, started, timeout_s, memory_mb)


def _result(
    argv: Sequence[str],
    plan: _Plan,
    code: int,
    out: _Output,
    timed_out: bool,
    started: float,
    timeout_s: float,
    memory_mb: int | None,
) -> SandboxResult:
    text, truncated = out.text()
    return SandboxResult(
        argv=list(argv),
        cwd=str(plan.cwd),
        exit_code=code,
        output=text,
        timed_out=timed_out,
        runner=plan.runner,
        degraded=plan.runner != "bwrap",
        reason=plan.reason,
        duration_s=round(time.monotonic() - started, 3),
        timeout_s=timeout_s,
        memory_mb=memory_mb,
        truncated=truncated,
    )


@dataclass(frozen=True)
class _Plan:
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    runner: Runner
    reason: str
    private_tmp: str | None


def _prepare(
    argv: Sequence[str],
    cwd: Path,
    runner: Runner | None,
    env: Mapping[str, str] | None,
    readonly_paths: Sequence[Path],
    memory_mb: int | None,
) -> _Plan:
    if not argv:
        raise SandboxError("no command to run")
    cwd = Path(cwd).resolve()
    if not cwd.is_dir():
        raise SandboxError(f"{cwd}: no such directory")
    probe = probe_sandbox()
    chosen = runner or probe.runner
    if probe.runners.get(chosen) != "ok":
        raise SandboxError(f"sandbox runner {chosen} is unavailable: {probe.runners.get(chosen)}")
    if chosen == "bwrap":
        reason = ""
    elif chosen == probe.runner:
        reason = probe.reason
    else:
        reason = f"{chosen} was asked for; using it ({_WEAKNESS[chosen]})"
    # Weaker runners share the host's /tmp: give the command a private HOME and TMPDIR.
    private_tmp = None if chosen == "bwrap" else tempfile.mkdtemp(prefix="switchyard-sbx-")
    home = private_tmp or "/tmp"
    full_env = _base_env(home, home)
    full_env.update(env or {})
    full = _wrap(chosen, list(argv), cwd=cwd, env=full_env, ro=readonly_paths)
    if memory_mb is not None:
        full = _with_limits(full, memory_mb)
    return _Plan(full, cwd, full_env, chosen, reason, private_tmp)


async def _supervise(
    proc: asyncio.subprocess.Process,
    out: _Output,
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
        _kill_group(proc.pid)
        await _reaped(proc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(pump), DRAIN_GRACE_S)
    finally:
        if not pump.done():
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
    return timed_out


async def _reaped(proc: asyncio.subprocess.Process, limit_s: float = 10.0) -> None:
    """Wait (bounded) until the killed command's exit status is in."""
    for _ in range(int(limit_s / 0.01)):
        if proc.returncode is not None:
            return
        await asyncio.sleep(0.01)


def _close(proc: asyncio.subprocess.Process) -> None:
    # Releases the pipe even if an escaped straggler still holds its other end.
    transport = getattr(proc, "_transport", None)
    if transport is not None:
        with contextlib.suppress(Exception):
            transport.close()


async def _pump(stream: asyncio.StreamReader, out: _Output, on_line: LineCallback | None) -> None:
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


class _Output:
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
        middle = [f"[… {self.dropped} lines not kept …]\n"] if self.dropped else []
        return "".join([*self.head, *middle, *self.tail]), bool(self.dropped)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


# ── command lines ────────────────────────────────────────────────────────────────────────


def _base_env(home: str, tmp: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH") or "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": tmp,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "TERM": "dumb",
        "NO_COLOR": "1",
        # Test runners stay non-interactive (no watch mode, no prompts) under CI.
        "CI": "true",
    }
    for name in PASSTHROUGH_ENV:
        if os.environ.get(name):
            env[name] = os.environ[name]
    real_home = Path.home()
    for name, sub in (("RUSTUP_HOME", ".rustup"), ("CARGO_HOME", ".cargo")):
        if name not in env and (real_home / sub).is_dir():
            env[name] = str(real_home / sub)
    return env


def _wrap(
    runner: Runner, argv: list[str], *, cwd: Path, env: Mapping[str, str], ro: Sequence[Path]
) -> list[str]:
    if runner == "bwrap":
        return _bwrap(argv, cwd=cwd, env=env, ro=ro)
    if runner == "unshare":
        # A fresh net namespace has its loopback down; bring it up (as bwrap does) so
        # tests that serve on 127.0.0.1 behave alike under both runners.
        shim = [sys.executable, "-c", _LO_UP_SHIM]
        return [
            "unshare",
            "--user",
            "--map-root-user",
            "--net",
            "--pid",
            "--fork",
            "--kill-child",
            *shim,
            *argv,
        ]
    return argv


def _bwrap(argv: list[str], *, cwd: Path, env: Mapping[str, str], ro: Sequence[Path]) -> list[str]:
    out = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    # Private /tmp and /run: the host's service sockets (docker, dbus, ssh-agent) live
    # there, and a read-only bind does not stop connect() on a unix socket.
    out += ["--tmpfs", "/tmp", "--tmpfs", "/run"]
    var_run = Path("/var/run")
    if var_run.is_dir() and not var_run.is_symlink():
        out += ["--tmpfs", "/var/run"]
    # Read-only views first, so the masks below hide secrets inside them too.
    for p in [*ro, *_hidden_toolchain(argv)]:
        if Path(p).exists():
            out += ["--ro-bind", str(p), str(p)]
    # A masked file reads as empty: /dev/null over it (a dev-bind, since plain binds are
    # nodev and would make it unreadable instead; writes to it go nowhere).
    for p in _masked_paths(Path.home()):
        out += ["--tmpfs", str(p)] if p.is_dir() else ["--dev-bind", "/dev/null", str(p)]
    out += ["--bind", str(cwd), str(cwd), "--chdir", str(cwd)]
    out += ["--unshare-all", "--new-session", "--die-with-parent", "--cap-drop", "ALL"]
    out += ["--clearenv"]
    for key, value in env.items():
        out += ["--setenv", key, value]
    return [*out, "--", *argv]


#: mounted private inside the sandbox: whatever lives under them is hidden
PRIVATE_MOUNTS = (Path("/tmp"), Path("/run"), Path("/var/run"))


def _hidden_toolchain(argv: Sequence[str]) -> list[Path]:
    """The interpreter or tool the command needs, where a private mount would hide it.

    A checkout (and its .venv) under /tmp — a CI clone, say — would otherwise vanish
    behind the sandbox's own /tmp, and the command would not even start.
    """
    found = [Path(sys.prefix), Path(sys.base_prefix)]
    exe = shutil.which(argv[0]) if argv else None
    if exe:
        found.append(Path(exe).resolve().parent.parent)
    out: list[Path] = []
    for path in found:
        real = path.resolve()
        hidden = any(real == m or m in real.parents for m in PRIVATE_MOUNTS)
        if hidden and real not in out and real.is_dir():
            out.append(real)
    return out


def _masked_paths(home: Path) -> list[Path]:
    """The secret stores that exist under ``home``, symlinks resolved (a mount needs the
    real path, and the target is what holds the secrets)."""
    out: list[Path] = []
    for rel in MASKED_HOME_PATHS:
        p = home / rel
        if p.exists():
            real = p.resolve()
            if real.is_dir() or real.is_file():
                out.append(real)
    return out


def _with_limits(argv: list[str], memory_mb: int) -> list[str]:
    limit = memory_mb * 1024 * 1024
    prlimit = shutil.which("prlimit")
    if prlimit is not None:
        return [prlimit, f"--as={limit}", "--core=0", "--", *argv]
    # No prlimit: set the limit in a tiny Python shim that then execs the command.
    return [sys.executable, "-c", _RLIMIT_SHIM, str(limit), *argv]


# Runs as argv[0..]: sets RLIMIT_AS and RLIMIT_CORE, then execs the rest.
_RLIMIT_SHIM = (
    "import os,resource,sys\n"
    "n=int(sys.argv[1])\n"
    "resource.setrlimit(resource.RLIMIT_AS,(n,n))\n"
    "resource.setrlimit(resource.RLIMIT_CORE,(0,0))\n"
    "try:\n"
    " os.execvp(sys.argv[2],sys.argv[2:])\n"
    "except OSError as e:\n"
    " sys.stderr.write(f'{sys.argv[2]}: {e.strerror}\\n')\n"
    " sys.exit(127)"
)

# Brings lo up (SIOCGIFFLAGS/SIOCSIFFLAGS, IFF_UP) in the new net namespace, then execs.
_LO_UP_SHIM = (
    "import fcntl,os,socket,struct,sys\n"
    "try:\n"
    " s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
    " f=struct.unpack('16sh',fcntl.ioctl(s,0x8913,struct.pack('16sh',b'lo',0)))[1]\n"
    " fcntl.ioctl(s,0x8914,struct.pack('16sh',b'lo',f|1))\n"
    " s.close()\n"
    "except OSError:\n"
    " pass\n"
    "try:\n"
    " os.execvp(sys.argv[1],sys.argv[1:])\n"
    "except OSError as e:\n"
    " sys.stderr.write(f'{sys.argv[1]}: {e.strerror}\\n')\n"
    " sys.exit(127)"
)


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


# ── audit ────────────────────────────────────────────────────────────────────────────────


def sandbox_degradation_line(result: SandboxResult | SandboxProbe) -> dict[str, Any]:
    """The GR-005 audit line for a weaker runner, as keyword arguments of ``append``.

    ``await audit.append(**sandbox_degradation_line(probe), session=..., run=...)``,
    written before the weaker runner runs anything.
    """
    if not result.degraded:
        raise ValueError("the sandbox is not degraded: nothing to audit")
    return {
        "kind": "degradation",
        "from_": "bwrap",
        "to": result.runner,
        "reason_codes": [DEGRADED_CODE],
        "values": {"runner": result.runner, "reason": result.reason},
        "detail": f"sandbox degraded to {result.runner}: {result.reason}",
    }


__all__ = [
    "DEGRADED_CODE",
    "RUNNERS",
    "Runner",
    "SandboxError",
    "SandboxProbe",
    "SandboxResult",
    "probe_sandbox",
    "run_sandboxed",
    "sandbox_degradation_line",
]
