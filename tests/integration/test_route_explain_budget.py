"""``switchyard route explain`` reads what is left as a request would (GR-011): the
caps less the ledger's spend and reservations, for a session or a new one."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest

from app.cli.main import main
from app.clock import ManualClock
from app.config import Settings
from app.paths import ensure_dir
from app.policy import load_policy
from app.router.ledger import BudgetLedger


def test_route_explain_counts_the_ledger_as_a_request_would(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """GR-011: explain read no budget, so a session whose cap is spent was told it would
    escalate while every real request of it was refused for budget."""
    budget = load_policy().policy.budget

    async def spend() -> None:
        db = Settings().ledger_db
        ensure_dir(db.parent)
        clock = ManualClock(datetime.now(UTC))
        async with await BudgetLedger.open(db, budget, clock=clock) as led:
            usd = budget.session_usd
            res = await led.reserve(
                session="spent", provider="openai", role="architect", model="gpt-5.1-high",
                amount_usd=usd,
            )  # fmt: skip
            await led.settle(res.id, actual_usd=usd, tokens_in=1, tokens_out=1, latency_ms=1)

    asyncio.run(spend())
    argv = ["route", "explain", "--role", "architect", "--signal", "confidence=0.5", "--json"]
    assert main([*argv, "--session", "spent"]) == 0
    spent = json.loads(capsys.readouterr().out)
    assert spent["action"] == "local" and spent["budget_from"] == "ledger"
    assert {s["reason"] for s in spent["skipped"]} == {"budget"}
    assert spent["budget_left_usd"]["openai"] == 0

    assert main(argv) == 0  # a new session has its whole cap
    fresh = json.loads(capsys.readouterr().out)
    assert fresh["action"] == "escalate"
    assert fresh["budget_left_usd"]["openai"] == budget.session_usd

    assert main([*argv, "--session", "spent", "--budget-left", "100"]) == 0
    assumed = json.loads(capsys.readouterr().out)
    assert assumed["action"] == "escalate" and assumed["budget_from"] == "--budget-left"

    assert main([*argv[:-1], "--session", "spent"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "openai $0.00" in text and "session spent" in text


def test_explaining_with_no_ledger_yet_writes_none(capsys: pytest.CaptureFixture[str]) -> None:
    """route explain made the ledger file to read nothing from it: a question wrote."""
    argv = ["route", "explain", "--role", "architect", "--signal", "confidence=0.5", "--json"]
    assert not Settings().ledger_db.exists()
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["action"] == "escalate"
    assert data["budget_left_usd"]["openai"] == load_policy().policy.budget.session_usd
    assert not Settings().ledger_db.exists()
