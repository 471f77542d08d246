"""The indexing progress bar: only for big jobs, and only on a terminal."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from app.cli import stage0_cmd
from app.cli.stage0_cmd import PROGRESS_MIN, _Progress


def test_small_jobs_show_no_bar() -> None:
    p = _Progress()
    p("scan", 0, PROGRESS_MIN - 1)
    p("scan", PROGRESS_MIN - 1, PROGRESS_MIN - 1)
    assert p._bar is None
    p.close()


def test_big_jobs_show_one_task_per_phase(capsys: pytest.CaptureFixture[str]) -> None:
    p = _Progress()
    p("scan", 0, 1000)
    p("scan", 500, 1000)
    p("index", 10, 400)
    assert p._bar is not None and set(p._tasks) == {"scan", "index"}
    p.close()
    assert capsys.readouterr().out == ""  # never on stdout (it may carry --json)


def test_no_progress_object_when_stderr_is_not_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[object] = []

    def fake_engine(args: argparse.Namespace, progress: object) -> object:
        seen.append(progress)
        raise SystemExit(0)

    monkeypatch.setattr(stage0_cmd, "_engine", fake_engine)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    with pytest.raises(SystemExit):
        stage0_cmd._with_engine(argparse.Namespace())
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    with pytest.raises(SystemExit):
        stage0_cmd._with_engine(argparse.Namespace())
    assert seen[0] is None and isinstance(seen[1], _Progress)
