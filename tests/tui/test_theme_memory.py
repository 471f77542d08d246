"""A theme picked in the workbench is its theme at the next start (it was lost), unless
``--theme`` or a setting names one; the file it is kept in is replaced whole, and a
broken or unknown one costs the default theme and a notice, never the start."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
from textual.notifications import Notify

from app.config import load_settings
from app.errors import SwitchyardError
from app.tui import remembered_theme
from app.tui.remembered_theme import ThemeMemory, read_theme, write_theme
from app.tui.themes import DEFAULT_THEME
from tests.tui.helpers import Messages, palette, settle, until


def _notes(seen: Messages) -> list[str]:
    return [m.notification.message for m in seen.of(Notify)]


async def _theme_at_start(make_app: Any, memory: ThemeMemory, **kw: Any) -> tuple[str, Any]:
    """The theme an app starts with (``theme`` None: as ``switchyard tui`` without one),
    and the classes Textual's theme watcher would have set."""
    app = make_app(task=None, theme_memory=memory, **{"theme": None, **kw})
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.session is not None, what="the session")
        return app.theme, set(app.classes)


async def test_a_theme_picked_in_the_palette_is_the_theme_of_the_next_start(
    make_app: Any, tmp_path: Path
) -> None:
    memory = ThemeMemory.in_data_dir(tmp_path / "data")
    app = make_app(task=None, theme=None, theme_memory=memory)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.session is not None, what="the session")
        assert app.theme == DEFAULT_THEME and not memory.path.exists()  # (nothing picked yet)
        await palette(pilot, "switchyard-light")
        assert app.theme == "switchyard-light"
        await until(pilot, lambda: read_theme(memory.path)[0] == "switchyard-light", what="kept")

    theme, classes = await _theme_at_start(make_app, memory)
    assert theme == "switchyard-light" and "-theme-switchyard-light" in classes
    # a theme given at start (--theme, a setting) still wins over the one remembered
    theme, _ = await _theme_at_start(make_app, memory, theme="switchyard-high-contrast")
    assert theme == "switchyard-high-contrast"
    assert json.loads(memory.path.read_text()) == {"theme": "switchyard-light"}


@pytest.mark.parametrize(
    ("stored", "why"),
    [
        ('{"theme": "neon"}', "'neon', is not one of this build"),
        ('{"theme": 5}', "its theme is not a theme's name"),
        ("{not json", "not the JSON the workbench writes"),
        ('["switchyard-light"]', "not the JSON the workbench writes"),
        (b"\xff\xfe", "not the JSON the workbench writes"),
    ],
)
async def test_a_broken_or_unknown_remembered_theme_is_the_default_and_said(
    make_app: Any, tmp_path: Path, stored: str | bytes, why: str
) -> None:
    memory = ThemeMemory.in_data_dir(tmp_path / "data")
    memory.path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(stored, bytes):
        memory.path.write_bytes(stored)
    else:
        memory.path.write_text(stored)
    seen = Messages()
    app = make_app(task=None, theme=None, theme_memory=memory)
    async with app.run_test(size=(120, 40), message_hook=seen) as pilot:
        await until(pilot, lambda: app.session is not None, what="the session")
        await settle(pilot)
        assert app.is_running and app.theme == DEFAULT_THEME
        notes = _notes(seen)
        assert any(
            str(memory.path) in n and why in n and f"{DEFAULT_THEME} instead" in n for n in notes
        ), notes
        # and a pick mends it
        await palette(pilot, "switchyard-light")
        await until(pilot, lambda: read_theme(memory.path) == ("switchyard-light", None))


async def test_a_pick_that_cannot_be_kept_is_said_and_the_app_goes_on(
    make_app: Any, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    memory = ThemeMemory(blocker / "tui.json")  # its folder cannot be made
    seen = Messages()
    app = make_app(task=None, theme=None, theme_memory=memory)
    async with app.run_test(size=(120, 40), message_hook=seen) as pilot:
        await until(pilot, lambda: app.session is not None, what="the session")
        await palette(pilot, "switchyard-light")
        await until(pilot, lambda: any("theme" in n for n in _notes(seen)), what="a word")
        assert app.is_running and app.theme == "switchyard-light"
        assert any("cannot use the folder" in n for n in _notes(seen)), _notes(seen)


async def test_a_pick_under_a_setting_that_names_the_theme_says_which_wins(
    make_app: Any, tmp_path: Path
) -> None:
    memory = ThemeMemory.in_data_dir(tmp_path / "data", pinned_by="SWITCHYARD_THEME")
    seen = Messages()
    app = make_app(task=None, theme="switchyard-dark", theme_memory=memory)
    async with app.run_test(size=(120, 40), message_hook=seen) as pilot:
        await until(pilot, lambda: app.session is not None, what="the session")
        await palette(pilot, "switchyard-light")
        await until(pilot, lambda: read_theme(memory.path)[0] == "switchyard-light")
        assert any("SWITCHYARD_THEME names the theme at each start" in n for n in _notes(seen))


def test_the_file_is_replaced_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tui.json"
    path.write_text('{"theme": "switchyard-dark", "other": 1}\n')
    write_theme(path, "switchyard-light")
    assert json.loads(path.read_text()) == {"theme": "switchyard-light", "other": 1}

    def cut(fd: int) -> None:  # a full disk, a power cut: the write never lands
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(remembered_theme.os, "fsync", cut)
    with pytest.raises(SwitchyardError, match=r"theme switchyard-high-contrast not remembered"):
        write_theme(path, "switchyard-high-contrast")
    assert json.loads(path.read_text()) == {"theme": "switchyard-light", "other": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["tui.json"]  # no temporary file left


def _args(theme: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(theme=theme)


def test_the_command_leaves_the_theme_to_the_memory_unless_a_flag_or_setting_names_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.cli.tui_cmd import _theme

    settings = load_settings()
    theme, memory = _theme(_args(), settings)
    assert theme is None and memory == ThemeMemory(settings.data_dir / "tui.json", None)
    assert _theme(_args("switchyard-light"), settings)[0] == "switchyard-light"

    monkeypatch.setenv("SWITCHYARD_THEME", "switchyard-high-contrast")
    settings = load_settings()
    theme, memory = _theme(_args(), settings)
    assert (theme, memory.pinned_by) == ("switchyard-high-contrast", "SWITCHYARD_THEME")
    assert _theme(_args("switchyard-light"), settings)[0] == "switchyard-light"


async def test_a_pick_under_the_theme_flag_is_told_the_flag_wins_when_given(
    make_app: Any, tmp_path: Path
) -> None:
    """``--theme`` named the theme and a pick in the palette was written without a word,
    then lost at the next start with the flag (a user-audit): the flag pins it as
    ``SWITCHYARD_THEME`` does, and the pick is told when it does not hold."""
    from app.cli.tui_cmd import _theme

    settings = load_settings()
    theme, memory = _theme(_args("switchyard-light"), settings)
    assert (theme, memory.pinned_by) == ("switchyard-light", "--theme")
    seen = Messages()
    app = make_app(task=None, theme=theme, theme_memory=memory)
    async with app.run_test(size=(120, 40), message_hook=seen) as pilot:
        await until(pilot, lambda: app.session is not None, what="the session")
        await palette(pilot, "switchyard-high-contrast")
        await until(pilot, lambda: read_theme(memory.path)[0] == "switchyard-high-contrast")
    said = [n for n in _notes(seen) if "remembered" in n]
    assert said == [
        "theme switchyard-high-contrast remembered, but --theme names the theme at a start with it"
    ]
