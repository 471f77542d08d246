"""The merge gate: a pure predicate over the evidence, never a model's say-so (GR-002/003/006).

Rules, all checked (every failing one is reported, not just the first):

* tests are green (GR-006);
* a human approved the merge (always required);
* a local model's verdict never approves (GR-003): it is kept as advice in ``notes``;
  whether a model is local is the policy's catalogue's word (:func:`catalogued`), not the
  record's own labels;
* a verdict whose citations do not resolve does not count, for or against (GR-007);
* under ``local_only`` a cloud verdict does not count either: no cloud call may have made
  it (GR-009), so a High-Risk change made under local_only cannot merge;
* High-Risk needs at least one counting cloud ``approve`` (GR-002); a run never
  classified is held to that too, and its reason says it was never classified;
* any counting cloud ``reject`` or ``needs_work`` blocks, High-Risk or not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from app.policy.schema import Policy

Verdict = Literal["approve", "reject", "needs_work"]

# Reason codes: the first token of every reason and note, before the colon.
TESTS = "GR-006"
HUMAN = "HUMAN"
HIGH_RISK_JUDGE = "GR-002"
LOCAL_CANNOT_APPROVE = "GR-003"
UNRESOLVED_CITATIONS = "GR-007"
LOCAL_ONLY = "GR-009"
JUDGE_BLOCKS = "JUDGE"


class VerdictRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    provider: str
    local: bool
    verdict: Verdict
    citations_resolved: bool

    @property
    def is_local(self) -> bool:
        # Either mark is enough: a mislabelled local model must not pass as cloud.
        return self.local or self.provider == "local"

    @property
    def who(self) -> str:
        return f"{self.model} ({self.provider})"


class GateInput(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tests_green: bool
    high_risk: bool
    verdicts: list[VerdictRecord] = Field(default_factory=list)
    human_approved: bool
    local_only: bool = False
    #: False: the run was never classified (no highrisk.json: it changed nothing, or
    #: stopped before the Judge), and ``high_risk`` is the safe default, not a finding.
    #: Only the reason's words depend on it: "High-Risk change" read as a fact about a
    #: run that changed nothing (a user-audit)
    high_risk_classified: bool = True
    #: why a confirmation the human gave does not count here (``human_approved`` is then
    #: False): the HUMAN reason says it, where "needs a human's approval" read as if none
    #: had been given (``merge --yes`` on a tree the run never tested: a user audit)
    human_withheld: str | None = None


class GateResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    ok: bool
    #: every failing rule, "CODE: message"; empty exactly when ok
    reasons: list[str]
    #: the first cloud approve that counts (whether or not something else blocks)
    approving_verdict: VerdictRecord | None = None
    #: verdicts recorded but not counted, "CODE: message" (advice for the human)
    notes: list[str] = Field(default_factory=list)


def merge_gate(inp: GateInput) -> GateResult:
    """Decide whether a change may merge. Pure and total."""
    reasons: list[str] = []
    notes: list[str] = []
    # Why each approve that did not count was dropped; a reason only when HR needed it.
    dropped_approvals: list[str] = []

    if not inp.tests_green:
        reasons.append(f"{TESTS}: tests are not green; compiler and tests are the truth")
    if not inp.human_approved:
        why = inp.human_withheld or "a merge needs a human's approval"
        reasons.append(f"{HUMAN}: {why}")

    approving: VerdictRecord | None = None
    for v in inp.verdicts:
        if v.is_local:
            note = (
                f"{LOCAL_CANNOT_APPROVE}: local model {v.who} cannot approve a merge;"
                f" its {v.verdict} verdict is advice only"
            )
        elif inp.local_only:
            note = f"{LOCAL_ONLY}: cloud verdict from {v.who} does not count while local_only is on"
        elif not v.citations_resolved:
            note = (
                f"{UNRESOLVED_CITATIONS}: {v.verdict} verdict from {v.who} cites evidence"
                " that does not resolve; it does not count"
            )
        else:
            if v.verdict == "approve":
                approving = approving or v
            else:
                code = HIGH_RISK_JUDGE if inp.high_risk else JUDGE_BLOCKS
                reasons.append(f"{code}: cloud Judge {v.who} says {v.verdict}")
            continue
        notes.append(note)
        if v.verdict == "approve":
            dropped_approvals.append(note)

    if inp.high_risk and approving is None:
        if inp.high_risk_classified:
            reasons.append(
                f"{HIGH_RISK_JUDGE}: High-Risk change needs an approving cloud Judge verdict"
            )
        else:
            reasons.append(
                f"{HIGH_RISK_JUDGE}: the run was never classified as High-Risk or not, so it"
                " is held to the High-Risk gate: it needs an approving cloud Judge verdict"
            )
        if inp.local_only:
            reasons.append(
                f"{LOCAL_ONLY}: the run was made under local_only, so no cloud Judge ran;"
                " a High-Risk change needs one before it can merge (run it again without"
                " local_only)"
            )
        reasons.extend(dropped_approvals)

    return GateResult(ok=not reasons, reasons=reasons, approving_verdict=approving, notes=notes)


def catalogued(
    verdicts: list[VerdictRecord], policy: Policy
) -> tuple[list[VerdictRecord], list[str]]:
    """Each verdict with the provider the policy's catalogue gives its model, and a note
    for each one whose own labels said otherwise. A verdict read from a file carries its
    ``provider`` and ``local`` as written: a local model labelled ``openai``, or a model
    the policy does not know, must not pass as a cloud Judge (GR-002/003). Such a verdict
    counts as a local one: advice, never an approval."""
    out: list[VerdictRecord] = []
    notes: list[str] = []
    for v in verdicts:
        model = policy.models.get(policy.resolve(v.model))
        if model is None:
            why = "is not in the policy's catalogue"
            fixed = v.model_copy(update={"local": True, "provider": "unknown"})
        elif model.provider == "local":
            why = "is a local model in the policy's catalogue"
            fixed = v.model_copy(update={"local": True, "provider": "local"})
        else:
            out.append(
                v
                if v.provider == model.provider
                else v.model_copy(update={"provider": model.provider})
            )
            continue
        if not v.is_local:  # its labels claimed a cloud Judge
            notes.append(
                f"{LOCAL_CANNOT_APPROVE}: verdict.json names {v.who} as a cloud Judge, but"
                f" {v.model} {why}: its {v.verdict} verdict counts as a local one"
            )
        out.append(fixed)
    return out, notes


__all__ = ["GateInput", "GateResult", "VerdictRecord", "catalogued", "merge_gate"]
