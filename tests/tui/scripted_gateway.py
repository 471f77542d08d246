"""Scripted gateway traffic for the snapshot of ``serve --tui`` (test support).

The session is real (the scripted connect of :mod:`tests.tui.scripted`: audit chain,
ledger, approvals broker on a ManualClock); only the HTTP side is scripted.
:class:`ScriptedTraffic` stands in for ``app.gateway.server.serve``: it says it listens on
127.0.0.1:4000, then writes what the gateway writes for each request (its ``request``
lines, the route or escalation, the call, the ledger record, ``RequestServed``) and asks
for one escalation through the real broker, so the modal and the key decide it. Times,
ids and figures are fixed, so the picture never varies. The behaviour of the real
gateway under the TUI is tested in ``test_gateway.py``, over HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from app.bus import RequestServed
from app.clock import ManualClock
from app.router.approvals import ApprovalRequest
from app.router.session import Session
from app.tui.screens.approval import ApprovalScreen
from tests.tui.helpers import settle, until
from tests.tui.scripted import ScriptedRun, make_repo, scripted_connect, scripted_tutor

CLAUDE = "claude-cli/2.0.14 (external, cli) (session 5b1c9e0a-77d2)"
CODEX = "codex_cli_rs/0.46.0 (Ubuntu 24.04; x86_64) xterm-256color"


@dataclass(frozen=True)
class Scripted:
    rid: str
    protocol: str
    asked: str
    role: str
    client: str
    model: str
    tokens_in: int
    tokens_out: int
    latency_ms: float


LOCAL: tuple[Scripted, ...] = (
    Scripted(
        "gw-3b9e0c41d2a7f115",
        "messages",
        "claude-sonnet-4-5-20250929",
        "implementer",
        CLAUDE,
        "qwen2.5-coder-32b",
        18_214,
        412,
        2_310.0,
    ),
    Scripted(
        "gw-51c0aa8e7f3d9b02",
        "responses",
        "auto",
        "implementer",
        CODEX,
        "qwen2.5-coder-32b",
        6_120,
        288,
        1_480.0,
    ),
    Scripted(
        "gw-8d2f6e1b0c4a7953",
        "chat",
        "tutor",
        "tutor",
        "aider/0.86.1",
        "qwen2.5-coder-7b",
        940,
        161,
        610.0,
    ),
    Scripted(
        "gw-a47c93e25b1f0d68",
        "messages",
        "claude-haiku-4-5",
        "tutor",
        CLAUDE,
        "qwen2.5-coder-7b",
        1_302,
        96,
        388.0,
    ),
)
ESCALATED = Scripted(
    "gw-c6e8b51f03a2d974",
    "responses",
    "architect",
    "architect",
    CODEX,
    "gpt-5.1-high",
    9_870,
    1_204,
    7_920.0,
)
REASON: dict[str, Any] = {
    "code": "ARCHITECT_LOW_CONFIDENCE",
    "trigger": "architect_low_confidence",
    "signal": "confidence",
    "op": "lt",
    "value": 0.5,
    "threshold": 0.75,
    "text": "confidence 0.5 < 0.75 → gpt-5.1-high",
}


@dataclass
class ScriptedTraffic:
    """A ``serve`` for :class:`~app.tui.gateway.GatewaySpec`: scripted requests, then it
    listens until cancelled."""

    clock: ManualClock
    decision: str | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(
        self,
        session: Session,
        *,
        host: str,
        port: int,
        config: Any,
        on_ready: Callable[[str, int], None] | None = None,
    ) -> None:
        if on_ready is not None:
            on_ready("127.0.0.1", 4000)
        for request in LOCAL:
            await self._opened(session, request)
            await self._audit(
                session,
                request,
                "route",
                to=f"{request.model}@vllm",
                detail=f"{request.role} → {request.model} (vLLM)",
            )
            await self._served(session, request, "vllm", 0.0)
        await self._escalation(session, ESCALATED)
        self.finished.set()
        await asyncio.Event().wait()

    async def _audit(self, session: Session, r: Scripted, kind: str, **fields: Any) -> None:
        await session.audit.append(kind, session=session.id, run=r.rid, role=r.role, **fields)

    async def _opened(self, session: Session, r: Scripted) -> None:
        self.clock.advance(3)
        values = {"protocol": r.protocol, "model": r.asked, "client": r.client, "stream": True}
        await self._audit(
            session,
            r,
            "request",
            reason_codes=["GATEWAY_REQUEST"],
            values=values,
            detail=f"{r.client}: {r.protocol} {r.asked} → {r.role}",
        )

    async def _served(self, session: Session, r: Scripted, runtime: str, cost: float) -> None:
        self.clock.advance(r.latency_ms / 1000)
        provider = "openai" if runtime == "cloud" else "local"
        await session.ledger.record_call(
            session=session.id,
            run=r.rid,
            role=r.role,
            model=r.model,
            provider=provider,
            tokens_in=r.tokens_in,
            tokens_out=r.tokens_out,
            latency_ms=r.latency_ms,
            cost_usd=cost,
        )
        where = f"{r.model}@{runtime}" if runtime != "cloud" else r.model
        await self._audit(
            session,
            r,
            "call",
            to=where,
            detail=f"{r.tokens_in} in / {r.tokens_out} out, ${cost:.4f}",
        )
        figures = {
            "tokens_in": r.tokens_in,
            "tokens_out": r.tokens_out,
            "cost_usd": cost,
            "latency_ms": r.latency_ms,
        }
        await self._audit(
            session,
            r,
            "request",
            reason_codes=["GATEWAY_DONE"],
            values={
                "outcome": "ok",
                "status": 200,
                "model": r.model,
                "runtime": runtime,
                "escalated": runtime == "cloud",
                **figures,
            },
            detail=f"{r.role} served by {r.model} ({runtime})",
        )
        assert session.bus is not None
        await session.bus.publish(
            RequestServed(
                session=session.id,
                request=r.rid,
                protocol=r.protocol,
                client=r.client,
                model_asked=r.asked,
                role=r.role,
                model=r.model,
                runtime=runtime,
                escalated=runtime == "cloud",
                **figures,
            )
        )

    async def _escalation(self, session: Session, r: Scripted) -> None:
        await self._opened(session, r)
        await self._audit(
            session,
            r,
            "escalation",
            from_="qwen3-14b",
            to=r.model,
            reason_codes=["ARCHITECT_LOW_CONFIDENCE"],
            values={"confidence": 0.5, "est_cost_usd": 0.024},
            detail=REASON["text"],
        )
        decision = await session.approvals.request(
            ApprovalRequest(
                request_id="9e1f27c4b8d05a36",
                session=session.id,
                run=r.rid,
                role=r.role,
                model=r.model,
                provider="openai",
                reasons=[REASON],
                values={"confidence": 0.5},
                est_cost_usd=0.024,
                budget_left_usd=5.0,
            )
        )
        self.decision = decision.decision
        if decision.allowed:
            await self._served(session, r, "cloud", 0.0244)
        else:
            local = Scripted(
                r.rid, r.protocol, r.asked, r.role, r.client, "qwen3-14b", r.tokens_in, 530, 3_100.0
            )
            await self._audit(session, r, "route", to="qwen3-14b@vllm")
            await self._served(session, local, "vllm", 0.0)


def gateway_app(root: Path, clock: ManualClock, *, theme: str = "switchyard-dark") -> Any:
    """The workbench of ``serve --tui`` over the scripted session and traffic."""
    from app.gateway.app import GatewayConfig
    from app.tui.app import SwitchyardApp
    from app.tui.gateway import GatewaySpec

    traffic = ScriptedTraffic(clock)
    return SwitchyardApp(
        connect=scripted_connect(root / "data", clock),
        runner=ScriptedRun(clock),
        tutor=scripted_tutor,
        repo=make_repo(root / "repo"),
        theme=theme,
        clock=clock,
        gateway=GatewaySpec("127.0.0.1", 4000, GatewayConfig(), serve=traffic),
    )


async def traffic_approved(pilot: Pilot[Any]) -> None:
    """The scripted traffic, its escalation approved with ``y``, every row finished."""
    app: Any = pilot.app
    await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), what="the modal")
    await settle(pilot)
    await pilot.pause(ApprovalScreen.TYPING_PAUSE_S)  # (answered as a person does: 0 s in tests)
    await pilot.press("y")
    rows = lambda: app.home.requests.rows.values()  # noqa: E731
    await until(pilot, lambda: len(rows()) == 5 and all(r.done for r in rows()), what="rows")
    await settle(pilot)
