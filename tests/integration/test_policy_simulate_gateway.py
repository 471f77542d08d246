"""The gateway's traffic is simulated like a session's: `switchyard serve` (a real server
subprocess, the openai and anthropic SDKs as clients, loopback fakes behind it) writes
the decision lines, and `policy simulate` replays them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_gateway import Gateway, fakes, gw_allow  # noqa: F401
from tests.integration.test_policy_simulate import edited
from tests.reliability.kit import audit_lines, run_json

THRESHOLD_060 = (
    'threshold = 0.75\nseed = "§3 confidence <',
    'threshold = 0.4\nseed = "§3 confidence <',
)


def test_gateway_requests_replay_under_their_policy_and_another(
    gw_allow: Gateway,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = gw_allow.openai
    client.chat.completions.create(model="tutor", messages=[{"role": "user", "content": "hi"}])
    gw_allow.anthropic.messages.create(
        model="architect",
        max_tokens=300,
        messages=[{"role": "user", "content": "plan the fix"}],
        extra_headers={"x-switchyard-signal": "confidence=0.5"},
    )
    client.chat.completions.create(
        model="architect", messages=[{"role": "user", "content": "plan it again"}]
    )
    decisions = [ln for ln in audit_lines() if "inputs" in ln["values"]]
    assert [d["role"] for d in decisions] == ["tutor", "architect", "architect"]
    # the gateway's reservation covers the client's max_tokens: recorded, replayed
    assert decisions[1]["values"]["inputs"]["signals"]["output_tokens"] == 300
    policy = tmp_path / "policy.toml"  # the gateway's (tests/fakes/policy.py)
    argv = ["policy", "simulate", "--policy", str(policy), "--against", str(policy)]
    rc, same, err = run_json(argv, capsys)
    assert rc == 0, err
    assert (same["decisions"], same["changed"], same["unsimulated"]["count"]) == (3, 0, 0)
    assert same["against_differs_from_recorded"] == 0
    # a lower Architect threshold keeps the 0.5 plan local
    lower = edited(tmp_path, "lower.toml", policy, THRESHOLD_060)
    rc, other, err = run_json([*argv[:3], str(lower), *argv[4:]], capsys)
    assert rc == 0, err
    assert other["changed"] == 1
    [change] = other["biggest_changes"]
    assert change["kind"] == "escalation_removed" and change["seq"] == decisions[1]["seq"]
    assert change["against"] == "gpt-5.1-high (cloud)"
    assert change["new_usd"] == 0 and change["against_usd"] > 0
