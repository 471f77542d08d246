"""Which sandbox a command may run in (GR-010): the sandbox fails closed.

* bubblewrap works: it is used.
* Only ``unshare`` works: the command runs with no network and writes only in the
  worktree (:mod:`app.workspace.unshare_shim`), a downgrade (no cgroup namespace) that
  needs no opt-in (local_only too) and is audited before
  it runs (GR-005).
* Neither works: the command does not run. Running it anyway, with the network on and
  writes anywhere the user may write, needs an explicit opt-in (``switchyard run
  --allow-unsandboxed`` or the policy's ``[sandbox] allow_unsandboxed``), is audited as a
  downgrade, and is refused under local_only whatever the opt-in says.

:func:`decide_sandbox` is pure: the probe's findings, local_only and the opt-in in, the
decision out. :func:`sandbox_decision_line` is its audit line.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from app.errors import SwitchyardError
from app.workspace.sandbox_probe import SandboxProbe
from app.workspace.sandbox_runners import RUNNERS, Runner

#: a weaker runner than bwrap runs the command (unshare; rlimit after an opt-in)
DEGRADED_CODE = "GR010_SANDBOX_DEGRADED"
#: the command runs with no sandbox at all, because the user opted in
UNSANDBOXED_CODE = "GR010_UNSANDBOXED_OPT_IN"
#: no sandbox works here and nobody opted in: the command does not run
NO_SANDBOX_CODE = "GR010_NO_SANDBOX"
#: no sandbox works here, and local_only forbids running without one, opt-in or not
LOCAL_ONLY_CODE = "GR010_UNSANDBOXED_LOCAL_ONLY"

#: how to get a sandbox back, for the messages
_FIX = (
    "install bubblewrap (e.g. apt-get install bubblewrap) or allow unprivileged user "
    "namespaces, so that bwrap or `unshare` can run"
)


class SandboxError(SwitchyardError):
    """The sandbox could not start the command (not a failure of the command itself)."""


class SandboxUnavailable(SandboxError):
    """No sandbox the rules allow can run the command here; it was not started."""


class SandboxDecision(BaseModel):
    """Where the command runs, or why it must not run at all."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: the runner to use; None: the command must not run
    runner: Runner | None
    degraded: bool
    #: "" for bwrap; otherwise why a weaker runner, or why none
    reason: str
    reason_codes: list[str]
    #: who allowed the run with no sandbox (None: nobody, or it was not needed)
    opt_in: str | None = None
    #: each runner → "ok" or why it is unavailable (the probe's findings)
    runners: dict[str, str]
    local_only: bool = False

    @property
    def refused(self) -> bool:
        return self.runner is None


def decide_sandbox(
    probe: SandboxProbe, *, local_only: bool, opt_in: str | None = None
) -> SandboxDecision:
    """The runner for a command, given what works here (``probe``), local_only and who,
    if anyone, opted in to running with no sandbox (``opt_in``, e.g. the flag's name)."""
    common: dict[str, Any] = {"runners": dict(probe.runners), "local_only": local_only}
    if probe.runner == "bwrap":
        return SandboxDecision(runner="bwrap", degraded=False, reason="", reason_codes=[], **common)
    if probe.runner == "unshare":
        return SandboxDecision(
            runner="unshare",
            degraded=True,
            reason=probe.reason,
            reason_codes=[DEGRADED_CODE],
            **common,
        )
    why = "; ".join(probe.runners.get(r, f"{r} was not probed") for r in RUNNERS[:2])
    if local_only:
        return SandboxDecision(
            runner=None,
            degraded=True,
            reason=(
                f"no sandbox can run the test command here ({why}); running it without one "
                "leaves the network on and is refused under local_only, even with "
                f"--allow-unsandboxed (GR-009, GR-010): {_FIX}"
            ),
            reason_codes=[LOCAL_ONLY_CODE],
            opt_in=opt_in,
            **common,
        )
    if opt_in is None:
        return SandboxDecision(
            runner=None,
            degraded=True,
            reason=(
                f"no sandbox can run the test command here ({why}), so it was not run "
                f"(GR-010): {_FIX}; or allow a run with no sandbox (network on, writes "
                "unconfined) with `switchyard run --allow-unsandboxed` or "
                "`allow_unsandboxed = true` under [sandbox] in the policy"
            ),
            reason_codes=[NO_SANDBOX_CODE],
            **common,
        )
    return SandboxDecision(
        runner="rlimit",
        degraded=True,
        reason=f"{probe.reason}; allowed by {opt_in}",
        reason_codes=[DEGRADED_CODE, UNSANDBOXED_CODE],
        opt_in=opt_in,
        **common,
    )


def sandbox_decision_line(decision: SandboxDecision) -> dict[str, Any] | None:
    """The audit line for ``decision``, as keyword arguments of ``append``; None for bwrap.

    A weaker runner is a ``degradation`` (GR-005: written before it runs anything); no
    runner at all is a ``refusal`` (written before the run stops).
    """
    if not decision.degraded:
        return None
    values: dict[str, Any] = {
        "runner": decision.runner,
        "reason": decision.reason,
        "runners": decision.runners,
        "local_only": decision.local_only,
    }
    if decision.opt_in is not None:
        values["opt_in"] = decision.opt_in
    if decision.runner is None:
        return {
            "kind": "refusal",
            "from_": "bwrap",
            "to": None,
            "reason_codes": list(decision.reason_codes),
            "values": values,
            "detail": f"test command not run: {decision.reason}",
        }
    return {
        "kind": "degradation",
        "from_": "bwrap",
        "to": decision.runner,
        "reason_codes": list(decision.reason_codes),
        "values": values,
        "detail": f"sandbox degraded to {decision.runner}: {decision.reason}",
    }


__all__ = [
    "DEGRADED_CODE",
    "LOCAL_ONLY_CODE",
    "NO_SANDBOX_CODE",
    "UNSANDBOXED_CODE",
    "SandboxDecision",
    "SandboxError",
    "SandboxUnavailable",
    "decide_sandbox",
    "sandbox_decision_line",
]
