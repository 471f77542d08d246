"""bench/tui_bench.py's flood counts what the escalations pane received, not what it
keeps: a flood larger than the pane keeps must finish (it once waited out its two-minute
cap and reported that as the figure). Its timings are the bench's, not a test's."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from app.tui.panes.escalations import DROP_BATCH, MAX_LINES
from bench import tui_bench


async def test_a_flood_larger_than_the_pane_keeps_is_all_received(tmp_path: Path) -> None:
    events = MAX_LINES + DROP_BATCH + 500  # past the point where the pane lets lines go
    out = await tui_bench._first_frame("switchyard", events, tmp_path, time.time())
    assert out["pane_lines"] == events
    assert out["pane_kept"] <= MAX_LINES + DROP_BATCH


async def test_a_flood_that_never_all_arrives_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.tui.panes.escalations import EscalationsPane

    monkeypatch.setattr(EscalationsPane, "add_lines", lambda self, lines: None)
    monkeypatch.setattr(tui_bench, "FLOOD_LIMIT_S", 0.5)
    with pytest.raises(RuntimeError, match="0 of 50 lines reached the pane"):
        await tui_bench._first_frame("switchyard", 50, tmp_path, time.time())
