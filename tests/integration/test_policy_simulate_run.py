"""A whole `switchyard run` (the pipeline: Stage0, the Architect escalating at confidence
0.6, the Implementer, the Judge, the evidence) writes a log that replays under its own
policy with nothing changed and nothing unsimulated."""

from __future__ import annotations

from typing import Any

import pytest

from tests.reliability.kit import run_json
from tests.reliability.test_r4_fault_matrix import env, run_pipeline  # noqa: F401


def test_a_pipeline_run_replays_under_its_own_policy(
    env: dict[str, Any],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = run_pipeline(env, capsys)
    lines = result["lines"]
    firsts = [a for a in lines if a["values"].get("inputs", {}).get("step") == 0]
    assert {a["role"] for a in firsts} >= {"architect", "implementer"}
    assert any(a["kind"] == "escalation" for a in firsts)
    policy = str(env["policy"])
    argv = ["policy", "simulate", "--policy", policy, "--against", policy]
    rc, report, err = run_json(argv, capsys)
    assert rc == 0, err
    assert report["decisions"] == len(firsts)
    assert report["unsimulated"]["count"] == 0
    assert report["changed"] == 0 and report["against_differs_from_recorded"] == 0
    cloud = sum(a["values"]["cost_usd"] for a in lines if a["kind"] == "call")
    assert report["cloud_usd_new"] == pytest.approx(cloud, abs=1e-5)
