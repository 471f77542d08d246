"""What the evidence screen shows of one run, read from its bundle on disk.

Read-only and synchronous (called in a thread worker). Everything that can fail is
caught and reported as a problem line: a broken bundle is something to show, not a crash.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.errors import SwitchyardError
from app.evidence.bundle import (
    AUDIT,
    COST,
    MERGE_READY,
    PLAN,
    TASK_BRIEF,
    VERDICT,
    BundleReport,
    EvidenceError,
    Manifest,
    RunInfo,
    list_runs,
    read_manifest,
    resolve_run,
    verify_bundle,
)
from app.evidence.layout import PLAN_STEPS
from app.evidence.read import read_sidecars
from app.policy.schema import Policy
from app.workspace.merge import MergePlan, preview_merge
from app.workspace.merged import Merged, merged_heads, merged_into

_NUMBERED = re.compile(r"-(\d+)\.")
#: the runs list's status of a merge-ready run found merged into the branch checked out
MERGED = "merged"
BUSY = (
    "another Switchyard merge of this repository is under way: the gate is read once it"
    " is done (open the run again, or press m: the merge waits for it)"
)


@dataclass
class LoopLog:
    name: str
    log: str
    record: dict[str, Any] | None = None


@dataclass
class RunView:
    run_id: str
    path: Path
    report: BundleReport
    brief: str = ""
    plan: dict[str, Any] | None = None
    plan_steps: list[str] | None = None
    diffs: list[tuple[str, str]] = field(default_factory=list)
    loops: list[LoopLog] = field(default_factory=list)
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)
    cost: dict[str, Any] | None = None
    #: Tier2, Librarian, second opinions: advice for the reviewer, never the gate's input
    sidecars: list[str] = field(default_factory=list)
    merge: MergePlan | None = None
    #: the run is merged into the branch checked out (git says so: app/workspace/merged.py)
    merged: Merged | None = None
    #: why the merge plan is not shown: another merge of the repository was under way
    merge_busy: str | None = None
    #: what could not be read, "what: why"
    problems: list[str] = field(default_factory=list)

    @property
    def blockers(self) -> list[str]:
        """Why a merge would be refused now (empty: the gate holds, pressing m merges)."""
        if self.merge is None:
            busy = [self.merge_busy] if self.merge_busy else []
            return busy or self.problems or ["EVIDENCE: the merge could not be prepared"]
        return self.merge.blockers()


def runs(repo: Path) -> list[RunInfo]:
    """The runs, newest first; a merge-ready run merged into the branch checked out
    reads ``merged`` (its sealed manifest keeps ``merge_ready`` for good)."""
    listed = list(reversed(list_runs(repo)))
    ready: list[Manifest] = []
    for run in listed:
        if run.status == MERGE_READY:
            try:
                ready.append(read_manifest(Path(run.path)))
            except EvidenceError:
                continue
    merged = merged_heads(repo, ready) if ready else set()
    return [r.model_copy(update={"status": MERGED}) if r.run_id in merged else r for r in listed]


def _numbered(path: Path) -> int:
    m = _NUMBERED.search(path.name)
    return int(m.group(1)) if m else 0


def _text(path: Path, problems: list[str]) -> str:
    try:
        # bytes, then text: read_text's universal newlines turned a diff's CRLF into LF and
        # its lone CR into a line break (the viewer shows each CR as ␍ instead)
        return path.read_bytes().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    except OSError as exc:
        problems.append(f"{path.name}: {exc.strerror or exc}")
        return ""


def _json(path: Path, problems: list[str]) -> Any:
    raw = _text(path, problems)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        problems.append(f"{path.name}: not JSON ({exc})")
        return None


def load_run_view(
    repo: Path, run_id: str, sealed_sha256: str | None, policy: Policy | None
) -> RunView:
    """The run as the evidence screen shows it. Without ``policy`` (no session) the gate
    is not read: the view says why instead of guessing which verdicts count."""
    path = resolve_run(repo, run_id)
    problems: list[str] = []
    view = RunView(run_id=path.name, path=path, report=verify_bundle(path), problems=problems)
    view.brief = _text(path / TASK_BRIEF, problems)
    plan = _json(path / PLAN, problems)
    view.plan = plan if isinstance(plan, dict) else None
    steps = _json(path / PLAN_STEPS, problems)  # each step's status as the run published it
    if isinstance(steps, dict) and isinstance(steps.get("statuses"), list):
        view.plan_steps = [str(s) for s in steps["statuses"]]
    diffs = path / "diffs"
    if diffs.is_dir():
        for p in sorted(diffs.glob("*.diff"), key=_numbered):
            view.diffs.append((p.stem, _text(p, problems)))
    tests = path / "tests"
    if tests.is_dir():
        for p in sorted(tests.glob("loop-*.log"), key=_numbered):
            record = _json(p.with_suffix(".json"), problems)
            view.loops.append(
                LoopLog(p.stem, _text(p, problems), record if isinstance(record, dict) else None)
            )
    verdict = _json(path / VERDICT, problems)
    if isinstance(verdict, dict) and isinstance(verdict.get("verdicts"), list):
        verdict = verdict["verdicts"]
    if isinstance(verdict, dict):
        verdict = [verdict]
    view.verdicts = [v for v in verdict or [] if isinstance(v, dict)]
    for n, raw in enumerate(_text(path / AUDIT, problems).splitlines(), 1):
        if raw.strip():
            try:
                view.audit.append(json.loads(raw))
            except ValueError:
                problems.append(f"{AUDIT}: line {n} is not JSON")
    cost = _json(path / COST, problems)
    view.cost = cost if isinstance(cost, dict) else None
    try:
        view.sidecars = read_sidecars(path)
    except SwitchyardError as exc:
        problems.append(f"sidecars: {exc}")
    if view.report.manifest is not None:
        view.merged = merged_into(repo, view.report.manifest)
    if policy is None:
        problems.append("merge: the session is not open, so the merge gate cannot be read")
        return view
    try:
        # only a preview (m reads the plan again under the merge lock): read under the
        # lock when it is free, never waited for, and never half way through another merge
        view.merge = preview_merge(repo, view.run_id, sealed_sha256=sealed_sha256, policy=policy)
        if view.merge is None:
            view.merge_busy = BUSY
    except SwitchyardError as exc:
        problems.append(f"merge: {exc}")
    return view
