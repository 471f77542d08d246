"""The Simulate screen on the team store gives the CLI's verdict: the session's chain
replayed with the rest of the team's spend (the team ledger), by the function
``policy simulate --chain`` runs. It replayed the chain alone: a cap the team's spend
had reached held on the screen, where the CLI's report said it was crossed.

A real PostgreSQL; the teammates are other processes (``switchyard ask``), each with a
data dir of its own, as other laptops are: their spend is in the team ledger only. The
session in the app is a real one on the team store, its architect escalating to
DeepSeek (no OpenAI key: its first cloud step is skipped).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input, Static

from app.audit.pg_log import PgAuditLog
from app.backends.base import ChatRequest, Message
from app.clock import ManualClock
from app.config import Settings
from app.policy import load_policy
from app.router.types import Signals
from app.tui.app import SwitchyardApp
from app.tui.core import WorkFailed
from app.tui.defaults import connect_with
from app.tui.screens.simulate import SimulateScreen
from tests.integration.sim_kit import SimFakes
from tests.integration.test_policy_simulate_team import LOOSE, TIGHT, _policy
from tests.pg import PgServer, _admin
from tests.ports import closed_port
from tests.tui.helpers import Messages, palette, settle, until
from tests.tui.scripted import ScriptedRun, scripted_tutor

ROOT = Path(__file__).resolve().parents[2]
TEAM = "cap1"
COUNTED = "the rest of the team's spend counted against the shared caps"


@pytest.fixture
def team(pg_url: str, sim_fakes: SimFakes, monkeypatch: pytest.MonkeyPatch) -> SimFakes:
    # (the teammates' processes read these; the app's session is given them in Settings)
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", sim_fakes.vllm.base_url)
    monkeypatch.setenv("SWITCHYARD_LLAMACPP_SERVER_URL", sim_fakes.llamacpp.base_url)
    monkeypatch.delenv("OPENAI_API_KEY")
    return sim_fakes


def _cli(tmp_path: Path, pg_url: str, user: str, *argv: str) -> Any:
    """``switchyard ARGV --json`` in a process of its own, on a data dir of its own."""
    env = {
        **os.environ,
        "SWITCHYARD_DATABASE_URL": pg_url,
        "SWITCHYARD_TEAM": TEAM,
        "SWITCHYARD_USER": user,
        "SWITCHYARD_DATA_DIR": str(tmp_path / f"laptop-{user}"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "app", *argv, "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _app(settings: Settings, policy: Path, repo: Path) -> SwitchyardApp:
    clock = ManualClock()  # (the app's; the session keeps the system's, as the asks do)
    return SwitchyardApp(
        connect=connect_with(settings, load_policy(policy).policy, approve="allow"),
        runner=ScriptedRun(clock),
        tutor=scripted_tutor,
        repo=repo,
        theme="switchyard-dark",
        clock=clock,
        start_task=None,
    )


def _dave(tmp_path: Path, fakes: SimFakes, database: str, policy: Path, **more: Any) -> Settings:
    return Settings(
        data_dir=tmp_path / "dave",
        vllm_url=fakes.vllm.base_url,
        llamacpp_server_url=fakes.llamacpp.base_url,
        database_url=database,
        team=TEAM,
        user="dave",
        policy=policy,
        **more,
    )


async def _simulate(pilot: Any, policy: Path, seen: Messages) -> tuple[SimulateScreen, str]:
    """``policy`` put in the screen's box and entered: the screen and what it shows once
    the worker has answered (a report, or its failure)."""
    app = pilot.app
    if not isinstance(app.screen, SimulateScreen):
        await palette(pilot, "Simulate")
    screen = app.screen
    assert isinstance(screen, SimulateScreen)
    failed = len([m for m in seen.of(WorkFailed) if m.group == "simulate"])
    screen.report = None
    screen.query_one("#simulate-input", Input).value = str(policy)
    await pilot.press("enter")
    await until(
        pilot,
        lambda: (
            screen.report is not None
            or len([m for m in seen.of(WorkFailed) if m.group == "simulate"]) > failed
        ),
        seconds=60,
        what="the simulation",
    )
    await settle(pilot)
    return screen, str(screen.query_one("#simulate-summary", Static).render())


async def test_the_screen_gives_the_clis_verdict_with_the_teams_spend(
    team: SimFakes, pg_url: str, tmp_path: Path, repo: Path
) -> None:
    """Alice's, Bob's and Carol's DeepSeek calls, then Dave's in the app: a tighter
    DeepSeek cap that the team's three calls reach keeps Dave's request local."""
    loose = _policy(tmp_path, team, "loose.toml")
    tight = _policy(tmp_path, team, "tight.toml", (LOOSE, TIGHT))
    ask = ["ask", "--policy", str(loose), "--role", "architect", "--signal", "confidence=0.5"]
    asked = [
        _cli(tmp_path, pg_url, user, *ask, "--approve", "allow", "plan the fix")
        for user in ("alice", "bob", "carol")
    ]
    assert [a["model"] for a in asked] == ["deepseek-reasoner"] * 3

    app = _app(_dave(tmp_path, team, pg_url, loose), loose, repo)
    seen = Messages()
    async with app.run_test(size=(160, 48), message_hook=seen) as pilot:
        await until(pilot, lambda: app.session is not None, what="the session")
        session = app.session
        assert session is not None and isinstance(session.audit, PgAuditLog)
        request = ChatRequest(
            messages=[Message(role="user", content="plan the fix")], max_tokens=256
        )
        reply = await session.router.complete("architect", request, Signals(confidence=0.5))
        assert reply.model == "deepseek-reasoner"

        screen, shown = await _simulate(pilot, tight, seen)
        report = screen.report
        assert report is not None, shown
        # the CLI on the same chain, meanwhile (the session still open)
        argv = ["policy", "simulate", "--policy", str(tight), "--against", str(loose)]
        chain = session.audit.chain
        cli = await asyncio.to_thread(_cli, tmp_path, pg_url, "erin", *argv, "--chain", chain)

    assert report.model_dump(mode="json") == cli
    assert report.decisions == 1 and report.changed == 1
    assert [(b.policy, b.cap) for b in report.blocked] == [("new", "provider:deepseek")]
    spent = round(sum(a["cost_usd"] for a in asked), 6)
    assert report.team_spend is not None
    assert (report.team_spend.calls, report.team_spend.usd) == (3, spent)
    assert f"{COUNTED}, where it happened: 3 calls" in shown
    assert "1 changed: 0 escalations added, 1 removed" in shown


@pytest.mark.parametrize("fallback", [False, True], ids=["alone", "database_fallback"])
async def test_a_team_database_that_cannot_be_read_is_said(
    team: SimFakes, pg_url: str, pg_server: PgServer, tmp_path: Path, repo: Path, fallback: bool
) -> None:
    """The database stops taking connections while the session is open: the screen says
    it cannot be reached, and simulates nothing (no replay of the chain alone). With
    database_fallback the session's lines are still in its chain: no replay of this
    machine's files either, and the session stays on the team store."""
    from app.router.store_fallback import FallbackAudit

    loose = _policy(tmp_path, team, "loose.toml")
    name = pg_url.rsplit("/", 1)[1]
    settings = _dave(tmp_path, team, pg_url, loose, database_fallback=fallback)
    app = _app(settings, loose, repo)
    seen = Messages()
    async with app.run_test(size=(160, 48), message_hook=seen) as pilot:
        await until(pilot, lambda: app.session is not None, what="the session")
        # (the session's own connections stay open; a new one is refused)
        await _admin(pg_server, f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        try:
            screen, shown = await _simulate(pilot, loose, seen)
        finally:
            await _admin(pg_server, f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        assert screen.report is None
        assert shown.startswith("not simulated: cannot reach the team database"), shown
        assert "Traceback" not in shown and "Error:" not in shown
        audit = app.session.audit if app.session is not None else None
        assert isinstance(audit.in_use if isinstance(audit, FallbackAudit) else audit, PgAuditLog)

        # once it answers, the same screen simulates (the chain: the session's first line)
        screen, shown = await _simulate(pilot, loose, seen)
        assert screen.report is not None and screen.report.team_spend is not None, shown


async def test_a_session_fallen_back_to_its_files_says_the_teams_spend_is_not_counted(
    tmp_path: Path, repo: Path
) -> None:
    """database_fallback: the team database did not answer when the session opened, and it
    writes to this machine's files. Their replay is what there is, and it says so."""
    policy = load_policy().path
    away = f"postgresql://dave@127.0.0.1:{closed_port()}/switchyard"  # (shown as it is)
    settings = Settings(
        data_dir=tmp_path / "dave", database_url=away, database_fallback=True, policy=policy
    )
    app = _app(settings, policy, repo)
    seen = Messages()
    async with app.run_test(size=(160, 48), message_hook=seen) as pilot:
        await until(pilot, lambda: app.session is not None, what="the session")
        assert app.session is not None and app.session.store_url is None
        screen, shown = await _simulate(pilot, policy, seen)
    assert screen.report is not None and screen.report.team_spend is None, shown
    assert shown.startswith(
        f"this session writes to this machine's files, not the team database {away} "
    )
    assert "the rest of the team's spend is not counted" in shown
