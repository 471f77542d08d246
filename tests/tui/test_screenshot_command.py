"""The palette's Screenshot says where it saved, or why it could not, in plain words
(Textual's toast showed its markup, and gave no reason for a missing ``~/Downloads``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.notifications import Notify

from tests.tui.helpers import Messages, settle


async def test_a_screenshot_is_saved_where_it_says(
    make_app: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, here = tmp_path / "home", tmp_path / "here"
    home.mkdir()
    here.mkdir()
    monkeypatch.setenv("HOME", str(home))  # (no ~/Downloads)
    monkeypatch.chdir(here)
    seen = Messages()
    app = make_app(task=None)
    async with app.run_test(size=(100, 30), message_hook=seen) as pilot:
        await settle(pilot)
        app.action_screenshot()
        app.action_screenshot(path=str(tmp_path / "nowhere"))
        await settle(pilot)
    notes = [m.notification.message for m in seen.of(Notify)]
    saved = [n for n in notes if n.startswith("screenshot saved: ")]
    assert len(saved) == 1 and "[" not in saved[0]
    assert Path(saved[0].removeprefix("screenshot saved: ")).parent == here
    assert any(
        n.startswith(f"screenshot not saved in {tmp_path / 'nowhere'}: No such file") for n in notes
    ), notes
