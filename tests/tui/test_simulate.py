"""The palette's "Simulate": a policy file replayed over this data dir's audit log.

The log is written before the app starts, by the router (real audit chain and ledger in
the session's data dir; scripted in-process backends): three Architect plans at
confidence 0.5, 0.78 and 0.9 under the shipped policy. A policy that raises the
Architect's threshold to 0.8 escalates the 0.78 plan too.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input, Static

from app.audit.log import AuditLog
from app.clock import ManualClock
from app.config import Settings
from app.policy import load_policy
from app.resources import default_policy_path
from app.router.approvals import AllowDecider, ApprovalBroker
from app.router.ledger import BudgetLedger
from app.router.service import Router
from app.router.types import Signals
from app.tui.core import WorkFailed
from app.tui.screens.simulate import SimulateScreen
from tests.integration.test_router_service import ALL_UP, REQ, Resolver
from tests.tui.helpers import Messages, palette, settle, until


async def write_log(data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir)
    policy = load_policy().policy
    clock = ManualClock()
    async with AuditLog.open(settings.audit_db, clock=clock) as audit:
        ledger = await BudgetLedger.open(settings.ledger_db, policy.budget, clock=clock)
        broker = ApprovalBroker(AllowDecider(), audit=audit, timeout_s=5, clock=clock)
        router = Router(
            policy,
            session="s-tui",
            audit=audit,
            ledger=ledger,
            approvals=broker,
            backends=Resolver(up=ALL_UP),
            clock=clock,
        )
        for confidence in (0.5, 0.78, 0.9):
            await router.complete("architect", REQ, Signals(confidence=confidence))
        await ledger.close()


def policy_file(tmp_path: Path, threshold: str) -> Path:
    text = default_policy_path().read_text(encoding="utf-8")
    old = 'threshold = 0.75\nseed = "§3 confidence <'
    assert text.count(old) == 1
    path = tmp_path / f"proposed-{threshold}.toml"
    path.write_text(text.replace(old, old.replace("0.75", threshold)), encoding="utf-8")
    return path


async def test_simulate_from_the_palette(make_app: Any, tmp_path: Path) -> None:
    await write_log(tmp_path / "data")
    proposed = policy_file(tmp_path, "0.8")
    seen = Messages()
    app = make_app(task=None)
    async with app.run_test(size=(160, 48), message_hook=seen) as pilot:
        await until(pilot, lambda: app.session is not None, what="the session")
        await palette(pilot, "Simulate")
        screen = app.screen
        assert isinstance(screen, SimulateScreen)
        box = screen.query_one("#simulate-input", Input)
        assert box.has_focus
        # the path put in the box, not typed: a key press a character was 10 of the
        # test's 14 s, and what is tested is what enter does with it
        box.value = str(proposed)
        await pilot.press("enter")
        await until(pilot, lambda: screen.report is not None, what="the simulation")
        await settle(pilot)
        report = screen.report
        assert report is not None
        assert (report.decisions, report.changed, report.unsimulated.count) == (3, 1, 0)
        [change] = report.biggest_changes
        assert change.against == "qwen3-14b@vllm (local)"
        assert change.new == "gpt-5.1-high (cloud)" and change.estimated
        shown = str(screen.query_one("#simulate-summary", Static).render())
        assert "3 decisions replayed, 1 changed: 1 escalation added" in shown
        assert f"#{change.seq} " in shown

        # a policy file that does not load: its FILE:LINE, and the screen stays usable
        bad = policy_file(tmp_path, "7.5")
        box.value = str(bad)
        await pilot.press("enter")
        await until(
            pilot, lambda: [m for m in seen.of(WorkFailed) if m.group == "simulate"], what="error"
        )
        await settle(pilot)
        shown = str(screen.query_one("#simulate-summary", Static).render())
        assert shown.startswith(f"not simulated: {bad}:")
        assert "triggers[architect_low_confidence].threshold" in shown
        await pilot.press("escape")
        await settle(pilot)
        assert not isinstance(app.screen, SimulateScreen)


def test_the_log_is_written_with_decisions(tmp_path: Path) -> None:
    """The fixture's log itself: three requests, each with its recorded inputs."""
    asyncio.run(write_log(tmp_path / "data"))

    async def read() -> list[Any]:
        async with AuditLog.open(Settings(data_dir=tmp_path / "data").audit_db) as log:
            return await log.lines()

    lines = asyncio.run(read())
    firsts = [line for line in lines if "inputs" in line.values]
    assert [f.values["inputs"]["signals"]["confidence"] for f in firsts] == [0.5, 0.78, 0.9]


async def test_the_simulation_reads_a_log_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It verified and exported the session's own log, whose lock both hold to their end:
    every line the session wrote meanwhile (a run's routes and escalations) waited, 34 s
    on a log of 955k lines (a long-life audit). The read goes on beside; appends go on."""
    from app.router.simulate import stored
    from app.router.simulate.requests import Collected

    settings = Settings(data_dir=tmp_path / "data")
    settings.data_dir.mkdir()
    shipped = load_policy()
    # (the read runs on a loop of its own, in the worker's thread: threading's events)
    gate, began, readers = threading.Event(), threading.Event(), []

    async def read(own: AuditLog, **_: Any) -> Collected:
        readers.append(own)
        began.set()
        async with own._lock:  # held to the end, as verify and the export hold it
            await asyncio.to_thread(gate.wait, 30)
        return Collected(start=1)

    monkeypatch.setattr(stored, "read_log", read)
    async with AuditLog.open(settings.audit_db) as log:
        await log.append("route", session="s")
        reading = asyncio.create_task(
            asyncio.to_thread(stored.simulate_stored, shipped, shipped, settings)
        )
        try:
            assert await asyncio.to_thread(began.wait, 10)
            # (not wait_for: an append once called ends before a cancel is raised)
            appending = asyncio.create_task(log.append("route", session="s"))
            done, _ = await asyncio.wait({appending}, timeout=10)
            assert appending in done, "the append waited for the simulation's read"
            assert appending.result().seq == 2 and readers[0] is not log
        finally:
            gate.set()
            await reading


async def test_a_second_file_is_not_replayed_beside_the_first(
    make_app: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replay runs in a thread to its end (a cancelled worker does not stop it): enter
    again while it runs started a second one beside it (a review). It is said, not run."""
    from app.router.simulate import stored

    real = stored.simulate_stored
    gate, calls = threading.Event(), []

    def held(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0])
        gate.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(stored, "simulate_stored", held)
    await write_log(tmp_path / "data")
    first, second = policy_file(tmp_path, "0.8"), policy_file(tmp_path, "0.9")
    app = make_app(task=None)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.session is not None, what="the session")
        await palette(pilot, "Simulate")
        screen = app.screen
        assert isinstance(screen, SimulateScreen)
        box = screen.query_one("#simulate-input", Input)
        box.value = str(first)
        await pilot.press("enter")
        await until(pilot, lambda: len(calls) == 1, what="the first replay")
        box.value = str(second)
        await pilot.press("enter")
        await settle(pilot)
        # nor from the screen opened again: the replay runs on (a review)
        await pilot.press("escape")
        await settle(pilot)
        await palette(pilot, "Simulate")
        again = app.screen
        assert isinstance(again, SimulateScreen) and again is not screen
        again.query_one("#simulate-input", Input).value = str(second)
        await pilot.press("enter")
        await settle(pilot)
        assert len(calls) == 1 and again.busy == first
        screen = again
        box = again.query_one("#simulate-input", Input)
        gate.set()
        await until(pilot, lambda: app.simulating is None, what="the first replay's end")
        await settle(pilot)
        assert len(calls) == 1 and screen.busy is None
        # once done, the next file is taken
        box.value = str(second)
        await pilot.press("enter")
        await until(pilot, lambda: len(calls) == 2, what="the second replay")
