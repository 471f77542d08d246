"""The workbench draws its layout first and opens the session after the first frame
(issue 20, P5): the panes are there at once with an "opening session…" header, the bus
bridge subscribes before the session opens (no event of it is missed), a task typed
meanwhile is refused with the reason, and the first frame's imports build no pydantic
model (the bus's events, the audit log, the approvals broker load with the session)."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

from rich.console import Console
from textual.notifications import Notify
from textual.widgets import Input, Static

from app import heap
from app.bus import AuditAppended, Bus
from app.clock import ManualClock
from app.router.session import Session
from app.tui.panes.budget import BudgetPane
from app.tui.panes.diff import DiffPane
from app.tui.panes.escalations import EscalationsPane
from app.tui.panes.plan import PlanPane
from app.tui.panes.tests import TestsPane
from app.tui.screens.main import MainScreen
from tests.tui.helpers import Messages, settle, until
from tests.tui.scripted import ScriptedRun, scripted_connect

ROOT = Path(__file__).resolve().parents[2]
#: what opening the session needs and the first frame must not load
SESSION_MODULES = (
    "pydantic",
    "app.bus",
    "app.audit.log",
    "app.router.approvals",
    "app.router.session",
    "app.policy",
    "app.config",
)


def test_the_first_frame_imports_nothing_the_session_needs() -> None:
    code = (
        "import json, sys\n"
        "import app.tui.app\n"
        f"print(json.dumps(sorted(m for m in {SESSION_MODULES!r} if m in sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert json.loads(done.stdout) == []


async def test_the_layout_is_drawn_before_the_session_opens(
    tmp_path: Path, clock: ManualClock, repo: Path
) -> None:
    from app.tui.app import SwitchyardApp

    release = asyncio.Event()
    asked: list[int] = []
    real = scripted_connect(tmp_path / "data", clock)

    @asynccontextmanager
    async def slow(bus: Bus) -> AsyncIterator[Session]:
        asked.append(bus.subscriber_count)
        # Published while the session is still opening: the bridge must already listen.
        await bus.publish(AuditAppended.of(session="early", line={"seq": 0, "kind": "run"}))
        await release.wait()
        async with real(bus) as session:
            yield session

    app = SwitchyardApp(connect=slow, runner=ScriptedRun(clock), repo=repo, clock=clock)
    seen = Messages()
    async with app.run_test(size=(160, 48), message_hook=seen) as pilot:
        await until(pilot, lambda: asked, what="the session to be asked for")
        await settle(pilot)
        screen = app.home
        assert app.session is None
        assert screen.header.state == "opening session…" and screen.header.session == ""
        for pane in (PlanPane, DiffPane, TestsPane, EscalationsPane, BudgetPane):
            assert screen.query_one(pane).region.area > 0, pane.__name__
        assert asked == [1], "the bridge subscribes before the session opens"

        await pilot.press(*"fix it", "enter")
        await settle(pilot)
        assert not app.running
        notices = [m.notification.message for m in seen.of(Notify)]
        assert any("the session is still opening" in n for n in notices), notices

        release.set()
        await until(pilot, lambda: screen.header.session, what="the session on screen")
        await settle(pilot)
        assert app.session is not None
        assert screen.header.state == "idle"
        assert screen.header.session == app.session.id
        # the whole id, as `budget --session` and `audit tail --session` match it (8 of its
        # 12 characters were shown, and `budget` printed $0 for them)
        wide = Console(width=200, record=True, file=io.StringIO())
        wide.print(screen.header.render())
        assert f"session {app.session.id} " in wide.export_text()
        early = [ln for ln in screen.escalations.lines if ln.get("seq") == 0]
        assert early == [{"seq": 0, "kind": "run"}]


async def test_a_task_given_at_start_runs_once_the_session_is_open(make_app: Any) -> None:
    app = make_app()  # start_task: the demo's path
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.control is not None, what="the run to start")
        await settle(pilot)
        assert app.session is not None
        assert app.home.header.state not in ("opening session…", "error")


async def test_start_up_ends_once_the_session_is_on_screen(
    tmp_path: Path, clock: ManualClock, repo: Path
) -> None:
    """As `switchyard tui` runs it (app/heap.py): the collector is held until the session
    is drawn, then start-up's heap is frozen and the thresholds put back; the app gives
    the frozen heap back when it closes."""
    from app.tui.app import SwitchyardApp

    before = gc.get_threshold()
    release = asyncio.Event()
    real = scripted_connect(tmp_path / "data", clock)

    @asynccontextmanager
    async def slow(bus: Bus) -> AsyncIterator[Session]:
        await release.wait()
        async with real(bus) as session:
            yield session

    heap.hold_startup_collections()
    try:
        app = SwitchyardApp(connect=slow, runner=ScriptedRun(clock), repo=repo, clock=clock)
        async with app.run_test(size=(160, 48)) as pilot:
            await settle(pilot)
            assert gc.get_threshold()[0] == heap.STARTUP_THRESHOLD, "held while it opens"
            assert gc.get_freeze_count() == 0
            release.set()
            await until(pilot, lambda: app.home.header.session, what="the session on screen")
            await until(pilot, lambda: not heap.startup_held(), what="start-up to end")
            assert gc.get_threshold() == before
            assert gc.get_freeze_count() > 0
        assert gc.get_freeze_count() == 0, "given back when the app closed"
    finally:
        heap.release_startup_collections()
        gc.unfreeze()


async def test_start_up_ends_when_the_session_cannot_open(
    tmp_path: Path, clock: ManualClock, repo: Path
) -> None:
    from app.tui.app import SwitchyardApp

    before = gc.get_threshold()

    @asynccontextmanager
    async def broken(bus: Bus) -> AsyncIterator[Session]:
        raise RuntimeError("no data dir")
        yield  # pragma: no cover

    heap.hold_startup_collections()
    try:
        app = SwitchyardApp(connect=broken, runner=ScriptedRun(clock), repo=repo, clock=clock)
        async with app.run_test(size=(160, 48)) as pilot:
            await until(pilot, lambda: app.session_error, what="the session to fail")
            await until(pilot, lambda: not heap.startup_held(), what="start-up to end")
            assert gc.get_threshold() == before
            assert app.home.header.state == "error"
            # the plan said "type a task below and press enter" under a session that failed
            await settle(pilot)
            home = cast("MainScreen", app.home)
            plan = str(home.plan.query_one("#plan-body", Static).render())
            assert "the session did not open: " in plan and "no data dir" in plan
            task = home.query_one("#task", Input)
            assert task.disabled and "no task can run" in task.placeholder
    finally:
        heap.release_startup_collections()
        gc.unfreeze()


async def test_the_budget_meter_starts_from_the_days_spend(
    make_app: Any, tmp_path: Path, clock: ManualClock
) -> None:
    """The meter said "no spend yet · local models cost $0" with $0.42 spent today by
    this machine's other sessions, until this session's own first reservation (a
    long-life audit). It starts from the budget as it stands."""
    from app.policy import load_policy
    from app.router.ledger import BudgetLedger

    (tmp_path / "data").mkdir()
    ledger = await BudgetLedger.open(
        tmp_path / "data" / "ledger.sqlite3", load_policy().policy.budget, clock=clock
    )
    try:
        await ledger.record_call(
            session="yesterdays-tab",
            role="architect",
            model="gpt-5.1-high",
            provider="openai",
            tokens_in=1000,
            tokens_out=100,
            latency_ms=900.0,
            cost_usd=0.42,
        )
    finally:
        await ledger.close()
    app = make_app(task=None)
    async with app.run_test(size=(160, 48)) as pilot:
        pane = app.home.query_one(BudgetPane)
        await until(pilot, lambda: pane.snapshot is not None, what="the first snapshot")
        assert pane.snapshot is not None
        assert pane.snapshot["per_day"]["spent_usd"] == 0.42
        assert pane.snapshot["per_session"]["spent_usd"] == 0
