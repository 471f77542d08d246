"""The palette's Screenshot says where it saved, or why it could not, in plain words
(Textual's toast showed its markup, and gave no reason for a missing ``~/Downloads``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.notifications import Notify

from tests.tui.helpers import Messages, palette, settle, until


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


@pytest.mark.parametrize("downloads", [False, True])
async def test_the_palettes_screenshot_takes_the_same_way(
    make_app: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, downloads: bool
) -> None:
    """The palette's Screenshot is Textual's system command, which called its own
    ``deliver_screenshot``: "Failed to save screenshot" without a ``~/Downloads``, and
    its toast in markup when it saved (a user-audit)."""
    home, here = tmp_path / "home", tmp_path / "here"
    home.mkdir()
    here.mkdir()
    if downloads:
        (home / "Downloads").mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(here)
    seen = Messages()
    app = make_app(task=None)
    async with app.run_test(size=(100, 30), message_hook=seen) as pilot:
        await settle(pilot)
        await palette(pilot, "Screenshot")

        def notes() -> list[str]:
            return [m.notification.message for m in seen.of(Notify)]

        await until(pilot, lambda: any("screenshot" in n.lower() for n in notes()), what="a word")
    said = [n for n in notes() if "screenshot" in n.lower()]
    assert len(said) == 1 and said[0].startswith("screenshot saved: "), said
    saved = Path(said[0].removeprefix("screenshot saved: "))
    assert saved.parent == (home / "Downloads" if downloads else here)
    assert saved.suffix == ".svg" and _is_file(saved)


def _is_file(path: Path) -> bool:
    return path.is_file()
