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
