"""The header names a role at work only while one is: after a run it kept the last step's
role bright ("merge_ready · implementer · deepseek-reasoner"), as if it still worked, and
a new run showed the last run's role before its own first stage."""

from __future__ import annotations

import asyncio
from typing import Any

from app.pipeline.control import RunControl
from app.tui.widgets.header import AT_WORK, SessionHeader
from tests.tui import scenes
from tests.tui.helpers import settle, until


def _shown(header: SessionHeader) -> str:
    return "".join(strip.text for strip in header.render_lines(header.region.reset_offset))


async def test_after_a_run_the_role_is_the_last_one_not_one_at_work(make_app: Any) -> None:
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        header = app.home.header
        # at work: running, or already at its escalation's approval when a busy machine
        # (another pytest-xdist worker) let the run get there before the first look
        await until(pilot, lambda: header.state in AT_WORK, what="the run")
        await until(pilot, lambda: header.role == "implementer", what="the implementer")
        await settle(pilot)
        working = _shown(header)
        assert " · implementer · qwen2.5-coder-32b @ vLLM" in working and "last:" not in working

        await scenes.run_to_end(pilot)
        rested = _shown(header)
        assert "merge_ready" in rested
        assert "last: implementer · deepseek-reasoner @ cloud" in rested, rested


async def test_a_new_run_names_no_role_before_its_first_stage(make_app: Any) -> None:
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await scenes.run_to_end(pilot)
        header = app.home.header
        assert header.role == "implementer"

        go_on = asyncio.Event()

        async def not_yet_staged(session: Any, task: str, control: RunControl) -> None:
            await go_on.wait()

        app._runner = not_yet_staged
        assert app.start_run("another task")
        await until(pilot, lambda: header.state == "running", what="the second run")
        await settle(pilot)
        shown = _shown(header)
        assert header.role == header.model == "" and app.home.role == ""
        assert "implementer" not in shown and "deepseek" not in shown, shown
        go_on.set()
        await until(pilot, lambda: not app.running, what="the run to end")


async def test_an_approved_cloud_call_is_named_while_it_is_out(make_app: Any, clock: Any) -> None:
    """After y the header named the local model for the whole cloud call ("running ·
    implementer · qwen2.5-coder-32b @ vLLM"), and "stopping · … qwen2.5-coder-32b" after
    x, until the call's audit line landed (a user audit). The approval's audit line says
    which cloud model the call went to: the header waits for it from then on."""
    from app.tui.screens.approval import ApprovalScreen
    from tests.tui.scripted import ScriptedRun

    run = ScriptedRun(clock, stop_before="cloud call")
    app = make_app(run=run)
    async with app.run_test(size=(160, 48)) as pilot:
        header = app.home.header
        await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), what="the modal")
        await settle(pilot)
        assert "qwen2.5-coder-32b @ vLLM" in _shown(header)
        await pilot.pause(ApprovalScreen.TYPING_PAUSE_S)
        await pilot.press("y")
        await until(pilot, run.reached.is_set, what="the cloud call")
        await until(pilot, lambda: header.model == "deepseek-reasoner", what="the target")
        await settle(pilot)
        shown = _shown(header)
        assert "running" in shown and "waiting for deepseek-reasoner @ cloud" in shown, shown
        assert "qwen2.5-coder" not in shown, shown
        await pilot.press("x")
        await until(pilot, lambda: header.state == "stopping", what="the stop")
        await settle(pilot)
        shown = _shown(header)
        assert "waiting for deepseek-reasoner @ cloud" in shown, shown
        run.go_on.set()  # the call comes back: the model is named, not waited for
        await until(pilot, lambda: not app.running, what="the run to end")
        await settle(pilot)
        assert "waiting for" not in _shown(header)
