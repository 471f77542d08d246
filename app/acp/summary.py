"""The final agent message of a run: the outcome, the Judge's verdict, the evidence bundle.

Read from the bundle, so a loaded session replays exactly what the evidence says.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from app.evidence.bundle import EvidenceError
from app.evidence.layout import runs_dir


def run_summary(repo: Path, run_id: str, outcome: str | None, reason: str) -> str:
    bundle = runs_dir(repo) / run_id
    status = outcome or "stopped"
    lines = [f"**Run {run_id}: {status}**" + (f": {reason}" if reason else "")]
    lines += [f"- {v}" for v in verdict_lines(bundle)] or ["- Judge: no verdict recorded"]
    lines.append(f"- evidence bundle `{run_id}`: {bundle}")
    return "\n".join(lines) + "\n"


def verdict_lines(bundle: Path) -> list[str]:
    """One line per verdict in ``verdict.json`` (local verdicts marked advice only)."""
    records: list[Any] = []
    with contextlib.suppress(OSError, ValueError, EvidenceError):
        data = json.loads((bundle / "verdict.json").read_text(encoding="utf-8"))
        records = data.get("verdicts", []) if isinstance(data, dict) else list(data)
    out = []
    for r in records:
        if not isinstance(r, dict):
            continue
        local = r.get("local") or r.get("provider") == "local"
        who = f"{r.get('model', '?')} ({r.get('provider', '?')})"
        tail = " (local: advice only, GR-003)" if local else ""
        summary = str(r.get("summary") or "").strip()
        out.append(
            f"Judge: {r.get('verdict', '?')} by {who}{tail}" + (f": {summary}" if summary else "")
        )
    return out
