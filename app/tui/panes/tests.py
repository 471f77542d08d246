"""Tests: the sandboxed test command's live output, with pass/fail per loop and the
runner (bwrap, unshare, rlimit …) that ran it.

Output arrives in chunks that may end mid-line; a partial line is shown as it grows and
completed when its newline arrives.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rich.text import Text
from textual.app import ComposeResult

from app.tui.safe import from_ansi
from app.tui.widgets.lineview import LineView
from app.tui.widgets.pane import Pane, style_of

# pytest, unittest, cargo and go test: enough to colour a line, never to judge a loop
# (the exit code does that).
_FAIL = re.compile(r"FAILED|ERROR|Error|Traceback|^E\s|error(\[|:)|\bfailed\b|^FAIL|panicked")
_PASS = re.compile(r"PASSED|\b\d+ passed\b|^OK\b|^ok\b|test result: ok|^PASS\b")


@dataclass
class Loop:
    number: int
    lines: list[str] = field(default_factory=list)
    partial: str = ""
    passed: bool | None = None
    exit_code: int | None = None
    runner: str = ""


#: a loop's mark in the pane's subtitle: passed, failed, running
_MARK: dict[bool | None, str] = {True: "✓", False: "✗", None: "…"}


def loop_name(number: int) -> str:
    # The pipeline runs the tests once before any change: loop 0, expected to fail.
    return "baseline" if number == 0 else f"loop {number}"


def line_style_key(line: str) -> str | None:
    if _FAIL.search(line):
        return "test-fail"
    if _PASS.search(line):
        return "test-pass"
    return None


class TestsPane(Pane):
    __test__ = False  # not a pytest class

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.loops: dict[int, Loop] = {}
        self._current: int | None = None
        #: True while the view's last row is the current loop's partial line
        self._partial_shown = False

    def compose(self) -> ComposeResult:
        yield LineView(id="tests-view")

    @property
    def view(self) -> LineView:
        return self.query_one("#tests-view", LineView)

    def reset(self) -> None:
        self.loops.clear()
        self._current = None
        self.redraw()

    def _loop(self, number: int) -> Loop:
        loop = self.loops.get(number)
        if loop is None:
            loop = self.loops[number] = Loop(number)
        return loop

    def add_text(self, number: int, text: str) -> None:
        if not self.loops:
            self.view.clear()  # the "no test run yet" placeholder
        loop = self._loop(number)
        if self._current != number:
            self._current = number
            self._partial_shown = False
            self.view.append([self._header(loop)])
        chunk = loop.partial + text
        *complete, loop.partial = chunk.split("\n")
        loop.lines.extend(complete)
        rows = [self._row(ln) for ln in complete]
        if self._partial_shown and rows:
            self.view.replace_last(rows.pop(0))
            self._partial_shown = False
        elif self._partial_shown and not rows:
            self.view.replace_last(self._row(loop.partial))
            self._update_titles()
            return
        self.view.append(rows)
        if loop.partial:
            self.view.append([self._row(loop.partial)])
            self._partial_shown = True
        self._update_titles()

    def loop_finished(self, number: int, passed: bool, exit_code: int, runner: str) -> None:
        if not self.loops:
            self.view.clear()
        loop = self._loop(number)
        if loop.partial:
            loop.lines.append(loop.partial)
            loop.partial = ""
        self._partial_shown = False
        loop.passed, loop.exit_code, loop.runner = passed, exit_code, runner
        self.view.append([self._result(loop)])
        self._current = None
        self._update_titles()

    def _header(self, loop: Loop) -> Text:
        style = style_of(self.colour("dim-text"), bold=True)
        return Text(f"── {loop_name(loop.number)} ──", style=style, end="")

    def _row(self, line: str) -> Text:
        # a runner forced to colour keeps its colours; no other sequence gets through
        key = line_style_key(line)
        return from_ansi(line, self.style(key) if key else "")

    def _result(self, loop: Loop) -> Text:
        key = "test-pass" if loop.passed else "test-fail"
        mark = "✓ passed" if loop.passed else "✗ failed"
        runner = f" · {loop.runner}" if loop.runner else ""
        return Text(
            f"{mark} · {loop_name(loop.number)} · exit {loop.exit_code}{runner}",
            style=self.style(key, bold=True),
            end="",
        )

    def redraw(self) -> None:
        rows: list[Text] = []
        for loop in self.loops.values():
            rows.append(self._header(loop))
            rows += [self._row(ln) for ln in loop.lines]
            if loop.partial:
                rows.append(self._row(loop.partial))
            if loop.passed is not None:
                rows.append(self._result(loop))
        last = self.loops.get(self._current) if self._current is not None else None
        self._partial_shown = bool(last and last.partial)
        if not rows:
            rows = [Text("no test run yet", style=self.style("dim-text"))]
        self.view.set_lines(rows)
        self._update_titles()

    def _update_titles(self) -> None:
        if not self.loops:
            self.set_titles("Tests")
            return
        last = self.loops[max(self.loops)]
        runner = f" · {last.runner}" if last.runner else ""
        # "baseline ✗", not "0 ✗": a bare 0 before the cross reads as "no failures"
        marks = [
            f"{'baseline' if n == 0 else n} {_MARK[lp.passed]}"
            for n, lp in sorted(self.loops.items())
        ]
        self.set_titles(f"Tests ── {loop_name(last.number)}{runner}", "  ".join(marks))
