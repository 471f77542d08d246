"""A reservation charged because its TTL passed unsettled (its process died mid-call) is
an audit line, whichever face finds it: it was charged with no line at all, so the audit's
charges never added up to the ledger's (a gateway SIGKILLed mid-stream: 94 % of the
spend unaudited)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from app.audit.log import AuditLog
from app.cli.main import main
from app.clock import ManualClock
from app.config import Settings, load_settings
from app.paths import ensure_dir
from app.policy import Policy
from app.policy.schema import Budget
from app.router.ledger import BudgetLedger
from app.router.stores import open_stores


def _expired_lines(lines: list) -> list:  # type: ignore[type-arg]
    return [ln for ln in lines if "RESERVATION_EXPIRED" in ln.reason_codes]


async def test_the_session_that_finds_a_dead_reservation_audits_its_charge(
    policy: Policy,
) -> None:
    clock = ManualClock(datetime.now(UTC))
    settings = load_settings()
    async with open_stores(
        settings,
        policy.budget,
        session="alive",
        policy_version=policy.version,
        local_only=False,
        named=frozenset(),
        clock=clock,
    ) as stores:
        dead = await stores.ledger.reserve(
            session="dead",
            provider="deepseek",
            role="implementer",
            model="deepseek-reasoner",
            amount_usd=0.25,
            run="r-dead",
        )
        clock.advance(policy.budget.reservation_ttl_s + 1)
        # the next request of another session finds it on its way
        await stores.ledger.reserve(
            session="alive", provider="deepseek", role="judge", model="m", amount_usd=0.01
        )
        (line,) = _expired_lines(await stores.audit.tail(50))
        assert (line.kind, line.session, line.run, line.role, line.to) == (
            "budget",
            "dead",
            "r-dead",
            "implementer",
            "deepseek-reasoner",
        )
        assert line.values["reservation"] == dead.id and line.values["cost_usd"] == 0.25
        assert "SETTLED_AT_ESTIMATE" in line.reason_codes
        report = await stores.ledger.report(session="dead")
        assert report["total"]["cost_usd"] == 0.25  # the line and the ledger agree
        assert (await stores.audit.verify()).ok


def _leave_one_behind(settings: Settings, policy: Policy, *, model: str) -> None:
    """A $0.50 reservation of session "dead", made a TTL and a minute ago and never
    settled (its process died mid-call)."""

    async def reserve() -> None:
        ensure_dir(settings.ledger_db.parent)
        past = datetime.now(UTC) - timedelta(seconds=policy.budget.reservation_ttl_s + 60)
        async with await BudgetLedger.open(
            settings.ledger_db, policy.budget, clock=ManualClock(past)
        ) as led:
            await led.reserve(
                session="dead", provider="anthropic", role="judge", model=model, amount_usd=0.5
            )

    asyncio.run(reserve())


def test_budget_alone_audits_the_charges_it_makes(
    policy: Policy, capsys: pytest.CaptureFixture[str]
) -> None:
    """``switchyard budget`` opens the ledger alone: the audit log is opened for the line
    only when a reservation was charged."""
    settings = Settings()
    _leave_one_behind(settings, policy, model="claude-opus")
    assert not settings.audit_db.exists()  # nothing opened it until something was charged
    assert main(["budget", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["in_flight"]["reservations"] == 0

    async def lines() -> list:  # type: ignore[type-arg]
        async with AuditLog.open(settings.audit_db) as log:
            return await log.tail(10)

    (line,) = _expired_lines(asyncio.run(lines()))
    assert (line.session, line.to, line.values["cost_usd"]) == ("dead", "claude-opus", 0.5)
    assert main(["budget", "--json"]) == 0  # charged and told once
    assert len(_expired_lines(asyncio.run(lines()))) == 1


def test_budget_alone_charges_nothing_it_cannot_audit(
    policy: Policy, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """With the audit log unreadable (a folder in its place), ``budget`` charged the
    expired reservations and logged that their lines were not written; nothing wrote them
    later (a chaos audit). Now it leaves them reserved, says why, and the next report
    that can audit them charges them, with their lines."""
    settings = Settings()
    _leave_one_behind(settings, policy, model="m")
    settings.audit_db.mkdir()  # not a database: the log cannot be opened
    assert main(["budget", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["in_flight"] == {
        "reservations": 1,
        "reserved_usd": 0.5,
    }
    said = "reservations past their TTL are not charged here: the audit log cannot be"
    assert said in caplog.text
    settings.audit_db.rmdir()
    assert main(["budget", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["in_flight"]["reservations"] == 0

    async def lines() -> list:  # type: ignore[type-arg]
        async with AuditLog.open(settings.audit_db) as log:
            return await log.tail(10)

    (line,) = _expired_lines(asyncio.run(lines()))
    assert (line.session, line.values["cost_usd"]) == ("dead", 0.5)


async def test_on_the_team_store_the_charge_is_audited_in_the_finders_chain(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Expired by the database's clock; the line names the dead session, in the chain of
    the instance that found it."""
    monkeypatch.setenv("SWITCHYARD_DATABASE_URL", pg_url)
    budget = Budget(session_usd=5.0, day_usd=20.0, reservation_ttl_s=0.3)
    async with open_stores(
        load_settings(),
        budget,
        session="alive",
        policy_version="1",
        local_only=False,
        named=frozenset(),
    ) as stores:
        assert stores.url is not None  # the team store, not the files
        await stores.ledger.reserve(
            session="dead", provider="openai", role="architect", model="gpt-5.1", amount_usd=1.5
        )
        await asyncio.sleep(0.5)
        snap = await stores.ledger.snapshot("dead")
        assert (snap.per_session.spent_usd, snap.reserved_usd) == (1.5, 0.0)
        (line,) = _expired_lines(await stores.audit.tail(50))
        assert (line.session, line.to, line.values["cost_usd"]) == ("dead", "gpt-5.1", 1.5)
        assert (await stores.audit.verify()).ok
