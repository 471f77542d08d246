"""The ACP session list: each session's title is its last run's task, one line, shown."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from app.acp import history


def test_a_title_is_one_line_with_its_control_characters_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task's newline and ESC went into the editor's session list as they were."""
    run = SimpleNamespace(
        session="s1", task="fix\nthe \x1b[31mparser", finalized="2026-12-06", extra={}
    )
    monkeypatch.setattr(history, "manifests", lambda repo: [run])
    (info,) = history.session_infos(tmp_path)
    assert info.title is not None
    assert "\n" not in info.title and "\x1b" not in info.title
    assert info.title.startswith("fix") and info.title.endswith("parser")
