"""Reading what the merge gate and ``evidence show`` need out of a bundle.

Verify the bundle first (:func:`app.evidence.bundle.verify_bundle`): these readers
trust the bytes and only check their shape.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from app.audit.log import AuditLog
from app.counted import counted
from app.dollars import dollars
from app.evidence.bundle import (
    COST,
    HIGHRISK,
    VERDICT,
    EvidenceError,
    Manifest,
    TestLoopRecord,
    sealed_hash,
)
from app.evidence.files import read_regular
from app.policy.gate import (
    HIGH_RISK_JUDGE,
    TESTS,
    GateInput,
    GateResult,
    VerdictRecord,
    catalogued,
    merge_gate,
)
from app.policy.schema import Policy

_LOOP_FILE = re.compile(r"^loop-(\d+)\.json$")
_VERDICT_FIELDS = tuple(VerdictRecord.model_fields)


def read_json(path: Path) -> Any:
    try:
        return json.loads(read_regular(path).decode("utf-8"))
    except OSError as exc:
        raise EvidenceError(f"{path.name}: cannot be read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise EvidenceError(f"{path.name}: not valid JSON ({exc})") from None


def read_verdicts(bundle: Path) -> list[VerdictRecord]:
    """``verdict.json`` → the gate's records; no file means no verdict.

    Accepts ``{"verdicts": [...]}``, a bare list, or one verdict object. Each needs the
    :class:`VerdictRecord` fields; anything else it carries (findings …) is left out.
    """
    path = Path(bundle) / VERDICT
    if not path.exists():
        return []
    data = read_json(path)
    if isinstance(data, dict) and "verdicts" in data:
        data = data["verdicts"]
    items = data if isinstance(data, list) else [data]
    out: list[VerdictRecord] = []
    for n, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise EvidenceError(f"{VERDICT}: verdict {n} is not an object")
        fields = {k: item[k] for k in _VERDICT_FIELDS if k in item}
        if isinstance(fields.get("verdict"), str):
            fields["verdict"] = fields["verdict"].replace("-", "_")  # "needs-work"
        try:
            out.append(VerdictRecord.model_validate(fields))
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise EvidenceError(f"{VERDICT}: verdict {n}: {loc}: {err['msg']}") from None
    return out


def read_test_loops(bundle: Path) -> list[TestLoopRecord]:
    """Every ``tests/loop-N.json``, in loop order."""
    folder = Path(bundle) / "tests"
    found: list[tuple[int, Path]] = []
    if folder.is_dir():
        for p in folder.iterdir():
            m = _LOOP_FILE.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
    out: list[TestLoopRecord] = []
    for _, p in sorted(found):
        try:
            out.append(TestLoopRecord.model_validate(read_json(p)))
        except ValidationError as exc:
            err = exc.errors()[0]
            raise EvidenceError(f"tests/{p.name}: {err['loc']}: {err['msg']}") from None
    return out


def read_high_risk(bundle: Path) -> bool | None:
    """``highrisk.json``'s ``high_risk``; None when the bundle has no classification."""
    path = Path(bundle) / HIGHRISK
    if not path.exists():
        return None
    data = read_json(path)
    value = data.get("high_risk") if isinstance(data, dict) else None
    if not isinstance(value, bool):
        raise EvidenceError(f"{HIGHRISK}: no boolean high_risk field")
    return value


def read_sidecars(bundle: Path) -> list[str]:
    """One line per non-authoritative helper the run used (Tier2, Librarian, second
    opinions), for a reviewer; none of it feeds the gate. Missing files say nothing."""
    try:
        return _sidecar_lines(bundle)
    except (AttributeError, TypeError):  # valid JSON of the wrong shape
        return ["(a sidecar file has an unexpected shape)"]


def _sidecar_lines(bundle: Path) -> list[str]:
    out: list[str] = []
    path = bundle / "synthesis.json"
    if path.is_file():
        t = read_json(path)
        synth = t.get("synthesis") or {}
        if synth:
            claims = len(synth.get("claims") or [])
            pairs = len(synth.get("contradictions") or [])
            out.append(
                f"tier2 {t.get('status')} by {t.get('model')}: "
                f"{counted(claims, 'checked claim')}, {counted(pairs, 'contradiction')}"
            )
        else:
            out.append(f"tier2 {t.get('status')}: {t.get('reason') or 'no synthesis'}")
    path = bundle / "condensed.json"
    if path.is_file():
        c = read_json(path)
        by = ", ".join(c.get("models") or []) or "no model"
        out.append(
            f"librarian condensed ~{c.get('tokens_in')} → ~{c.get('tokens_out')} tokens "
            f"(budget {c.get('budget')}) by {by}"
        )
    path = bundle / "second_opinion.json"
    if path.is_file():
        out += [_second_opinion_line(o) for o in read_json(path).get("opinions") or []]
    return out


#: why no cloud step gave a second opinion, by the recorded outcome
_NOT_REACHED = {
    "denied": "the escalation was denied",
    "unavailable": "the cloud model is unavailable",
    "over_budget": "refused by the GR-011 budget caps",
    "refused": "no cloud step could serve",
}


def _clip(text: str, most: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= most else text[: most - 1] + "…"


def _second_opinion_line(o: dict[str, Any]) -> str:
    """What became of one second opinion, as ``second_opinion.json`` recorded it: each
    outcome says its own (a reply rejected as malformed was approved and paid for; a
    denial is not an unavailable model). A record from before outcomes were kept says
    its own ``skipped`` text."""
    occasion = str(o.get("occasion", "?")).replace("_", " ")
    model = o.get("model")
    opinion = o.get("opinion")
    if opinion:
        text = _clip(str(opinion.get("assessment", "")), 100)
        return f"advice on the {occasion} from {model}: {text}"
    outcome = o.get("outcome")
    skipped = str(o.get("skipped") or "")
    head = f"no second opinion on the {occasion}"
    passed = "; ".join(str(p) for p in o.get("passed_over") or [])
    if outcome == "malformed" or (outcome is None and model and skipped):
        cost = o.get("cost_usd")
        calls = o.get("calls")
        if isinstance(cost, (int, float)) and not isinstance(cost, bool):
            spent = f"{dollars(cost)}" + (
                f" for {counted(calls, 'call')}" if isinstance(calls, int) and calls else ""
            )
            paid = f"approved and paid ({spent})" if cost > 0 else f"approved and called ({spent})"
        else:
            paid = "called (its cost is not in this record)"
        why = skipped.removeprefix("second_opinion ")
        return f"{head}: {model} was {paid}, but its reply was rejected as malformed: {_clip(why)}"
    if outcome == "local_only":
        return f"{head}: local_only forbids every cloud call (GR-009)"
    if outcome == "no_trigger":
        return f"{head}: no trigger fired"
    if outcome == "failed":
        return f"{head}: the call failed: {_clip(skipped)}"
    if outcome in _NOT_REACHED:
        return f"{head}: {_NOT_REACHED[str(outcome)]}" + (f" ({passed})" if passed else "")
    # an older record (no outcome): what it said
    return f"{head}: {_clip(skipped) or 'no reason recorded'}"


def read_cost(bundle: Path) -> dict[str, Any] | None:
    path = Path(bundle) / COST
    if not path.exists():
        return None
    data = read_json(path)
    return data if isinstance(data, dict) else {"value": data}


class GateFacts(BaseModel):
    """What a bundle says about the merge gate's inputs (all but the human's approval)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tests_green: bool
    high_risk: bool
    verdicts: list[VerdictRecord]
    local_only: bool
    #: False: no highrisk.json (``high_risk`` is then the safe default, True)
    high_risk_classified: bool = True
    #: how each fact was read (shown to the human; "CODE: message")
    notes: list[str]
    last_loop: TestLoopRecord | None = None

    def gate(self, *, human_approved: bool, withheld: str | None = None) -> GateResult:
        """``withheld``: why a confirmation given does not count (GateInput.human_withheld)."""
        return merge_gate(
            GateInput(
                tests_green=self.tests_green,
                high_risk=self.high_risk,
                verdicts=self.verdicts,
                human_approved=human_approved,
                local_only=self.local_only,
                high_risk_classified=self.high_risk_classified,
                human_withheld=None if human_approved else withheld,
            )
        )


def gate_facts(bundle: Path, manifest: Manifest, policy: Policy) -> GateFacts:
    """Read the gate's inputs from a (verified) bundle, failing safe where one is missing.

    Tests are green only when the last loop passed on the very commit the manifest seals
    as the branch tip; a bundle without ``highrisk.json`` counts as High-Risk; a verdict's
    model is local or cloud as ``policy``'s catalogue says, whatever its record claims.
    """
    notes: list[str] = []
    loops = read_test_loops(bundle)
    last = loops[-1] if loops else None
    green = False
    if last is None:
        notes.append(f"{TESTS}: no test loop is recorded")
    elif not last.ok:
        why = "timed out" if last.timed_out else f"exited {last.exit_code}"
        # loop 0 is the baseline, before any change: "the last test loop (0)" read as a
        # fix that had been tested
        which = (
            "only the baseline test run, before any change,"
            if last.loop == 0
            else (f"the last test loop ({last.loop})")
        )
        notes.append(f"{TESTS}: {which} {why}")
    elif manifest.head is None:
        notes.append(f"{TESTS}: the run sealed no commit for its test loops to vouch for")
    elif last.commit != manifest.head:
        notes.append(
            f"{TESTS}: the last test loop ran on {str(last.commit)[:12]}, not on the sealed"
            f" branch tip {manifest.head[:12]}"
        )
    else:
        green = True
    high_risk = read_high_risk(bundle)
    classified = high_risk is not None
    if high_risk is None:
        notes.append(f"{HIGH_RISK_JUDGE}: the bundle has no {HIGHRISK}: treated as High-Risk")
        high_risk = True
    verdicts, relabelled = catalogued(read_verdicts(bundle), policy)
    notes += relabelled
    return GateFacts(
        tests_green=green,
        high_risk=high_risk,
        high_risk_classified=classified,
        verdicts=verdicts,
        local_only=manifest.local_only,
        notes=notes,
        last_loop=last,
    )


async def audit_seal(db: Path, run_id: str) -> tuple[str, int] | None:
    """The manifest hash the audit chain in ``db`` sealed for ``run_id`` (and its seq).

    None when the chain has no seal line for the run, or there is no chain at all (the
    database is never created here).
    """
    if not await asyncio.to_thread(Path(db).exists):
        return None
    async with AuditLog.open(db) as log:
        lines = await log.lines(run=run_id)
    return sealed_hash(lines, run_id)


__all__ = [
    "GateFacts",
    "audit_seal",
    "gate_facts",
    "read_cost",
    "read_high_risk",
    "read_json",
    "read_sidecars",
    "read_test_loops",
    "read_verdicts",
]
