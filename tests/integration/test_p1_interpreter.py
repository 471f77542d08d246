"""P1's two sides run on one interpreter: the LiteLLM venv is made again when it was made
from another Python (bench/p1_router.py, ``other_interpreter``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench import p1_router


def test_a_venv_made_from_ours_runs_on_ours(tmp_path: Path) -> None:
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(tmp_path / "v")], check=True)
    assert p1_router.interpreter() == f"{os.path.realpath(base)} {sys.version.split()[0]}"
    assert p1_router.other_interpreter(tmp_path / "v" / "bin" / "python") is None


def test_a_python_on_another_interpreter_is_told_apart(tmp_path: Path) -> None:
    other = tmp_path / "python"
    other.write_text("#!/bin/sh\necho /opt/other/bin/python3.11 3.11.2\n")
    other.chmod(0o755)
    assert p1_router.other_interpreter(other) == "/opt/other/bin/python3.11 3.11.2"


def test_a_python_that_does_not_start_is_not_taken_for_ours(tmp_path: Path) -> None:
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho no such module >&2\nexit 1\n")
    broken.chmod(0o755)
    told = p1_router.other_interpreter(broken)
    assert told is not None and told.startswith("? (") and "no such module" in told
