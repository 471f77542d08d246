"""Fixtures for the TUI tests: UTC local time, a ManualClock, a git repo, an app factory.

The root conftest already isolates SWITCHYARD_DATA_DIR and the XDG config dir.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.clock import ManualClock
from tests.tui.scripted import (
    TASK,
    ScriptedRun,
    make_repo,
    scripted_connect,
    scripted_tutor,
)


@pytest.fixture(autouse=True)
def _answers_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # A Pilot presses a modal's key the moment it opens; the pause that keeps a typist's
    # keys from answering it is tested on its own (test_approval.py).
    from app.tui.screens.approval import ApprovalScreen

    monkeypatch.setattr(ApprovalScreen, "TYPING_PAUSE_S", 0.0)


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The panes show local time; snapshots must not depend on the machine's zone.
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


AppFactory = Callable[..., Any]


@pytest.fixture
def make_app(tmp_path: Path, clock: ManualClock, repo: Path) -> AppFactory:
    """``make_app(run=..., task=..., theme=..., timeout=...)`` → a SwitchyardApp (``theme``
    None and a ``theme_memory``: the theme picked last, as ``switchyard tui`` starts)."""
    from app.tui.app import SwitchyardApp

    def build(
        *,
        run: ScriptedRun | None = None,
        task: str | None = TASK,
        theme: str | None = "switchyard-dark",
        theme_memory: Any = None,
        approval_timeout_s: float = 60.0,
    ) -> SwitchyardApp:
        return SwitchyardApp(
            connect=scripted_connect(
                tmp_path / "data", clock, approval_timeout_s=approval_timeout_s
            ),
            runner=run if run is not None else ScriptedRun(clock),
            tutor=scripted_tutor,
            repo=repo,
            theme=theme,
            theme_memory=theme_memory,
            clock=clock,
            start_task=task,
        )

    return build
