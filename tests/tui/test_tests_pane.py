"""The tests pane's border: which loop ran where, and one mark per loop."""

from __future__ import annotations

from app.tui.panes.tests import TestsPane
from tests.tui.test_requests_pane import OnePane


async def test_the_baseline_is_named_in_the_marks_not_numbered() -> None:
    pane = TestsPane()
    async with OnePane(pane).run_test() as pilot:
        pane.add_text(0, "FAILED tests/test_parser.py::test_last\n")
        pane.loop_finished(0, passed=False, exit_code=1, runner="bwrap")
        pane.add_text(1, "1 passed\n")
        pane.loop_finished(1, passed=True, exit_code=0, runner="bwrap")
        pane.add_text(2, "collecting")
        await pilot.pause()
        # "0 ✗" read as "no failures" when the baseline had failed
        assert pane.border_subtitle == "baseline ✗  1 ✓  2 …"
        assert pane.border_title == "Tests ── loop 2"


async def test_a_runners_colours_are_kept_and_no_other_sequence_gets_through() -> None:
    pane = TestsPane()
    async with OnePane(pane).run_test() as pilot:
        pane.add_text(1, "\x1b[31mFAILED\x1b[0m t.py\x1b]52;c;eA==\x07\x1b[2J ok\n")
        await pilot.pause()
        row = pane.view.lines[-1]
        # the clear screen is gone, and of the clipboard write (an OSC ended by BEL, which
        # Rich's decoder does not know) only harmless text is left
        assert row.plain.startswith("FAILED t.py") and row.plain.endswith(" ok")
        assert "[2J" not in row.plain and all(ord(c) >= 0x20 for c in row.plain)
        assert any(span.style.color.name == "color(1)" for span in row.spans)  # red kept
