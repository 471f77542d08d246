"""The Judge's citations must resolve to evidence (pure checks over what the run holds)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from app.pipeline.schemas import Verdict

_PATH_LINE = re.compile(r"^(?P<path>[^\s:]+):(?P<line>\d+)$")


@dataclass(frozen=True)
class EvidenceIndex:
    """What a citation may point at in this run."""

    root: Path  # the run's worktree
    changed: frozenset[str]  # files the diff touched
    tests: str  # every test log of the run, concatenated
    audit_seqs: frozenset[int]


def resolve_citation(cite: str, ev: EvidenceIndex) -> str | None:
    """None when ``cite`` points at real evidence, else why not."""
    cite = cite.strip().strip("`")
    if cite.startswith("test:"):
        name = cite[5:].strip()
        return None if name and name in ev.tests else f"{cite}: no such test in the logs"
    if cite.startswith("audit:"):
        raw = cite[6:].strip().lstrip("#")
        if not raw.isdigit():
            return f"{cite}: not an audit line number"
        return None if int(raw) in ev.audit_seqs else f"{cite}: no such audit line in this run"
    m = _PATH_LINE.match(cite)
    if not m:
        return f"{cite}: not path:line, test:NAME or audit:SEQ"
    path, line = m["path"], int(m["line"])
    if path not in ev.changed:
        return f"{cite}: {path} is not a file this change touched"
    target = ev.root / path
    try:
        count = len(target.read_text(encoding="utf-8", errors="replace").splitlines())
    except OSError:
        return f"{cite}: {path} cannot be read"
    return None if 1 <= line <= count else f"{cite}: line {line} is outside {path} (1–{count})"


def check_verdict(verdict: Verdict, ev: EvidenceIndex) -> list[str]:
    """Problems with the verdict's citations; an approval without evidence is one."""
    problems = [p for f in verdict.findings if (p := resolve_citation(f.cite, ev))]
    if verdict.verdict == "approve" and not verdict.findings:
        problems.append("an approval must cite at least one piece of evidence")
    return problems
