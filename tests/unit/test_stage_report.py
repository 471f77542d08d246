"""stages.json (issue 17): each stage's calls, tokens and seconds, from the run's own audit
lines and the stage changes it published."""

from __future__ import annotations

from app.pipeline.stages import StageClock, stage_report


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
    clock = StageClock()
    clock.started("stage0", 99.0)
    clock.ended("stage0", 99.25)
    clock.started("architect", 100.0)
    clock.started("architect", 101.0)  # another model at work: the stage stays open
    clock.ended("architect", 104.5)
    clock.started("tests", 101.0)
    report = stage_report(lines, clock)
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


def test_a_stage_at_work_in_turns_counts_its_turns_only() -> None:
    """The tests run once per loop: timed from the first loop to the last, they held the
    Implementer's model calls between the loops (a baseline, 100 s of model calls, a loop:
    ~102 s of "tests")."""
    clock = StageClock()
    clock.started("tests", 0.0)
    clock.ended("tests", 1.0)  # the baseline
    clock.started("tests", 101.0)  # after 100 s of the Implementer's calls
    clock.ended("tests", 102.5)
    assert stage_report([], clock)["tests"]["seconds"] == 2.5
    assert clock.open == {}
