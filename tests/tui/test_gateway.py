"""``switchyard serve --tui``: the gateway as a worker of the workbench.

A real HTTP client talks to the gateway (uvicorn on 127.0.0.1, port 0) hosted by the app
under Pilot; behind it, loopback fakes of vLLM and the cloud. An escalating request
raises the approval modal and is held until the key: ``y`` lets it through to the cloud
fake, ``n``/``d`` (or the timeout) serve it locally. The requests view shows each one.
"""

from __future__ import annotations

import asyncio
import gc
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from textual.widgets import Static

from app.audit.log import AuditLog
from app.bus import ApprovalRequested
from app.cli.main import main
from app.tui import bridge
from app.tui.core import DECIDED_BY, WorkFailed
from app.tui.gateway import GatewayListening
from app.tui.panes.budget import BudgetPane
from app.tui.panes.requests import GAP, RequestsPane
from app.tui.screens.approval import ApprovalScreen
from app.tui.screens.gateway import GatewayScreen
from tests.tui.gateway_world import (
    CLOUD_REPLY,
    ESCALATE,
    LOCAL_REPLY,
    GatewayWorld,
    chat,
    chat_body,
    gateway_world,
    messages,
    responses_stream,
    serve_tui_app,
)
from tests.tui.helpers import Messages, settle, until

SIZE = (160, 48)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GatewayWorld]:
    with gateway_world(tmp_path / "world") as w:
        for name, value in w.env(tmp_path / "data").items():
            monkeypatch.setenv(name, value)
        yield w


async def listening(pilot: Any) -> str:
    app = pilot.app
    await until(pilot, lambda: app.gateway_address, what="the gateway listening")
    return str(app.gateway_address)


def requests_pane(app: Any) -> RequestsPane:
    home = app.home
    assert isinstance(home, GatewayScreen)
    return home.requests


async def answer_modals(
    pilot: Any, key: str, until_done: asyncio.Task[Any], seconds: float = 30.0
) -> list[ApprovalRequested]:
    """Press ``key`` on every approval modal that opens until ``until_done`` ends."""
    app = pilot.app
    answered: list[ApprovalRequested] = []
    for _ in range(int(seconds / 0.02)):
        if until_done.done():
            return answered
        screen = app.screen
        if isinstance(screen, ApprovalScreen) and screen.request not in answered:
            answered.append(screen.request)
            await pilot.press(key)
        await pilot.pause(0.02)
    raise AssertionError("the request never finished")


async def test_at_80_columns_the_header_shows_the_gateways_whole_address(
    world: GatewayWorld,
) -> None:
    """It read "gateway http://…" after the session id: with --port 0 the port was nowhere
    on screen once the start's toast had gone (a TUI audit)."""
    import io

    from rich.console import Console

    app = serve_tui_app("--port", "0")
    async with app.run_test(size=(80, 24)) as pilot:
        address = await listening(pilot)
        await settle(pilot)
        console = Console(width=80, file=io.StringIO(), record=True)
        console.print(app.home.header.render())
        assert f"gateway {address}" in console.export_text()


async def test_serve_tui_hosts_the_gateway_and_shows_where(world: GatewayWorld) -> None:
    seen = Messages()
    app = serve_tui_app("--port", "0")
    async with app.run_test(size=SIZE, message_hook=seen) as pilot:
        address = await listening(pilot)
        await settle(pilot)
        assert address.startswith("http://127.0.0.1:")
        assert [m.address for m in seen.of(GatewayListening)] == [address]
        home = app.home
        assert isinstance(app.screen, GatewayScreen) and home is app.screen
        assert home.header.address == address and home.header.state == "listening"
        assert app.sub_title == address
        # the run's panes are not there; the requests view is
        assert not home.query("#plan") and not home.query("#task")
        assert home.query_one("#requests", RequestsPane).rows == {}
        async with httpx.AsyncClient(base_url=address) as client:
            assert (await client.get("/health")).json() == {"status": "ok"}
            ids = [m["id"] for m in (await client.get("/v1/models")).json()["data"]]
        assert "architect" in ids and "auto" in ids
        # serving: the start-up heap is out of the collector's way (app/heap.py)
        assert gc.get_freeze_count() > 0
    # stopped: given back, so what the server kept alive can be collected
    assert gc.get_freeze_count() == 0


async def test_y_lets_the_held_request_through_to_the_cloud(world: GatewayWorld) -> None:
    seen = Messages()
    app = serve_tui_app("--port", "0")
    async with app.run_test(size=SIZE, message_hook=seen) as pilot:
        address = await listening(pilot)
        async with httpx.AsyncClient(base_url=address, timeout=60) as client:
            held = asyncio.create_task(
                chat(client, "architect", "plan the fix", agent="pilot/1.0", headers=ESCALATE)
            )
            await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), what="the modal")
            await settle(pilot)
            modal = app.screen
            assert isinstance(modal, ApprovalScreen)
            assert (modal.request.role, modal.request.model) == ("architect", "gpt-5.1-high")
            assert modal.request.reasons[0]["code"] == "ARCHITECT_LOW_CONFIDENCE"
            # the modal says whose request is held
            (rid,) = requests_pane(app).rows
            assert modal.request.run == rid
            assert modal.origin == "pilot/1.0 · architect"
            assert modal.origin in str(modal.query_one("#approval-body", Static).render())
            # held: no answer yet, nothing sent anywhere, the view says so
            assert not held.done()
            assert world.cloud.chat_requests == [] and world.vllm.chat_requests == []
            (row,) = requests_pane(app).rows.values()
            assert row.held and row.status is None and row.client == "pilot/1.0"
            assert app.home.header.state == "awaiting approval"

            await pilot.press("y")
            await until(pilot, held.done, what="the response")
        reply = held.result()
        assert reply.status_code == 200
        assert reply.json()["choices"][0]["message"]["content"] == CLOUD_REPLY
        assert len(world.cloud.chat_requests) == 1 and world.vllm.chat_requests == []

        await until(pilot, lambda: seen.of(bridge.RequestsServed), what="RequestServed")
        await settle(pilot)
        (served,) = [e for m in seen.of(bridge.RequestsServed) for e in m.events]
        assert (served.role, served.model, served.escalated) == ("architect", "gpt-5.1-high", True)
        (row,) = requests_pane(app).rows.values()
        assert row.id == served.request and row.done and row.status == 200
        assert (row.model, row.runtime, row.escalated) == ("gpt-5.1-high", "cloud", True)
        assert row.tokens_in > 0 and row.tokens_out > 0 and row.latency_ms
        assert row.steps == [["gpt-5.1-high", "approved"]]
        assert app.home.header.state == "listening"

        settled = [m.event for m in seen.of(bridge.ApprovalSettled)]
        assert [(e.decision, e.decided_by) for e in settled] == [("allow_once", DECIDED_BY)]
        assert app.session is not None
        lines = await app.session.audit.lines(run=served.request)
        kinds = [ln.kind for ln in lines]
        assert kinds[0] == "request" and kinds[-1] == "request"
        assert "escalation" in kinds and "approval" in kinds and "call" in kinds

        # the budget meter shows the call's cost (published after the request, not in it)
        (call,) = [ln for ln in lines if ln.kind == "call"]
        meter = app.home.query_one(BudgetPane)

        def spent() -> float:
            snap = meter.snapshot or {}
            return float((snap.get("per_session") or {}).get("spent_usd") or 0.0)

        await until(pilot, lambda: spent() > 0, what="the budget meter updated")
        assert spent() == pytest.approx(call.values["cost_usd"], abs=1e-6)  # the line rounds
        assert meter.snapshot is not None and meter.snapshot["calls"] == 1


@pytest.mark.parametrize("key", ["n", "d"])
async def test_a_denial_serves_the_held_request_locally(world: GatewayWorld, key: str) -> None:
    seen = Messages()
    app = serve_tui_app("--port", "0")
    async with app.run_test(size=SIZE, message_hook=seen) as pilot:
        address = await listening(pilot)
        async with httpx.AsyncClient(base_url=address, timeout=60) as client:
            held = asyncio.create_task(
                chat(client, "architect", "plan the fix", agent="pilot/1.0", headers=ESCALATE)
            )
            await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), what="the modal")
            asked = await answer_modals(pilot, key, held)
        reply = held.result()
        assert reply.status_code == 200
        assert reply.json()["choices"][0]["message"]["content"] == LOCAL_REPLY
        assert world.cloud.chat_requests == [] and len(world.vllm.chat_requests) == 1
        assert asked[0].model == "gpt-5.1-high"
        # d denies the rest of the chain; after n, its next step (DeepSeek) has no key
        # here, so it is skipped without a prompt
        assert len(asked) == 1
        decisions = {"n": "deny", "d": "deny_all"}[key]
        # the reply can reach the client before the app has taken the bridge's message
        # (a busy machine: 1 failed of 3,369 in a parallel suite)
        await until(pilot, lambda: seen.of(bridge.ApprovalSettled), what="the settled answer")
        settled = [m.event for m in seen.of(bridge.ApprovalSettled)]
        assert [e.decision for e in settled] == [decisions] * len(asked)

        await until(pilot, lambda: all(r.done for r in requests_pane(app).rows.values()))
        await settle(pilot)
        (row,) = requests_pane(app).rows.values()
        assert (row.status, row.model, row.runtime, row.escalated) == (
            200,
            "qwen3-14b",
            "vllm",
            False,
        )
        assert [what for _, what in row.steps] == (
            ["denied"] if key == "d" else ["denied", "skipped"]
        )
        assert app.screen is app.home and app.home.header.state == "listening"


async def test_the_header_names_what_the_waiting_approval_asks_for(world: GatewayWorld) -> None:
    """A request served while another's approval waited put its role and model in the
    header, as if that role were at work while the screen said "awaiting approval" (a
    TUI audit): the header names the approval's role and target until it is answered,
    then the last request served."""
    app = serve_tui_app("--port", "0")
    async with app.run_test(size=SIZE) as pilot:
        address = await listening(pilot)
        header = app.home.header
        async with httpx.AsyncClient(base_url=address, timeout=60) as client:
            held = asyncio.create_task(
                chat(client, "architect", "plan the fix", agent="pilot/1.0", headers=ESCALATE)
            )
            await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), what="the modal")
            await settle(pilot)
            assert (header.role, header.model, header.runtime) == (
                "architect",
                "gpt-5.1-high",
                "cloud",
            )
            other = await chat(client, "tutor", "what is a token?", agent="pilot/1.0")
            assert other.status_code == 200
            pane = requests_pane(app)
            await until(pilot, lambda: sum(r.done for r in pane.rows.values()) == 1)
            await settle(pilot)
            assert header.state == "awaiting approval"
            assert (header.role, header.model) == ("architect", "gpt-5.1-high")
            await answer_modals(pilot, "d", held)
        await until(pilot, lambda: all(r.done for r in pane.rows.values()), what="both served")
        await settle(pilot)
        assert header.state == "listening"
        assert (header.role, header.model, header.runtime) == ("architect", "qwen3-14b", "vllm")


async def test_a_approves_for_the_session_and_the_next_one_is_not_asked(
    world: GatewayWorld,
) -> None:
    seen = Messages()
    app = serve_tui_app("--port", "0")
    async with app.run_test(size=SIZE, message_hook=seen) as pilot:
        address = await listening(pilot)
        async with httpx.AsyncClient(base_url=address, timeout=60) as client:
            first = asyncio.create_task(
                chat(client, "architect", "plan", agent="pilot/1.0", headers=ESCALATE)
            )
            await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), what="the modal")
            await pilot.press("a")
            await until(pilot, first.done, what="the first response")
            second = await chat(client, "architect", "plan", agent="pilot/1.0", headers=ESCALATE)
        assert first.result().json()["choices"][0]["message"]["content"] == CLOUD_REPLY
        assert second.json()["choices"][0]["message"]["content"] == CLOUD_REPLY
        assert len(world.cloud.chat_requests) == 2
        assert len(seen.of(bridge.ApprovalAsked)) == 1  # one modal for both
        pane = requests_pane(app)
        await until(pilot, lambda: len(pane.rows) == 2 and all(r.done for r in pane.rows.values()))
        await settle(pilot)
        assert [r.steps for r in pane.rows.values()] == [[["gpt-5.1-high", "approved"]]] * 2
        assert all(r.escalated and r.model == "gpt-5.1-high" for r in pane.rows.values())


async def test_the_timeout_denies_and_the_role_is_served_locally(
    world: GatewayWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWITCHYARD_APPROVAL_TIMEOUT_S", "0.3")
    seen = Messages()
    app = serve_tui_app("--port", "0")
    async with app.run_test(size=SIZE, message_hook=seen) as pilot:
        address = await listening(pilot)
        async with httpx.AsyncClient(base_url=address, timeout=60) as client:
            reply = await chat(
                client, "architect", "plan the fix", agent="pilot/1.0", headers=ESCALATE
            )
        assert reply.status_code == 200
        assert reply.json()["choices"][0]["message"]["content"] == LOCAL_REPLY
        assert world.cloud.chat_requests == []
        await until(pilot, lambda: seen.of(bridge.ApprovalSettled), what="the settled answer")
        await settle(pilot)
        settled = [m.event for m in seen.of(bridge.ApprovalSettled)]
        assert settled and {(e.decision, e.decided_by) for e in settled} == {("deny", "timeout")}
        assert not isinstance(app.screen, ApprovalScreen)
        await until(pilot, lambda: all(r.done for r in requests_pane(app).rows.values()))
        (row,) = requests_pane(app).rows.values()
        assert {what for _, what in row.steps} == {"timed out"} and row.model == "qwen3-14b"


async def test_the_requests_view_shows_each_request(world: GatewayWorld) -> None:
    seen = Messages()
    app = serve_tui_app("--port", "0")
    async with app.run_test(size=SIZE, message_hook=seen) as pilot:
        address = await listening(pilot)
        async with httpx.AsyncClient(base_url=address, timeout=60) as client:
            aider = await chat(client, "implementer", "fix parse()", agent="aider/0.86.1")
            codex = await responses_stream(client, "auto", "add a test", agent="codex_cli_rs/0.46")
            claude = await messages(
                client,
                "claude-haiku-4-5",
                "what is a closure?",
                agent="claude-cli/2.0.14",
                session="c0ffee",
            )
        assert aider.status_code == 200 and claude.status_code == 200
        assert "response.completed" in codex
        pane = requests_pane(app)
        await until(pilot, lambda: len(pane.rows) == 3 and all(r.done for r in pane.rows.values()))
        await settle(pilot)
        served = {e.request: e for m in seen.of(bridge.RequestsServed) for e in m.events}
        assert list(served) == list(pane.rows)
        rows = list(pane.rows.values())
        got = [(r.protocol, r.asked, r.role, r.model, r.runtime, r.status) for r in rows]
        assert got == [
            ("chat", "implementer", "implementer", "qwen2.5-coder-32b", "vllm", 200),
            ("responses", "auto", "implementer", "qwen2.5-coder-32b", "vllm", 200),
            ("messages", "claude-haiku-4-5", "tutor", "qwen2.5-coder-7b", "vllm", 200),
        ]
        assert [r.client for r in rows] == [
            "aider/0.86.1",
            "codex_cli_rs/0.46",
            "claude-cli/2.0.14 (session c0ffee)",
        ]
        for row in rows:
            assert row.tokens_in > 0 and row.tokens_out > 0, row
            assert row.latency_ms is not None and row.latency_ms > 0
            assert row.cost_usd == 0.0 and not row.escalated and row.steps == []
        # what the table shows: one row per request, the columns filled
        assert pane.view.line_count == 3
        shown = pane.shown(rows[2].id)
        assert shown is not None
        cols = [c for c in shown.split(GAP) if c.strip()]
        assert [c.strip() for c in cols[1:3]] == ["200", "claude-haiku… → tutor"]
        assert cols[3].strip() == "qwen2.5-coder-7b · vLLM"
        assert cols[-1] == "claude-cli/2.0.14 · c0ffee"  # its session, cut
        assert pane.border_subtitle == "3 requests"
        header = app.home.header
        assert (header.role, header.model) == ("tutor", "qwen2.5-coder-7b")


async def test_a_palette_command_does_not_dismiss_a_waiting_approval(world: GatewayWorld) -> None:
    """ctrl+p → Budget with the modal up popped the modal without its answer: the request
    waited out the timeout and the header said "awaiting approval" for good."""
    from app.tui.commands import commands

    app = serve_tui_app("--port", "0")
    async with app.run_test(size=SIZE) as pilot:
        address = await listening(pilot)
        async with httpx.AsyncClient(base_url=address, timeout=60) as client:
            held = asyncio.create_task(
                chat(client, "architect", "plan", agent="pilot/1.0", headers=ESCALATE)
            )
            await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), what="the modal")
            (budget,) = [run for title, _, run in commands(app) if title == "Budget"]
            budget()
            await settle(pilot)
            assert isinstance(app.screen, ApprovalScreen)  # still asking
            await pilot.press("n")
            reply = await asyncio.wait_for(held, 30)
        assert reply.status_code == 200  # denied, served locally
        await settle(pilot)
        assert app.home.header.state != "awaiting approval"


async def test_a_client_that_goes_away_while_held_closes_its_modal(world: GatewayWorld) -> None:
    # the gateway learns that a held stream's client went away at once before the
    # stream's first event, and at its next keep-alive after it (the policy's 10 s):
    # a short keep-alive keeps the second path short too
    text = world.policy.read_text()
    assert "keepalive_s = 10.0\n" in text
    world.policy.write_text(text.replace("keepalive_s = 10.0\n", "keepalive_s = 0.5\n"))
    seen = Messages()
    app = serve_tui_app("--port", "0")
    async with app.run_test(size=SIZE, message_hook=seen) as pilot:
        address = await listening(pilot)
        client = httpx.AsyncClient(base_url=address, timeout=60)

        async def stream() -> None:
            body = chat_body("architect", "plan", stream=True)
            async with client.stream(
                "POST", "/v1/chat/completions", json=body, headers=ESCALATE
            ) as reply:
                async for _ in reply.aiter_text():
                    pass

        held = asyncio.create_task(stream())
        await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), what="the modal")
        held.cancel()  # the agent is stopped while its request waits
        await asyncio.gather(held, return_exceptions=True)
        await client.aclose()
        await until(pilot, lambda: not isinstance(app.screen, ApprovalScreen), what="no modal")
        await settle(pilot)
        (row,) = requests_pane(app).rows.values()
        assert (row.status, row.outcome) == (499, "client went away")
        assert row.steps == [["gpt-5.1-high", "withdrawn"]]
        assert app.home.header.state == "listening"
        # nobody decided: the broker's own denial ("cancelled") closed it; nothing was sent
        assert [m.event.decided_by for m in seen.of(bridge.ApprovalSettled)] == ["cancelled"]
        assert world.cloud.chat_requests == [] and world.vllm.chat_requests == []


async def test_quitting_stops_the_gateway_and_ends_a_held_request(
    world: GatewayWorld, tmp_path: Path
) -> None:
    app = serve_tui_app("--port", "0")
    client = httpx.AsyncClient(timeout=60)
    async with app.run_test(size=SIZE) as pilot:
        address = await listening(pilot)
        client.base_url = httpx.URL(address)
        held = asyncio.create_task(
            chat(client, "architect", "plan", agent="pilot/1.0", headers=ESCALATE)
        )
        await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), what="the modal")
        session_id = app.session.id
        await app.action_quit()
    # the app is gone: the held request got an answer (not a hang), the port is closed
    outcome = await asyncio.wait_for(asyncio.gather(held, return_exceptions=True), 10)
    await client.aclose()
    reply = outcome[0]
    assert isinstance(reply, httpx.HTTPError) or reply.status_code >= 500
    host, port = address.removeprefix("http://").split(":")
    with pytest.raises(OSError), socket.create_connection((host, int(port)), timeout=2):
        pass
    assert world.cloud.chat_requests == []
    # its end was audited before the session closed: the request line, then its closing one
    audit = await AuditLog.open(tmp_path / "data" / "audit.sqlite3")
    try:
        lines = [ln for ln in await audit.lines(session=session_id) if ln.kind == "request"]
    finally:
        await audit.close()
    assert [ln.reason_codes for ln in lines] == [["GATEWAY_REQUEST"], ["GATEWAY_FAILED"]]
    assert lines[1].values["status"] == 503
    assert lines[1].values["outcome"] == "error: the server is stopping"


async def test_a_port_in_use_is_one_clear_error(world: GatewayWorld) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        seen = Messages()
        app = serve_tui_app("--port", str(port))
        async with app.run_test(size=SIZE, message_hook=seen) as pilot:
            await until(pilot, lambda: seen.of(WorkFailed), what="the failure")
            await settle(pilot)
            (failed,) = seen.of(WorkFailed)
            assert failed.group == "gateway"
            assert failed.text.startswith(f"cannot listen on 127.0.0.1:{port}: ")
            assert "in use" in failed.text
            assert app.home.header.state == "error" and app.gateway_address is None


def test_serve_tui_refuses_a_port_in_use_before_it_opens(
    world: GatewayWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--tui", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"switchyard: --port {port}: cannot listen")
