"""Which sandbox runner works on this machine: each is tried once on ``true``, strongest
first, and the answer is cached for the process."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from app.workspace.sandbox_runners import RUNNERS, WEAKNESS, Runner, base_env, wrap

PROBE_TIMEOUT_S = 15.0


class SandboxProbe(BaseModel):
    """Which runner this machine allows, and why the stronger ones are not used."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    runner: Runner
    degraded: bool
    #: "" for bwrap; why bwrap (and unshare) could not be used otherwise
    reason: str
    #: each runner → "ok" or why it is unavailable
    runners: dict[str, str]


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
            argv = wrap(runner, ["true"], cwd=cwd, env=base_env("/tmp", "/tmp"), ro=())
            try:
                proc = subprocess.run(
                    argv,
                    cwd=cwd,
                    env=base_env("/tmp", "/tmp"),
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
    reason = "" if runner == "bwrap" else degraded_reason(runner, status)
    return SandboxProbe(runner=runner, degraded=runner != "bwrap", reason=reason, runners=status)


def degraded_reason(runner: Runner, status: Mapping[str, str]) -> str:
    """Why every stronger runner is unavailable, and what ``runner`` does not confine."""
    stronger = [status[r] for r in RUNNERS[: RUNNERS.index(runner)] if status.get(r) != "ok"]
    why = "; ".join(stronger) or "a weaker runner was asked for"
    return f"{why}; using {runner} ({WEAKNESS[runner]})"


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


__all__ = ["PROBE_TIMEOUT_S", "SandboxProbe", "degraded_reason", "probe_sandbox"]
