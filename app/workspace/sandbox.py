"""Run a build/test command in a sandbox (GR-010): no network, writes only in the worktree.

Runners, strongest first; the first that works on this machine is used:

* ``bwrap``: bubblewrap. The host's root read-only, the worktree writable, a private
  ``/tmp``, ``/run`` and ``/dev``, every namespace unshared (so no network: only the
  sandbox's own loopback), a new session, all capabilities dropped, killed with its
  parent. Well-known secret stores under ``$HOME`` (~/.ssh, ~/.aws, …) are hidden. The
  worktree's ``.git`` file and the ``pinned`` ones (its submodules' ``.git`` files, every
  folder on the way to them made a mount point, which cannot be renamed) are read-only.
* ``unshare``: user, mount, net, IPC, UTS and pid namespaces, the filesystem built as
  bwrap builds it (:mod:`~app.workspace.unshare_shim`: every mount read-only but the
  worktree, private ``/tmp`` and ``/run``, a ``/dev`` of its own, the secret stores
  hidden, every capability dropped). No network, writes only in the worktree; degraded
  only in having no cgroup namespace. (Until an audit forged a green test log through
  it, this runner confined the network alone, with no opt-in.)
* ``rlimit``: a plain subprocess with time and memory limits only, the network on: no
  sandbox at all. Never chosen by default: it needs an explicit opt-in, and is refused
  under local_only (the sandbox fails closed; :mod:`~app.workspace.sandbox_policy`).

Every runner: an environment built from an allowlist (:func:`app.subprocess_env.command_env`:
no provider keys; the hub-offline variables under local_only); a time limit that kills the
whole process group (and, under bwrap and unshare, the whole pid namespace); a memory
limit (RLIMIT_AS); output merged and streamed line by line to an optional async callback.

A degraded runner must be audited before it runs (GR-005): call :func:`probe_sandbox`
first, then :func:`decide_sandbox`, and write :func:`sandbox_decision_line` (or
:func:`sandbox_degradation_line` for a probe or result that says ``degraded``).

The parts live in modules of their own, re-exported here: the runners and the command
line and environment each builds (:mod:`~app.workspace.sandbox_runners`), the probe
(:mod:`~app.workspace.sandbox_probe`), which runner the rules allow
(:mod:`~app.workspace.sandbox_policy`) and the supervision of the running command
(:mod:`~app.workspace.sandbox_process`).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from app.subprocess_env import command_env
from app.workspace.sandbox_policy import (
    DEGRADED_CODE,
    LOCAL_ONLY_CODE,
    NO_SANDBOX_CODE,
    UNSANDBOXED_CODE,
    SandboxDecision,
    SandboxError,
    SandboxUnavailable,
    decide_sandbox,
    sandbox_decision_line,
)
from app.workspace.sandbox_probe import (
    PROBE_TIMEOUT_S,
    SandboxProbe,
    degraded_reason,
    probe_sandbox,
)
from app.workspace.sandbox_process import (
    DRAIN_GRACE_S,
    MAX_LINE_CHARS,
    POLL_S,
    LineCallback,
    Output,
    close_pipe,
    kill_group,
    reaped,
    supervise,
)
from app.workspace.sandbox_runners import (
    MASKED_HOME_PATHS,
    PASSTHROUGH_ENV,
    PRIVATE_MOUNTS,
    RUNNERS,
    WEAKNESS,
    Runner,
    base_env,
    bwrap,
    pin_points,
    with_limits,
    wrap,
)

DEFAULT_TIMEOUT_S = 600.0
DEFAULT_MEMORY_MB = 4096
#: Output kept in the result (the callback still sees every line): a quarter from the
#: start, the rest from the end, where test runners print their summary.
DEFAULT_MAX_OUTPUT_CHARS = 2_000_000

# The names these helpers had before they moved; the unit tests reach them through here.
_base_env = base_env
_wrap = wrap
_bwrap = bwrap
_with_limits = with_limits
_degraded_reason = degraded_reason
_Output = Output


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
    #: why an exit 0 is no pass (pytest's summary counts no test passed: a skip added to
    #: the failing test made the run green, a user audit); empty: the exit code says it
    vacuous: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.vacuous


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
    local_only: bool = False,
    allow_unsandboxed: bool = False,
    secrets: Sequence[str] = (),
    pinned: Sequence[str] = (),
) -> SandboxResult:
    """Run ``argv`` in ``cwd`` (the worktree, the one writable place) and collect its output.

    ``env`` adds to the minimal environment; ``secrets`` names variables (the policy's
    ``api_key_env``) removed from it with the provider keys, and ``local_only`` adds the
    hub-offline variables. ``runner`` forces a runner (tests, or a caller that decided
    with :func:`decide_sandbox`); by default the strongest available is used, but never
    ``rlimit`` (no sandbox) unless ``allow_unsandboxed``, and never ``rlimit`` under
    ``local_only``: :class:`SandboxUnavailable` then, and nothing runs.
    ``readonly_paths`` stay visible read-only under bwrap even where a private mount
    hides them (a repo's ``.venv`` under /tmp, say). ``pinned``: files inside ``cwd``
    (relative POSIX paths: a submodule's ``.git``) that bwrap and unshare keep read-only
    and in place (:func:`~app.workspace.sandbox_runners.pin_points`); one that cannot be
    pinned is a :class:`SandboxError`, and nothing runs. rlimit cannot pin: its caller
    checks them after the command. Cancelling the call kills the command.
    """
    plan = await asyncio.to_thread(
        _prepare,
        argv,
        cwd,
        runner,
        _EnvRules(env or {}, local_only, allow_unsandboxed, tuple(secrets)),
        readonly_paths,
        memory_mb,
        tuple(pinned),
    )
    out = Output(max_output_chars)
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
            timed_out = await supervise(proc, out, on_line, timeout_s)
        finally:
            kill_group(proc.pid)
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await reaped(proc)
            close_pipe(proc)
    finally:
        if plan.private_tmp is not None:
            shutil.rmtree(plan.private_tmp, ignore_errors=True)
    code = proc.returncode if proc.returncode is not None else -signal.SIGKILL
    return _result(argv, plan, code, out, timed_out, started, timeout_s, memory_mb)


def _result(
    argv: Sequence[str],
    plan: _Plan,
    code: int,
    out: Output,
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
class _EnvRules:
    extra: Mapping[str, str]
    local_only: bool
    allow_unsandboxed: bool
    secrets: tuple[str, ...]


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
    rules: _EnvRules,
    readonly_paths: Sequence[Path],
    memory_mb: int | None,
    pinned: tuple[str, ...] = (),
) -> _Plan:
    if not argv:
        raise SandboxError("no command to run")
    cwd = Path(cwd).resolve()
    if not cwd.is_dir():
        raise SandboxError(f"{cwd}: no such directory")
    try:
        pin_points(cwd, pinned)  # (checked for every runner: one that cannot be is refused)
    except ValueError as exc:
        raise SandboxError(f"cannot keep a file read-only in the sandbox (GR-010): {exc}") from None
    probe = probe_sandbox()
    if runner is None:
        # fail closed: the strongest runner, but no sandbox at all only when allowed
        opt_in = "the caller (allow_unsandboxed)" if rules.allow_unsandboxed else None
        decision = decide_sandbox(probe, local_only=rules.local_only, opt_in=opt_in)
        if decision.runner is None:
            raise SandboxUnavailable(decision.reason)
        chosen: Runner = decision.runner
    elif runner == "rlimit" and rules.local_only:
        raise SandboxUnavailable(
            "the rlimit runner leaves the network on: refused under local_only (GR-009, GR-010)"
        )
    else:
        chosen = runner
    if probe.runners.get(chosen) != "ok":
        raise SandboxError(f"sandbox runner {chosen} is unavailable: {probe.runners.get(chosen)}")
    if chosen == "bwrap":
        reason = ""
    elif chosen == probe.runner:
        reason = probe.reason
    else:
        reason = f"{chosen} was asked for; using it ({WEAKNESS[chosen]})"
    # rlimit shares the host's /tmp: give the command a private HOME and TMPDIR (bwrap
    # and unshare mount a private /tmp of their own)
    private_tmp = None if chosen != "rlimit" else tempfile.mkdtemp(prefix="switchyard-sbx-")
    home = private_tmp or "/tmp"
    full_env = command_env(
        home, home, local_only=rules.local_only, extra=rules.extra, secrets=rules.secrets
    )
    full = wrap(chosen, list(argv), cwd=cwd, env=full_env, ro=readonly_paths, pinned=pinned)
    if memory_mb is not None:
        full = with_limits(full, memory_mb)
    return _Plan(full, cwd, full_env, chosen, reason, private_tmp)


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
    "DEFAULT_MAX_OUTPUT_CHARS",
    "DEFAULT_MEMORY_MB",
    "DEFAULT_TIMEOUT_S",
    "DEGRADED_CODE",
    "DRAIN_GRACE_S",
    "LOCAL_ONLY_CODE",
    "MASKED_HOME_PATHS",
    "MAX_LINE_CHARS",
    "NO_SANDBOX_CODE",
    "PASSTHROUGH_ENV",
    "POLL_S",
    "PRIVATE_MOUNTS",
    "PROBE_TIMEOUT_S",
    "RUNNERS",
    "UNSANDBOXED_CODE",
    "LineCallback",
    "Runner",
    "SandboxDecision",
    "SandboxError",
    "SandboxProbe",
    "SandboxResult",
    "SandboxUnavailable",
    "decide_sandbox",
    "probe_sandbox",
    "run_sandboxed",
    "sandbox_decision_line",
    "sandbox_degradation_line",
]
