"""The shared widgets' cheap paths: a view that forgets its oldest lines keeps the others'
text, a pane's titles redraw its edges only, one style object per style."""

from __future__ import annotations

import html

import pytest
from rich.text import Text
from textual.app import App, ComposeResult
from textual.geometry import Region
from textual.widget import Widget
from textual.widgets import Static

from app.tui.widgets.lineview import LineView
from app.tui.widgets.pane import Pane, style_of


def screen_text(app: App[None]) -> str:
    """What the screen shows (the screenshot's SVG, its text unescaped)."""
    return html.unescape(app.export_screenshot()).replace("\xa0", " ")


class ViewHost(App[None]):
    def __init__(self, *, follow: bool) -> None:
        super().__init__()
        self.follow = follow

    def compose(self) -> ComposeResult:
        yield LineView(follow=self.follow)


async def test_removed_lines_go_and_the_others_keep_their_text() -> None:
    app = ViewHost(follow=True)
    async with app.run_test(size=(40, 10)) as pilot:
        view = app.query_one(LineView)
        lines = [Text(f"line {i}") for i in range(50)]
        view.set_lines(lines)
        view.replace(10, Text("line 10 again"))
        kept = view.lines[10]
        view.remove_lines([0, 1, 2, 30])
        await pilot.pause()
        assert view.line_count == 46
        assert view.plain_lines()[:2] == ["line 3", "line 4"]
        assert "line 30" not in view.plain_lines()
        assert view.lines[7] is kept  # moved up, not formatted again
        # following: the newest line is still the last one on screen
        assert view.scroll_offset.y == view.max_scroll_y
        assert "line 49" in screen_text(app)
        view.remove_lines([])  # nothing to forget
        assert view.line_count == 46


async def test_a_view_scrolled_back_keeps_its_lines_in_sight_when_older_ones_go() -> None:
    app = ViewHost(follow=False)
    async with app.run_test(size=(40, 10)) as pilot:
        view = app.query_one(LineView)
        view.set_lines(Text(f"line {i}") for i in range(50))
        await pilot.pause()
        view.scroll_to(y=20, animate=False, immediate=True)
        await pilot.pause()
        first = view.plain_lines()[view.scroll_offset.y]
        view.remove_lines(range(5))
        await pilot.pause()
        assert view.plain_lines()[view.scroll_offset.y] == first == "line 20"


class Box(Pane):
    def compose(self) -> ComposeResult:
        yield Static("\n".join(f"row {i}" for i in range(6)))

    def redraw(self) -> None:
        self.set_titles("Box", "0 lines")


class BoxHost(App[None]):
    CSS = "Box { border: round white; height: 10; }"

    def compose(self) -> ComposeResult:
        yield Box()


async def test_a_panes_titles_redraw_its_top_and_bottom_rows_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[tuple[Region, ...]] = []
    whole = Widget.refresh

    def refresh(self: Widget, *regions: Region, **kw: bool) -> Widget:
        if isinstance(self, Box):  # what reaches Textual, after the pane's own refresh
            asked.append(regions)
        return whole(self, *regions, **kw)

    monkeypatch.setattr(Widget, "refresh", refresh)
    app = BoxHost()
    async with app.run_test(size=(40, 12)) as pilot:
        box = app.query_one(Box)
        await pilot.pause()
        assert "0 lines" in screen_text(app)
        asked.clear()
        box.set_titles("Box", "7 lines")
        await pilot.pause()
        width, height = box.outer_size
        # Textual's setters ask for a whole refresh; the pane turns it into its border's
        # top and bottom rows (given in the content's coordinates: the border is at -1)
        edges = (Region(-1, -1, width, 1), Region(-1, height - 2, width, 1))
        assert asked and all(regions == edges for regions in asked)
        shot = screen_text(app)
        assert "7 lines" in shot and "0 lines" not in shot
        asked.clear()
        box.set_titles("Box", "7 lines")  # unchanged: nothing drawn
        assert asked == []
        box.refresh()  # any other refresh is whole, as before
        assert asked == [()]


def test_one_style_object_per_style() -> None:
    assert style_of("#ff0000", bold=True) is style_of("#ff0000", bold=True)
    assert style_of("#ff0000") is not style_of("#ff0000", bold=True)
    assert style_of("not a colour").color is None  # unusable: plain


class DiffHost(App[None]):
    def compose(self) -> ComposeResult:
        from app.tui.panes.diff import DiffPane

        yield DiffPane(id="diff")


async def test_an_empty_diff_pane_says_no_change_landed_once_the_run_ended() -> None:
    """After a run whose attempts all failed to land, the pane still said "no diff yet"
    as if one were coming."""
    from app.tui.panes.diff import DiffPane

    app = DiffHost()
    async with app.run_test(size=(60, 10)) as pilot:
        pane = app.query_one(DiffPane)
        await pilot.pause()
        assert "no diff yet" in screen_text(app)
        pane.finished()
        await pilot.pause()
        assert "no attempt landed a change" in screen_text(app)
        pane.reset()  # the next run
        await pilot.pause()
        assert "no diff yet" in screen_text(app)
        pane.finished(attempted=False)  # it stopped at its plan: there was no attempt
        await pilot.pause()
        assert "the run ended before any attempt" in screen_text(app)


async def test_the_diff_pane_shows_each_cr_and_sends_none_to_the_terminal() -> None:
    """Split at every CR and drawn through ``Text()`` (which drops CRs), a change from LF
    to CRLF showed as two equal lines, and a lone CR cut its line in two (the highlighted
    code of every line below it then one row off)."""
    from app.tui.panes.diff import DiffPane

    diff = (
        "diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n"
        "@@ -1,2 +1,2 @@\n-x = 1\n+x = 1\r\n-y = 2\n+y = 2\rz = 3\n"
    )
    app = DiffHost()
    async with app.run_test(size=(60, 12)) as pilot:
        pane = app.query_one(DiffPane)
        pane.show_diff(1, diff)
        await pilot.pause()
        view = pane.query_one(LineView)
        assert [line.rstrip() for line in view.plain_lines()] == [
            "calc.py  +2 −2",
            "@@ -1,2 +1,2 @@",
            "-x = 1",
            "+x = 1␍",
            "-y = 2",
            "+y = 2␍z = 3",
        ]
        # as drawn: the marks on screen, no control character sent to the terminal
        rows = ["".join(seg.text for seg in view.render_line(y)).rstrip() for y in range(6)]
        assert rows[3] == "+x = 1␍" and rows[5] == "+y = 2␍z = 3"
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in "".join(rows))
        assert screen_text(app).count("␍") == 2
