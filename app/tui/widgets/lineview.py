"""A virtual list of styled lines: only the rows on screen are rendered.

Panes that can grow large (audit lines, test output) keep their own model and hand this
view ready-made ``Text`` lines; a 10k-line flood costs one append, not 10k widgets.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text
from textual.cache import LRUCache
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from app.tui.safe import clean_line

#: rendered lines a view keeps
CACHED_LINES = 256


def _ready(line: Text) -> Text:
    """A line as the view draws it: tabs expanded, and control characters shown rather
    than sent to the terminal (a newline in an audit detail moved the cursor: see
    app/shown.py)."""
    clean_line(line)  # first: a tab stops where the shown characters put it
    line.expand_tabs()
    return line


class LineView(ScrollView, can_focus=True):
    DEFAULT_CSS = """
    LineView { height: 1fr; background: $surface; }
    """

    def __init__(
        self,
        *,
        follow: bool = True,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        #: keep the newest line in view while the user has not scrolled up
        self.follow = follow
        #: sticky: true until the user scrolls away from the end, true again at the end
        self._at_end = True
        self._lines: list[Text] = []
        #: per line, how many times it was rewritten (part of its cache key)
        self._versions: list[int] = []
        self._width = 0
        # Rendered lines, for scrolling back and forth over the same stretch: a strip is
        # a dozen objects the garbage collector walks, so not many more than a tall
        # screen holds (1,024 per view made ~25,000 objects of a gateway's heap).
        self._cache: LRUCache[tuple[int, int, Style], Strip] = LRUCache(CACHED_LINES)

    @property
    def line_count(self) -> int:
        return len(self._lines)

    @property
    def lines(self) -> list[Text]:
        return self._lines

    def plain_lines(self) -> list[str]:
        return [line.plain for line in self._lines]

    def set_lines(self, lines: Iterable[Text]) -> None:
        self._lines = [_ready(line) for line in lines]
        self._versions = [0] * len(self._lines)
        self._width = max((cell_len(t.plain) for t in self._lines), default=0)
        self._cache.clear()
        self._resize()
        if self.follow:
            self._at_end = True
            self._to_end()
        else:
            self.scroll_to(0, 0, animate=False, immediate=True)

    def append(self, lines: Iterable[Text]) -> None:
        new = [_ready(line) for line in lines]
        if not new:
            return
        self._lines.extend(new)
        self._versions.extend([0] * len(new))
        self._width = max(self._width, max(cell_len(t.plain) for t in new))
        self._resize()
        # Decided by where the user left the view, not by geometry that a pending
        # refresh has not caught up with yet.
        if self.follow and self._at_end:
            self._to_end()

    def _to_end(self) -> None:
        # At once (forced: the scrollbar may not be laid out yet), since a screen under a
        # modal may not refresh for a while; and again after the next refresh, when a
        # scrollbar that just appeared has taken its row.
        self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True, force=True)
        self.call_after_refresh(self._follow_up)

    def _follow_up(self) -> None:
        if self.follow and self._at_end:
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True, force=True)

    def on_resize(self) -> None:
        if self.follow and self._at_end:
            self._to_end()

    def watch_show_horizontal_scrollbar(self, shown: bool) -> None:
        # The scrollbar takes a row from the view: the end moved down by one.
        self._follow_up()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if new_value >= self.max_scroll_y:
            self._at_end = True
        elif new_value < old_value:
            self._at_end = False  # the user scrolled up: stop following

    def replace(self, index: int, line: Text) -> None:
        """Rewrite line ``index``: only that line is rendered again."""
        _ready(line)
        self._lines[index] = line
        self._versions[index] += 1
        width = cell_len(line.plain)
        if width > self._width:
            self._width = width
            self._resize()
        else:
            self.refresh()

    def remove_lines(self, indices: Iterable[int]) -> None:
        """Forget the lines at ``indices``; the others keep their text and move up (a pane
        that keeps only its newest lines drops its oldest without formatting the rest
        again: 5,000 audit lines formatted anew cost a 0.3-0.5 s pause under load). The
        width stays the widest seen until the next :meth:`set_lines`."""
        gone = set(indices)
        if not gone:
            return
        above = sum(1 for i in gone if i < self.scroll_offset.y)
        keep = [i for i in range(len(self._lines)) if i not in gone]
        self._lines = [self._lines[i] for i in keep]
        self._versions = [self._versions[i] for i in keep]
        self._cache.clear()  # keyed by index
        self._resize()
        if self.follow and self._at_end:
            self._to_end()
        else:  # the lines in view stay in view
            y = max(self.scroll_offset.y - above, 0)
            self.scroll_to(y=y, animate=False, immediate=True, force=True)

    def replace_last(self, line: Text) -> None:
        """Rewrite the newest line (a partial line of streamed output)."""
        if not self._lines:
            self.append([line])
            return
        self._lines[-1] = _ready(line)
        self._width = max(self._width, cell_len(line.plain))
        self._cache.clear()
        self._resize()

    def clear(self) -> None:
        self.set_lines([])

    def _resize(self) -> None:
        self.virtual_size = Size(self._width, len(self._lines))
        self.refresh()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._cache.clear()

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.scrollable_content_region.width
        base = self.rich_style
        if index >= len(self._lines):
            return Strip.blank(width, base)
        key = (index, self._versions[index], base)
        strip = self._cache.get(key)
        if strip is None:
            text = self._lines[index]
            strip = Strip(text.render(self.app.console), cell_len(text.plain)).apply_style(base)
            self._cache[key] = strip
        return strip.crop_extend(scroll_x, scroll_x + width, base)
