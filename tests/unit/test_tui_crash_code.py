"""A workbench that ended on an error exits with Textual's code, the error in the log: it
exited 0 with nothing in tui.log (a TUI audit: a palette command crashed the app)."""

from __future__ import annotations

import logging

import pytest

from app.cli.tui_cmd import crashed


class _App:
    def __init__(self, code: int | None, error: Exception | None) -> None:
        self.return_code = code
        self._exception = error


def test_a_crash_is_its_exit_code_and_a_line_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="app.tui"):
        assert crashed(_App(1, RuntimeError("DuplicateIds"))) == 1
    (record,) = caplog.records
    assert "ended on an error (exit 1)" in record.getMessage()
    assert record.exc_info is not None and "DuplicateIds" in str(record.exc_info[1])
    caplog.clear()
    assert crashed(_App(0, None)) == 0 and crashed(_App(None, None)) == 0
    assert not caplog.records
