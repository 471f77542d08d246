"""What each stage of a run cost: model calls, tokens in and out, seconds (stages.json).

Read from the run's own audit lines (every model call is a ``call`` line with its usage;
a role's calls are its stage's) and the stage changes the run published: the figures
the evidence shows are the ones the audit chain holds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

#: the evidence file
STAGES = "stages.json"


class StageClock:
    """How long each stage was at work: from a start to its end, summed over its turns (the
    tests run once per loop: timed first loop to last, they held the Implementer's model
    calls between the loops). A start while a stage is open changes nothing (a role says
    which model is at work with another "started")."""

    def __init__(self) -> None:
        #: the stages at work now, and since when (time.monotonic)
        self.open: dict[str, float] = {}
        #: seconds at work of each stage that has ended at least once
        self.spent: dict[str, float] = {}

    def started(self, stage: str, now: float) -> None:
        self.open.setdefault(stage, now)

    def ended(self, stage: str, now: float) -> None:
        since = self.open.pop(stage, now)
        self.spent[stage] = self.spent.get(stage, 0.0) + (now - since)


def stage_report(
    lines: Iterable[Mapping[str, Any]], clock: StageClock
) -> dict[str, dict[str, Any]]:
    """Per stage: calls, tokens_in, tokens_out, model_seconds (the calls' own time) and
    seconds (the stage's own time at work, :class:`StageClock`; None for a stage that
    never said it ended)."""
    out: dict[str, dict[str, Any]] = {}

    def row(stage: str) -> dict[str, Any]:
        return out.setdefault(
            stage,
            {"calls": 0, "tokens_in": 0, "tokens_out": 0, "model_seconds": 0.0, "seconds": None},
        )

    for line in lines:
        if line.get("kind") != "call":
            continue
        values = line.get("values") or {}
        r = row(str(line.get("role") or "?"))
        r["calls"] += 1
        r["tokens_in"] += int(values.get("tokens_in", 0))
        r["tokens_out"] += int(values.get("tokens_out", 0))
        r["model_seconds"] = round(r["model_seconds"] + values.get("latency_ms", 0) / 1000, 3)
    for stage in clock.open:
        row(stage)
    for stage, seconds in clock.spent.items():
        row(stage)["seconds"] = round(seconds, 3)
    return out


def read_audit(path: Path) -> list[dict[str, Any]]:
    """The run's exported audit lines (audit.jsonl), or none."""
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
