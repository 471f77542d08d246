"""A store that cannot be opened is one line on stderr: aiosqlite stopped its thread
without waiting, and the thread then reported to the closed event loop ("Event loop is
closed", ~23 lines of traceback after the clear one)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_an_audit_log_that_is_a_folder_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "audit.sqlite3").mkdir(parents=True)
    policy = str(ROOT / "policy" / "model-policy.toml")
    for argv in (["policy", "simulate", "--policy", policy], ["audit", "verify"]):
        done = subprocess.run(
            [sys.executable, "-m", "app", *argv],
            cwd=ROOT,
            env={**os.environ, "SWITCHYARD_DATA_DIR": str(data)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode != 0
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "cannot open the audit log" in lines[0], done.stderr
