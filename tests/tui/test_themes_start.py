"""A theme given at start (SwitchyardApp._start_theme: no second parse of the stylesheets)
is the theme Textual's own watcher sets: the same classes, the same variables, the same
screen, to the character and colour. The switched side is also the check that every pane
follows a theme chosen at run time (the budget pane's "no spend yet" kept the old theme's
colour: its redraw compared the text without its base style)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.tui.helpers import settle, until

SIZE = (120, 40)
THEMES = ("switchyard-dark", "switchyard-light", "switchyard-high-contrast")


async def _seen(app: Any, *, switch_to: str | None = None) -> dict[str, Any]:
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.home.header.session, what="the session on screen")
        if switch_to is not None:
            app.theme = switch_to  # Textual's way: the watcher, a reparse
        await settle(pilot)
        return {
            "theme": app.theme,
            "classes": sorted(app.classes),
            "variables": dict(app.stylesheet._variables),
            "screen": app.export_screenshot(),
        }


@pytest.mark.parametrize("theme", THEMES)
async def test_a_theme_given_at_start_is_the_theme_textual_sets(make_app: Any, theme: str) -> None:
    other = "switchyard-light" if theme == "switchyard-dark" else "switchyard-dark"
    started = await _seen(make_app(theme=theme, task=None))
    switched = await _seen(make_app(theme=other, task=None), switch_to=theme)
    assert started["theme"] == switched["theme"] == theme
    assert started["classes"] == switched["classes"]
    assert started["variables"] == switched["variables"]
    assert started["screen"] == switched["screen"]
