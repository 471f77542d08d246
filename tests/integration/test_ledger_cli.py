"""``switchyard budget`` over a real ledger file in the isolated data dir."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from app.cli.main import main
from app.clock import ManualClock
from app.config import Settings
from app.paths import ensure_dir
from app.policy import Policy
from app.router.ledger import BudgetLedger


def _seed(policy: Policy) -> None:
    """Two settled cloud calls (DeepSeek's prompt mostly read from its cache), one local
    call and one reservation in flight, today."""

    async def go() -> None:
        db = Settings().ledger_db
        ensure_dir(db.parent)
        clock = ManualClock(datetime.now(UTC))
        async with await BudgetLedger.open(db, policy.budget, clock=clock) as led:
            for session, role, model, provider, usd, cached in (
                ("s1", "implementer", "deepseek-reasoner", "deepseek", 0.42, 10000),
                ("s2", "judge", "claude-opus", "anthropic", 1.5, 0),
            ):
                res = await led.reserve(
                    session=session, provider=provider, role=role, model=model, amount_usd=usd
                )
                await led.settle(
                    res.id,
                    actual_usd=usd,
                    tokens_in=12000,
                    tokens_out=800,
                    latency_ms=3000,
                    tokens_cached=cached,
                )
            await led.record_call(
                session="s1",
                role="architect",
                model="qwen3-14b",
                provider="local",
                tokens_in=900,
                tokens_out=300,
                latency_ms=400,
                cost_usd=0.0,
            )
            await led.reserve(
                session="s1",
                provider="deepseek",
                role="implementer",
                model="deepseek-reasoner",
                amount_usd=0.05,
            )

    asyncio.run(go())


def test_json_report_has_stable_keys_and_the_caps(
    policy: Policy, capsys: pytest.CaptureFixture[str]
) -> None:
    _seed(policy)
    assert main(["budget", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {
        "session",
        "days",
        "since",
        "until",
        "total",
        "by_role",
        "by_model",
        "by_provider",
        "by_day",
        "in_flight",
        "caps",
        "today",
        "session_budget",
        "policy_version",
        "ledger_db",
    }
    assert data["days"] == 7
    assert data["total"] == {
        "cost_usd": 1.92,
        "calls": 3,
        "failed": 0,
        "tokens_in": 24900,
        "tokens_cached": 10000,
        "tokens_out": 1900,
    }
    assert [r["role"] for r in data["by_role"]] == ["judge", "implementer", "architect"]
    assert data["by_provider"][0] == {
        "provider": "anthropic",
        "cost_usd": 1.5,
        "calls": 1,
        "failed": 0,
        "tokens_in": 12000,
        "tokens_cached": 0,
        "tokens_out": 800,
    }
    assert data["caps"]["session_usd"] == policy.budget.session_usd
    assert data["caps"]["provider_day_usd"] == policy.budget.provider_day_usd
    today = data["today"]
    assert today["spent_usd"] == 1.92
    assert today["reserved_usd"] == 0.05
    assert today["left_usd"] == pytest.approx(policy.budget.day_usd - 1.97)
    assert today["providers"]["deepseek"]["left_usd"] == pytest.approx(
        policy.budget.provider_day_usd["deepseek"] - 0.47
    )
    assert data["in_flight"] == {"reservations": 1, "reserved_usd": 0.05}
    assert data["session_budget"] is None
    assert data["ledger_db"] == str(Settings().ledger_db)


def test_calls_that_did_not_come_through_are_counted_as_failed(
    policy: Policy, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cloud host that never answered showed as that many calls, $0 and no tokens, with
    no word that none of them came through."""
    _seed(policy)

    async def unreachable() -> None:
        async with await BudgetLedger.open(Settings().ledger_db, policy.budget) as led:
            for _ in range(2):
                res = await led.reserve(
                    session="s1",
                    provider="deepseek",
                    role="implementer",
                    model="deepseek-chat",
                    amount_usd=0.01,
                )
                await led.release(res.id)

    asyncio.run(unreachable())
    assert main(["budget", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["total"]["calls"], data["total"]["failed"]) == (5, 2)
    deepseek = next(r for r in data["by_provider"] if r["provider"] == "deepseek")
    assert (deepseek["calls"], deepseek["failed"], deepseek["cost_usd"]) == (3, 2, 0.42)
    chat = next(r for r in data["by_model"] if r["model"] == "deepseek-chat")
    assert (chat["calls"], chat["failed"], chat["tokens_in"]) == (2, 2, 0)
    assert main(["budget"]) == 0
    text = capsys.readouterr().out
    assert "in 5 calls (2 failed) · policy" in text
    (row,) = [line for line in text.splitlines() if line.startswith("│ deepseek-chat")]
    assert "2 (2 failed)" in row


def test_session_filter_and_its_own_cap(policy: Policy, capsys: pytest.CaptureFixture[str]) -> None:
    _seed(policy)
    assert main(["budget", "--session", "s1", "--days", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["session"] == "s1"
    assert data["total"]["cost_usd"] == 0.42
    assert data["session_budget"]["spent_usd"] == 0.42
    assert data["session_budget"]["left_usd"] == pytest.approx(policy.budget.session_usd - 0.47)
    assert main(["budget", "--session", "s1", "--days", "1"]) == 0
    out = capsys.readouterr().out
    assert "session s1" in out and "No call or reservation" not in out
    assert "no spend recorded" not in out


def test_a_session_with_no_record_says_so_beside_the_caps(
    policy: Policy, capsys: pytest.CaptureFixture[str]
) -> None:
    """``budget --session nosuch`` ended 0 with a full "$5.00 left", as if the session
    existed (a user audit). A new session has no spend, so it is no error (exit 0): the
    report says it has none recorded; --json stays the report it was."""
    _seed(policy)
    assert main(["budget", "--session", "nosuch"]) == 0
    out = capsys.readouterr().out
    assert "no spend recorded for session nosuch" in out
    assert "session nosuch (no spend recorded)" in out
    assert main(["budget", "--session", "nosuch", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["session"] == "nosuch" and data["total"]["calls"] == 0
    assert data["session_budget"]["spent_usd"] == 0
    assert data["session_budget"]["left_usd"] == policy.budget.session_usd


def test_a_session_that_spent_before_the_days_shown_is_no_unknown_one(
    policy: Policy, capsys: pytest.CaptureFixture[str]
) -> None:
    """Spend ten days ago, none in the 7 shown: its spend is on record (the session cap's
    sums are all time), so not "no spend recorded"; the days shown say they have none."""

    async def go() -> None:
        db = Settings().ledger_db
        ensure_dir(db.parent)
        clock = ManualClock(datetime.now(UTC) - timedelta(days=10))
        async with await BudgetLedger.open(db, policy.budget, clock=clock) as led:
            res = await led.reserve(
                session="old", provider="deepseek", role="implementer",
                model="deepseek-reasoner", amount_usd=0.42,
            )  # fmt: skip
            await led.settle(res.id, actual_usd=0.42, tokens_in=10, tokens_out=5, latency_ms=1)

    asyncio.run(go())
    assert main(["budget", "--session", "old"]) == 0
    out = capsys.readouterr().out
    assert "no spend recorded" not in out
    assert "No call or reservation of session old in these 7 days" in out


def test_table_shows_roles_models_providers_days_and_what_is_left(
    policy: Policy, capsys: pytest.CaptureFixture[str]
) -> None:
    _seed(policy)
    assert main(["budget"]) == 0
    out = capsys.readouterr().out
    for text in (
        "By role",
        "By model",
        "By provider",
        "By day",
        "Caps and what is left today",
        "deepseek-reasoner",
        "implementer",
        "anthropic",
        "$1.50",
        "$0.42",
        "12,000 (10,000 cached)",  # of the prompt's tokens, the cache's (priced apart)
        "provider deepseek",
        "in flight",
        "each session (see --session S)",  # all sessions: no one session's spend to show
    ):
        assert text in out, text


def test_an_empty_ledger_is_created_and_reported(
    policy: Policy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not Settings().ledger_db.exists()
    assert main(["budget", "--session", "nobody"]) == 0
    out = capsys.readouterr().out
    assert "$0.00 in 0 calls" in out
    # a cut id (the workbench's header showed 8 of 12 characters) read as a $0 session,
    # and its full "$5.00 left" as a session that exists (a user audit): said beside the
    # caps, once
    assert "session nobody (no spend recorded)" in out
    assert "no spend recorded for session nobody: the caps above are what it starts with" in out
    assert "No call or reservation" not in out
    # the summary is one line, not broken at the console's 80 columns
    summary = out.splitlines()[0]
    assert summary.startswith("Spend ") and summary.endswith(f"policy {policy.version}")
    assert len(summary) > 80
    assert Settings().ledger_db.exists()


@pytest.mark.parametrize("days", ["0", "800000", "many"])
def test_bad_days_is_a_usage_error(capsys: pytest.CaptureFixture[str], days: str) -> None:
    """800000 days reached before year 1: an OverflowError traceback."""
    with pytest.raises(SystemExit) as info:
        main(["budget", "--days", days])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--days" in err and "Traceback" not in err


def test_a_broken_policy_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[budget]\nsession_usd = -1\n", encoding="utf-8")
    assert main(["budget", "--policy", str(bad)]) == 2
    assert "switchyard:" in capsys.readouterr().err


def test_a_corrupt_ledger_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    db = Settings().ledger_db
    ensure_dir(db.parent)
    db.write_bytes(b"garbage" * 1000)
    assert main(["budget"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("switchyard: ")
    assert "cannot open the budget ledger" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["budget", "--session", ""],
        ["audit", "tail", "--session", " "],
        ["audit", "export", "--run", ""],
    ],
)
def test_an_empty_id_is_a_usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """`budget --session ''` said "all sessions" in its header and showed a session row
    with a blank id."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "an id cannot be empty" in capsys.readouterr().err


def _caps_rows(text: str) -> dict[str, list[Decimal]]:
    """The caps table's rows with a limit: name → limit, spent, reserved, left."""
    table = text[text.index("Caps and what is left today") :]
    rows: dict[str, list[Decimal]] = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 5 and cells[1].startswith("$"):
            rows[cells[0]] = [Decimal(c.removeprefix("$")) for c in cells[1:]]
    return rows


def test_a_caps_row_adds_up_and_never_shows_more_left_than_there_is(
    policy: Policy, capsys: pytest.CaptureFixture[str]
) -> None:
    """$0.1709925 spent: each figure rounded to the nearest, the day's row read "$0.170992
    spent, $19.829007 left" of $20 (a micro-dollar gone) and the session's "$4.829008 left"
    of $5, more than the $4.8290075 there was. --json keeps the nano-dollars."""

    async def spend() -> None:
        async with await BudgetLedger.open(Settings().ledger_db, policy.budget) as led:
            res = await led.reserve(
                session="s1", provider="deepseek", role="implementer", model="m", amount_usd=0.2
            )
            await led.settle(res.id, actual_usd=0.1709925, tokens_in=1, tokens_out=1, latency_ms=1)
            await led.reserve(
                session="s1", provider="deepseek", role="implementer", model="m", amount_usd=1.2e-6
            )

    ensure_dir(Settings().ledger_db.parent)
    asyncio.run(spend())
    assert main(["budget", "--session", "s1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out, parse_float=Decimal)
    exact = {
        "session s1": data["session_budget"],
        "day": data["today"],
        "provider deepseek": data["today"]["providers"]["deepseek"],
    }
    for u in exact.values():  # the ledger's own figures, to the nano-dollar
        assert u["spent_usd"] == Decimal("0.1709925") and u["reserved_usd"] == Decimal("0.0000012")
        assert u["cap_usd"] - u["spent_usd"] - u["reserved_usd"] == u["left_usd"]
    assert main(["budget", "--session", "s1"]) == 0
    rows = _caps_rows(capsys.readouterr().out)
    assert set(exact) <= set(rows)
    for name, (cap, spent, reserved, left) in rows.items():
        assert spent + reserved + left == cap, name
        if name in exact:
            assert left <= exact[name]["left_usd"], name
            assert spent >= exact[name]["spent_usd"] and reserved >= Decimal("0.0000012"), name
    assert rows["day"] == [Decimal(d) for d in ("20.00", "0.170993", "0.000002", "19.829005")]
