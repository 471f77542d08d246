"""``switchyard run`` as a process: how it ends when stopped by a signal, and when its
evidence folder cannot be written. Real git, SQLite, the embedded model; nothing leaves
loopback (both HTTP runtimes point at closed ports, --local-only)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_workspace_repo import make_repo
from tests.ports import closed_port

ROOT = Path(__file__).resolve().parents[2]
#: what the tester ran as root to be an ordinary user: no capability overrides file modes
AS_A_USER = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--"]


def env() -> dict[str, str]:
    return {
        **os.environ,
        "SWITCHYARD_VLLM_URL": f"http://127.0.0.1:{closed_port()}/v1",
        "SWITCHYARD_LLAMACPP_SERVER_URL": f"http://127.0.0.1:{closed_port()}/v1",
        "SWITCHYARD_N_THREADS": "1",
        "COLUMNS": "200",
    }


def switchyard(*argv: str, prefix: list[str] | None = None) -> list[str]:
    return [*(prefix or []), sys.executable, "-m", "app", *argv]


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return proc.stdout


@pytest.mark.parametrize(
    ("sig", "code", "twice"),
    [(signal.SIGINT, 130, False), (signal.SIGTERM, 143, False), (signal.SIGINT, 130, True)],
    ids=["SIGINT", "SIGTERM", "SIGINT-twice"],
)
def test_a_signal_stops_the_run_with_its_code_and_the_bundle_sealed(
    tmp_path: Path, sig: signal.Signals, code: int, twice: bool
) -> None:
    """SIGTERM ended a run with 130, as Ctrl-C does; 143 (128 + 15) is what a process
    stopped by it ends with (``serve`` says so too). Either way the bundle is sealed and
    no branch or worktree of the run is left. A second Ctrl-C raised KeyboardInterrupt in
    the sealing: no manifest, the worktree and branch left, "sealed" said anyway."""
    repo = make_repo(tmp_path)
    argv = switchyard("run", "fix add", "--repo", str(repo), "--approve", "deny", "--local-only")
    proc = subprocess.Popen(
        [*argv, "--json"],
        cwd=ROOT,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # the progress; a stage's first line: the run is under way
            seen.append(line)
            if line.startswith("architect"):
                proc.send_signal(sig)
                if twice:
                    time.sleep(0.05)
                    proc.send_signal(sig)
                break
        out, rest = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = "".join(seen) + rest
    assert proc.returncode == code, err
    # Not asserted: the "run stopped" line. While the embedded model loads, its loader
    # points stderr at /dev/null for the whole process, and a stop then loses the line.
    assert "Traceback" not in err
    (bundle,) = (repo / ".switchyard" / "runs").iterdir()
    assert (bundle / "manifest.json").is_file()
    # --json still says which run it was and where its sealed bundle is (it printed nothing)
    result = json.loads(out)
    why = {
        signal.SIGINT: "cancelled by the user",
        signal.SIGTERM: "cancelled: the process was terminated (SIGTERM)",
    }
    assert result["outcome"] == "stopped" and result["reason"] == why[sig]
    # no Judge classified the change: unknown, not "not High-Risk" (merge treats it as one)
    assert result["high_risk"] is None
    assert result["run_id"] == bundle.name and result["bundle"] == str(bundle)
    assert result["gate"] is None and result["tests_green"] is False
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert git(repo, "branch", "--format=%(refname:short)").split() == ["main"]


def test_an_evidence_folder_the_user_cannot_write_is_one_line(tmp_path: Path) -> None:
    """``.switchyard/runs`` owned by another user, mode 555: EvidenceBundle.create's
    mkdir raised PermissionError and the run ended with a traceback."""
    prefix: list[str] = []
    if os.geteuid() == 0:  # root writes anywhere: be a user as the tester was
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: no folder is unwritable")
        prefix = AS_A_USER
    repo = make_repo(tmp_path)
    runs = repo / ".switchyard" / "runs"
    runs.mkdir(parents=True)
    runs.chmod(0o555)
    if os.geteuid() == 0:
        os.chown(runs, 65534, -1)
    try:
        proc = subprocess.run(
            switchyard(
                "run", "fix", "--repo", str(repo), "--approve", "deny", "--json", prefix=prefix
            ),
            cwd=ROOT,
            env=env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        runs.chmod(0o755)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"switchyard: cannot create the evidence bundle {runs}/")
    assert lines[0].endswith(": Permission denied")
    assert list(runs.iterdir()) == []
