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


def stage_report(
    lines: Iterable[Mapping[str, Any]], times: Mapping[str, list[float | None]]
) -> dict[str, dict[str, Any]]:
    """Per stage: calls, tokens_in, tokens_out, model_seconds (the calls' own time) and
    seconds (first start to last finish of the stage, when it published both)."""
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
    for stage, (start, end) in times.items():
        r = row(stage)
        if start is not None and end is not None:
            r["seconds"] = round(end - start, 3)
    return out


def read_audit(path: Path) -> list[dict[str, Any]]:
    """The run's exported audit lines (audit.jsonl), or none."""
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
