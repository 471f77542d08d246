"""``policy simulate --chain C`` on the team store charges the rest of the team's spend.

The caps there are shared: the team's day and provider-day caps are everyone's, a
user's day cap that user's. A replay of one chain charged that chain's costs alone: a
request a teammate's spend had kept local replayed as a cloud call under the very policy
in force ("was another policy in force?"), and a tighter cap the team's spend would
have reached blocked nothing (a user audit of the team store). Each ``ask`` below is an
instance of its own, a chain of its own, as each laptop's is, on a real PostgreSQL, its
architect escalating to DeepSeek (no OpenAI key: its first cloud step is skipped).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.sim_kit import SimFakes
from tests.reliability.kit import run_cli, run_json

LOOSE = "deepseek = 5.0\n"
TIGHT = "deepseek = 0.0003\n"  # two of the fakes' DeepSeek calls fit, a third does not


@pytest.fixture
def team(pg_url: str, sim_fakes: SimFakes, monkeypatch: pytest.MonkeyPatch) -> tuple[str, SimFakes]:
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", sim_fakes.vllm.base_url)
    monkeypatch.setenv("SWITCHYARD_LLAMACPP_SERVER_URL", sim_fakes.llamacpp.base_url)
    monkeypatch.setenv("SWITCHYARD_DATABASE_URL", pg_url)
    monkeypatch.setenv("SWITCHYARD_TEAM", "cap1")
    monkeypatch.delenv("OPENAI_API_KEY")
    return pg_url, sim_fakes


def _policy(tmp_path: Path, fakes: SimFakes, name: str, *swaps: tuple[str, str]) -> Path:
    text = fakes.policy_text
    for old, new in swaps:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _ask(
    user: str, policy: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> dict[str, Any]:
    """One ``ask`` by ``user``: a process of its own, so a chain of its own."""
    monkeypatch.setenv("SWITCHYARD_USER", user)
    argv = ["ask", "--policy", str(policy), "--role", "architect", "--signal", "confidence=0.5"]
    rc, out, err = run_json([*argv, "--approve", "allow", "plan the fix"], capsys)
    assert rc == 0, err
    return dict(out)


def _chains(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The team's chains that hold lines, oldest first (one per ``ask``)."""
    rc, out, err = run_cli(["audit", "chains", "--json"], capsys)
    assert rc == 0, err
    return [c["chain"] for c in json.loads(out)["chains"] if c["lines"]]


def _simulate(
    chain: str, new: Path, against: Path, capsys: pytest.CaptureFixture[str]
) -> dict[str, Any]:
    argv = ["policy", "simulate", "--policy", str(new), "--against", str(against)]
    rc, report, err = run_json([*argv, "--chain", chain], capsys)
    assert rc == 0, err
    return dict(report)


def test_a_request_the_teams_spend_kept_local_replays_local_under_the_policy_in_force(
    team: tuple[str, SimFakes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Alice's and Bob's calls left less than a third call's estimate under the team's
    DeepSeek cap: Carol's request skipped DeepSeek for the budget and was served locally.
    Replayed under that very policy, it was a cloud call, and the report asked whether
    another policy had been in force."""
    policy = _policy(tmp_path, team[1], "cap.toml", (LOOSE, TIGHT))
    first = [_ask(user, policy, monkeypatch, capsys) for user in ("alice", "bob")]
    assert [a["model"] for a in first] == ["deepseek-reasoner"] * 2
    kept = _ask("carol", policy, monkeypatch, capsys)
    assert kept["model"] != "deepseek-reasoner"
    assert any("budget" in (line.get("detail") or "") for line in kept["audit"])

    report = _simulate(_chains(capsys)[-1], policy, policy, capsys)
    assert report["decisions"] == 1 and report["changed"] == 0
    assert report["against_differs_from_recorded"] == 0, report["differs_seqs"]
    assert report["cloud_usd_against"] == report["cloud_usd_new"] == 0
    blocked = {(b["policy"], b["model"], b["cap"]) for b in report["blocked"]}
    assert blocked == {(p, "deepseek-reasoner", "provider:deepseek") for p in ("against", "new")}
    spent = round(sum(a["cost_usd"] for a in first), 6)
    assert report["team_spend"] == {"calls": 2, "usd": spent, "in_flight": 0}

    argv = ["policy", "simulate", "--policy", str(policy), "--against", str(policy)]
    rc, text, err = run_cli([*argv, "--chain", _chains(capsys)[-1]], capsys)
    assert rc == 0, err
    assert "the rest of the team's spend counted against the shared caps" in text
    assert "2 calls" in text and "another policy" not in text


def test_a_tighter_shared_cap_blocks_the_call_the_teams_spend_used_it_up_for(
    team: tuple[str, SimFakes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The team's fourth DeepSeek call, replayed under a team cap that three calls pass:
    the team's spend reaches it first, so the new policy keeps that request local. It
    reported "0 changed"."""
    loose = _policy(tmp_path, team[1], "loose.toml")
    asked = [_ask(u, loose, monkeypatch, capsys) for u in ("alice", "bob", "carol", "bob")]
    assert [a["model"] for a in asked] == ["deepseek-reasoner"] * 4
    tight = _policy(tmp_path, team[1], "tight.toml", (LOOSE, TIGHT))

    report = _simulate(_chains(capsys)[-1], tight, loose, capsys)
    assert report["decisions"] == 1 and report["changed"] == 1
    assert report["against_differs_from_recorded"] == 0
    (role,) = report["roles"]
    assert role["escalations_removed"] == 1
    (change,) = report["biggest_changes"]
    assert change["against"] == "deepseek-reasoner (cloud)"
    assert change["new"].endswith("(local)")
    assert [(b["policy"], b["cap"]) for b in report["blocked"]] == [("new", "provider:deepseek")]
    (reached,) = report["caps_reached"]
    assert (reached["policy"], reached["cap"], reached["limit_usd"]) == (
        "new",
        "provider:deepseek",
        0.0003,
    )
    spent = round(sum(a["cost_usd"] for a in asked[:3]), 6)
    assert report["team_spend"] == {"calls": 3, "usd": spent, "in_flight": 0}

    # the first call of the day: nothing of the team's before it, the cap holds it
    first = _simulate(_chains(capsys)[0], tight, loose, capsys)
    assert first["changed"] == 0 and first["team_spend"]["calls"] == 0


def test_a_users_day_cap_is_charged_that_users_spend_alone(
    team: tuple[str, SimFakes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``user_day_usd`` is each user's on the team store: Alice's third call is past hers,
    Bob's first is within his whatever Alice spent, and each replays as it was."""
    policy = _policy(
        tmp_path,
        team[1],
        "users.toml",
        ("day_usd = 20.0\n", "day_usd = 20.0\nuser_day_usd = 0.0003\n"),
    )
    asked = [_ask(u, policy, monkeypatch, capsys) for u in ("alice", "alice", "bob", "alice")]
    assert [a["model"] == "deepseek-reasoner" for a in asked] == [True, True, True, False]
    chains = _chains(capsys)

    # (GPT-5.1's estimate is past any user's cap: each request skipped it for that)
    alice = _simulate(chains[3], policy, policy, capsys)
    assert alice["against_differs_from_recorded"] == 0, alice["differs_seqs"]
    assert alice["cloud_usd_against"] == 0
    blocked = {(b["policy"], b["model"], b["cap"]) for b in alice["blocked"]}
    assert blocked == {
        (p, m, "user:alice")
        for p in ("against", "new")
        for m in ("gpt-5.1-high", "deepseek-reasoner")
    }
    assert alice["team_spend"]["calls"] == 3

    bob = _simulate(chains[2], policy, policy, capsys)
    assert bob["against_differs_from_recorded"] == 0, bob["differs_seqs"]
    assert {b["model"] for b in bob["blocked"]} == {"gpt-5.1-high"}
    assert bob["cloud_usd_against"] == round(asked[2]["cost_usd"], 6)
    assert bob["team_spend"]["calls"] == 2


def test_a_teammates_reservation_in_flight_counts_as_it_did(
    team: tuple[str, SimFakes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A teammate's call in flight holds its reservation against the shared caps: Bob's
    request, made meanwhile, found too little left and stayed local. The call then
    failed and cost nothing. Its ``call`` line (there is none) or its cost would not
    say what Bob's request met; the team ledger's reservation does."""
    from app.policy import load_policy
    from tests.pg import ledger_at

    policy = _policy(tmp_path, team[1], "cap.toml", (LOOSE, TIGHT))
    loop = asyncio.new_event_loop()  # the teammate's process, for as long as the test
    ledger = loop.run_until_complete(
        ledger_at(team[0], load_policy(policy).policy.budget, team="cap1", user="carol")
    )
    try:
        held = loop.run_until_complete(
            ledger.reserve(
                session="carol-s",
                provider="deepseek",
                role="architect",
                model="deepseek-reasoner",
                amount_usd=0.0002,
            )
        )
        kept = _ask("bob", policy, monkeypatch, capsys)
        loop.run_until_complete(ledger.release(held.id, "failed"))
    finally:
        loop.run_until_complete(ledger.close())
        loop.close()
    assert kept["model"] != "deepseek-reasoner"

    report = _simulate(_chains(capsys)[-1], policy, policy, capsys)
    assert report["against_differs_from_recorded"] == 0, report["differs_seqs"]
    assert report["cloud_usd_against"] == report["cloud_usd_new"] == 0
    assert report["team_spend"] == {"calls": 0, "usd": 0.0, "in_flight": 1}


def test_a_chains_own_costs_are_replayed_not_read_again_from_the_ledger(
    team: tuple[str, SimFakes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One instance (a chain) makes two requests, a teammate's call between them: its own
    first call is in the team ledger too, and charged from there besides its replay it
    would leave its second request too little (it had enough)."""
    from app.backends.base import ChatRequest, Message
    from app.config import Settings
    from app.policy import load_policy
    from app.router.session import open_session
    from app.router.types import Signals

    policy = _policy(tmp_path, team[1], "cap.toml", (LOOSE, "deepseek = 0.0004\n"))
    fakes = team[1]
    env = Settings(
        data_dir=tmp_path / "alice",
        vllm_url=fakes.vllm.base_url,
        llamacpp_server_url=fakes.llamacpp.base_url,
        database_url=team[0],
        team="cap1",
        user="alice",
    )
    request = ChatRequest(messages=[Message(role="user", content="plan the fix")], max_tokens=256)
    loop = asyncio.new_event_loop()  # alice's instance, open while bob asks
    opened = open_session(env, load_policy(policy).policy, approve="allow")
    session = loop.run_until_complete(opened.__aenter__())
    try:
        ask = session.router.complete("architect", request, Signals(confidence=0.5))
        assert loop.run_until_complete(ask).model == "deepseek-reasoner"
        assert _ask("bob", policy, monkeypatch, capsys)["model"] == "deepseek-reasoner"
        ask = session.router.complete("architect", request, Signals(confidence=0.5))
        assert loop.run_until_complete(ask).model == "deepseek-reasoner"
    finally:
        loop.run_until_complete(opened.__aexit__(None, None, None))
        loop.close()

    report = _simulate(_chains(capsys)[0], policy, policy, capsys)
    assert report["decisions"] == 2 and report["changed"] == 0
    assert report["against_differs_from_recorded"] == 0, report["differs_seqs"]
    assert report["blocked"] == []
    assert report["team_spend"]["calls"] == 1
