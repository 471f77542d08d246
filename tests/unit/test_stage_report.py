"""stages.json (issue 17): each stage's calls, tokens and seconds, from the run's own audit
lines and the stage changes it published."""

from __future__ import annotations

from app.pipeline.stages import stage_report


def test_calls_and_tokens_per_role_and_seconds_per_stage() -> None:
    lines = [
        {"kind": "route", "role": "architect"},
        {
            "kind": "call",
            "role": "architect",
            "values": {"tokens_in": 10, "tokens_out": 5, "latency_ms": 1500},
        },
        {
            "kind": "call",
            "role": "architect",
            "values": {"tokens_in": 7, "tokens_out": 3, "latency_ms": 500},
        },
        {"kind": "repair", "role": "implementer"},
        {"kind": "call", "role": "ace", "values": {"tokens_in": 2, "tokens_out": 1}},
    ]
    times: dict[str, list[float | None]] = {
        "architect": [100.0, 104.5],
        "stage0": [99.0, 99.25],
        "tests": [101.0, None],
    }
    report = stage_report(lines, times)
    assert report["architect"] == {
        "calls": 2,
        "tokens_in": 17,
        "tokens_out": 8,
        "model_seconds": 2.0,
        "seconds": 4.5,
    }
    assert report["stage0"]["calls"] == 0 and report["stage0"]["seconds"] == 0.25
    # a role without a stage of its own (ACE runs inside the Implementer's) has no seconds
    assert report["ace"]["calls"] == 1 and report["ace"]["seconds"] is None
    assert "implementer" not in report  # a repair line is not a call
    # a stage that started and never said it ended has no seconds (not a made-up zero)
    assert report["tests"]["seconds"] is None
