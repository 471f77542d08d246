"""The base of every pane: a bordered box that redraws when the theme changes."""

from __future__ import annotations

from rich.errors import StyleSyntaxError
from rich.style import Style
from textual.containers import Vertical
from textual.theme import Theme


def style_of(colour: str, *, bold: bool = False, dim: bool = False, bg: bool = False) -> Style:
    """A Rich style from a theme colour; an unusable colour gives a plain style."""
    try:
        if bg:
            return Style(bgcolor=colour or None, bold=bold or None, dim=dim or None)
        return Style(color=colour or None, bold=bold or None, dim=dim or None)
    except (StyleSyntaxError, ValueError):
        return Style(bold=bold or None, dim=dim or None)


class Pane(Vertical):
    """Panes draw their content from a model with the theme's colours (``colour``)."""

    ALLOW_MAXIMIZE = True  # "z" or the palette's Budget shows one pane full screen

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, self._theme_changed)
        self.redraw()

    def _theme_changed(self, theme: Theme) -> None:
        self.redraw()

    def colour(self, name: str) -> str:
        return self.app.theme_variables.get(name, "")

    def style(self, name: str, *, bold: bool = False, bg: bool = False) -> Style:
        return style_of(self.colour(name), bold=bold, bg=bg)

    def redraw(self) -> None:
        """Render the model again (new theme, new data)."""
