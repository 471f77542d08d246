"""Privacy and High-Risk: ``local_only`` a boolean the spec may only turn on, and ``HR``
YES only where the cloud Judge can run (GR-002, GR-009)."""

from __future__ import annotations

from app.policy.spec import clean_value, first_word, read_bool
from app.policy.spec_checks.findings import Findings

#: the seed's wording for a spec that leaves High-Risk to the run's classifier
HR_UNDECIDED = "YES/NO"


def check_local_only(f: Findings) -> bool | None:
    """The spec's local_only, or None when it is missing or not a boolean."""
    entry = f.one("local_only", "privacy.local_only", "local_only = true|false")
    if entry is None:
        return None
    value = read_bool(entry.value)  # the run's reader (SpecBlock.local_only)
    if value is None:
        f.error(
            entry.line,
            "privacy.local_only",
            f"local_only must be true or false, got {entry.value.strip() or 'nothing'!r}",
        )
        return None
    if not value and f.local_only_by is not None:
        f.warn(
            entry.line,
            "privacy.local_only",
            f"{f.local_only_by}: a spec can turn it on, never off",
        )
    return value


def check_hr(
    f: Findings, *, judge_yes: bool, local_only: bool | None, required: bool
) -> bool | None:
    """The spec's HR (None: missing, undecided or unreadable). ``judge_yes``: the spec
    marks the Judge YES; ``local_only``: what :func:`check_local_only` read."""
    entry = f.one("hr", "high_risk.HR", "HR = YES|NO", required=required)
    if entry is None:
        return None
    raw = clean_value(entry.value)
    word = first_word(raw)
    if word == HR_UNDECIDED:
        f.warn(
            entry.line,
            "high_risk.HR",
            "HR left as YES/NO: the run's High-Risk classifier decides (§7)",
        )
        return None
    if word not in ("YES", "NO"):
        f.error(entry.line, "high_risk.HR", f"HR must be YES or NO, got {raw or 'nothing'!r}")
        return None
    if word == "NO":
        return False
    judge = f.policy.roles.get("judge")
    if judge is None or not any(f.policy.is_cloud(m) for m in f.policy.chain("judge")):
        f.error(entry.line, "high_risk.HR", "HR = YES needs a cloud Judge, and the policy has none")
    if f.block.infrastructure_only:
        f.error(
            entry.line,
            "high_risk.HR",
            "HR = YES requires the cloud Judge (GR-002), but an infrastructure-only spec "
            "exercises no role",
        )
    elif not judge_yes:
        f.error(
            entry.line,
            "high_risk.HR",
            "HR = YES requires the cloud Judge (GR-002): mark 'Auditor/Judge: YES'",
        )
    if local_only is True or f.local_only_by is not None:
        # the policy's local_only counts too, and the session's: a spec can never turn
        # it off
        f.error(
            entry.line,
            "high_risk.HR",
            "HR = YES requires the cloud Judge (GR-002), which local_only = true forbids "
            "(GR-009): the run could never be merge-ready",
        )
    return True
