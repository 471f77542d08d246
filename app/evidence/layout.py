"""A bundle's layout: where bundles live, the names of the files in one, and which names
a bundle may hold at all (the table is in :mod:`app.evidence.bundle`).

The names live here, below every other bundle module, so the writer, the verifier and
the run finder share them without importing one another; ``app.evidence.bundle``
re-exports them.
"""

from __future__ import annotations

import re
from pathlib import Path

from app.errors import UsageError
from app.paths import state_path

RUNS_DIR = "runs"

MANIFEST = "manifest.json"
RUN_INFO = "run.json"
TASK_BRIEF = "TASK_BRIEF.md"
BRIEF = "brief.json"
PLAN = "plan.json"
#: each plan step's last published status (pending, active, done, skipped, failed)
PLAN_STEPS = "plan_steps.json"
HIGHRISK = "highrisk.json"
CRITIQUE = "critique.json"
SECOND_OPINION = "second_opinion.json"
SYNTHESIS = "synthesis.json"
CONDENSED = "condensed.json"
#: what the spec's §8 block changed for the run (roles, HR, thresholds, caps)
SPEC_OVERRIDES = "spec_overrides.json"
VERDICT = "verdict.json"
AUDIT = "audit.jsonl"
COST = "cost.json"

#: a file being written atomically; never evidence (see :func:`check_name`)
TMP_PREFIX = ".tmp-"
_NAME_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


def runs_dir(repo: Path) -> Path:
    """Where the repository's evidence runs are; never through a link (see state_path)."""
    return state_path(Path(repo), RUNS_DIR)


def diff_name(attempt: int) -> str:
    return f"diffs/attempt-{attempt}.diff"


def edits_name(attempt: int) -> str:
    """The attempt's edit list, the applier's notes and refusals, reply by reply."""
    return f"edits/attempt-{attempt}.json"


def loop_log_name(loop: int) -> str:
    return f"tests/loop-{loop}.log"


def loop_result_name(loop: int) -> str:
    return f"tests/loop-{loop}.json"


def check_name(name: str) -> str:
    """A bundle-relative file name: plain parts, no '..', not the manifest, no temp names."""
    parts = name.split("/")
    if (
        not name
        or name == MANIFEST
        or any(not _NAME_PART.match(p) or p in (".", "..") for p in parts)
        or parts[-1].startswith(TMP_PREFIX)
    ):
        raise UsageError(f"invalid evidence file name {name!r}")
    return name


__all__ = [
    "AUDIT",
    "BRIEF",
    "CONDENSED",
    "COST",
    "CRITIQUE",
    "HIGHRISK",
    "MANIFEST",
    "PLAN",
    "RUNS_DIR",
    "RUN_INFO",
    "SECOND_OPINION",
    "SYNTHESIS",
    "TASK_BRIEF",
    "TMP_PREFIX",
    "VERDICT",
    "check_name",
    "diff_name",
    "edits_name",
    "loop_log_name",
    "loop_result_name",
    "runs_dir",
]
