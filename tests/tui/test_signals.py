"""Signals from outside end the workbench as its quit key does (a user-audit: SIGTERM
killed it outright, the run's evidence unsealed and the terminal left raw), and ctrl+c's
hint is plain text."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

from textual.notifications import Notify

from app.clock import ManualClock
from tests.tui.helpers import Messages, settle, until
from tests.tui.scripted import ScriptedRun


async def test_sigterm_ends_the_workbench_with_143_and_stops_the_run(
    make_app: Any, clock: ManualClock
) -> None:
    run = ScriptedRun(clock, stop_before="escalation")
    app = make_app(run=run)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, run.reached.is_set, what="the run at work")
        await settle(pilot)
        (worker,) = [w for w in app.workers if w.group == "run"]
        # the app's own handler, or this test would end pytest itself
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(200):
            if app._exit:
                break
            await asyncio.sleep(0.01)
    assert app.return_value == 143
    assert worker.is_cancelled  # the run is cancelled: the real runner seals its bundle
    # the handlers went with the app
    assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None)


async def test_ctrl_c_hints_at_the_quit_key_in_plain_text(make_app: Any) -> None:
    app = make_app(task=None)
    seen = Messages()
    async with app.run_test(size=(120, 40), message_hook=seen) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+c")
        await settle(pilot)
        said = [m.notification.message for m in seen.of(Notify)]
    assert "Press ctrl+q to quit the app" in said, said
    assert not any("[b]" in s for s in said)
