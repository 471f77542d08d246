"""``switchyard run``'s live progress prints a model's words as text, never as Rich markup."""

from __future__ import annotations

import asyncio

import pytest

from app.bus import Bus, Notice, StageChanged
from app.cli.run_cmd import _progress


async def test_brackets_in_a_models_words_are_printed_as_written(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bus = Bus()
    task = asyncio.create_task(_progress(bus, quiet=False))
    await asyncio.sleep(0)  # subscribed
    bus.publish_nowait(
        StageChanged(stage="implementer", status="failed", detail="return [t for t in toks]")
    )
    bus.publish_nowait(Notice(text="refused: def parse(text) -> list[str]: [bold]x[/]"))
    for _ in range(50):  # turns of the loop for the printer to drain its queue
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    out = capsys.readouterr().out
    assert "return [t for t in toks]" in out
    assert "def parse(text) -> list[str]: [bold]x[/]" in out
