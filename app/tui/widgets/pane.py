"""The base of every pane: a bordered box that redraws when the theme changes."""

from __future__ import annotations

from functools import lru_cache
from typing import Self

from rich.color import ColorParseError
from rich.errors import StyleSyntaxError
from rich.style import Style
from textual.containers import Vertical
from textual.geometry import Region
from textual.theme import Theme

from app.tui.safe import literal


@lru_cache(maxsize=512)
def style_of(colour: str, *, bold: bool = False, dim: bool = False, bg: bool = False) -> Style:
    """A Rich style from a theme colour; an unusable colour gives a plain style.

    One object per distinct style (a theme has a few dozen): the panes keep thousands of
    styled lines, and a style of their own per span made every full garbage collection
    walk ~20,000 more objects."""
    try:
        if bg:
            return Style(bgcolor=colour or None, bold=bold or None, dim=dim or None)
        return Style(color=colour or None, bold=bold or None, dim=dim or None)
    except (StyleSyntaxError, ColorParseError, ValueError):
        return Style(bold=bold or None, dim=dim or None)


class Pane(Vertical):
    """Panes draw their content from a model with the theme's colours (``colour``)."""

    ALLOW_MAXIMIZE = True  # "z" or the palette's Budget shows one pane full screen

    #: set while :meth:`set_titles` assigns them: the refresh they ask for is the edges'
    _edges_only = False
    #: what :meth:`set_titles` set last
    _titles: tuple[str, str] | None = None

    def set_titles(self, title: str, subtitle: str = "") -> None:
        """Set the border's title and subtitle; only the border's top and bottom rows
        are drawn again, and nothing when neither changed.

        Textual's setters refresh the whole pane: every row of it, and of every child
        behind it, is composed again. A pane whose counts change with each frame (the
        requests, the audit log, the tests' output) would redraw in full for a number in
        its border: under a gateway's load that was a third of the rows each frame drew.

        Both are plain text, never markup: they carry a file path from a model's diff,
        the filter the user typed (``[/x]`` there raised MarkupError and ended the app).
        """
        if self._titles == (title, subtitle):
            return
        self._titles = (title, subtitle)
        self._edges_only = True
        try:
            self.border_title = literal(title)
            self.border_subtitle = literal(subtitle)
        finally:
            self._edges_only = False

    def refresh(
        self,
        *regions: Region,
        repaint: bool = True,
        layout: bool = False,
        recompose: bool = False,
    ) -> Self:
        if self._edges_only and not (regions or layout or recompose):
            # the border's rows, in the content's coordinates (which refresh takes)
            x, y = -self.content_offset.x, -self.content_offset.y
            width, height = self.outer_size
            regions = (Region(x, y, width, 1), Region(x, y + max(height - 1, 0), width, 1))
        return super().refresh(*regions, repaint=repaint, layout=layout, recompose=recompose)

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
