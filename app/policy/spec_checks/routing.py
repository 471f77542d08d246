"""Routing and escalation: the routing mode, the Architect, Implementer and Librarian
thresholds against the policy's triggers, and Kimi and DeepSeek escalation-only."""

from __future__ import annotations

import math
import re

from app.policy.schema import Trigger
from app.policy.spec import SpecEntry, clean_value, read_yes_no
from app.policy.spec_checks.findings import Findings

ROUTING_MODE = "local-first with escalation"
#: providers whose models §4/§5 call Kimi and DeepSeek
FAMILY_PROVIDERS = {"kimi": "moonshot", "deepseek": "deepseek"}

OPS = {"<": "lt", "<=": "le", ">": "gt", ">=": "ge", "≤": "le", "≥": "ge", "=<": "le", "=>": "ge"}
OP_TEXT = {"lt": "<", "le": "<=", "gt": ">", "ge": ">="}
COMPARISON = re.compile(
    r"(?P<op><=|>=|=<|=>|≤|≥|<|>)\s*(?P<num>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[kK]\b)?"
)
THOUSANDS = re.compile(r"(?<=[0-9]),(?=[0-9]{3}\b)")
LOOPS = re.compile(r"^\s*(?P<num>[0-9]+)\s+failed\b", re.I)


def check_routing(f: Findings, *, required: bool) -> None:
    """The routing mode and escalation lines; ``required``: missing ones are findings."""
    mode = f.one("routing mode", "routing_mode", f"Routing mode: {ROUTING_MODE}", required=required)
    if mode is not None:
        value = clean_value(mode.value).rstrip(".").lower()
        if re.sub(r"\s+", " ", value) != ROUTING_MODE:
            f.error(
                mode.line,
                "routing_mode",
                f"the policy routes {ROUTING_MODE!r}, the spec says {mode.value.strip()!r}",
            )
    arch = f.one(
        "architect escalation",
        "architect_escalation",
        "Architect escalation: confidence < 0.75",
        required=required,
    )
    if arch is not None:
        check_comparison(f, arch, "architect_escalation", "architect", "confidence")
    impl = f.one(
        "implementer escalation",
        "implementer_escalation",
        "Implementer escalation: 2 failed compile/test loops",
        required=required,
    )
    if impl is not None:
        check_loops(f, impl)
    lib = f.one("librarian escalation", "librarian_escalation", "", required=False)
    if lib is not None:
        check_comparison(f, lib, "librarian_escalation", "librarian", "context_estimate")
    for family, title in (("kimi", "Kimi"), ("deepseek", "DeepSeek")):
        e = f.one(
            family,
            family,
            f"{title}: escalation-only",
            required=required,
        )
        if e is not None:
            check_family(f, e, family, title)
    sweep = f.one("librarian full sweep", "librarian_full_sweep", "", required=False)
    if sweep is not None and read_yes_no(sweep.value) is None:
        f.error(sweep.line, "librarian_full_sweep", "expected YES or NO (a whole-repo sweep)")


def _trigger(f: Findings, role: str, signal: str) -> Trigger | None:
    return next((t for t in f.policy.triggers if t.role == role and t.signal == signal), None)


def check_comparison(f: Findings, e: SpecEntry, field: str, role: str, signal: str) -> None:
    """A threshold line ("confidence < 0.75", "> 24k") agrees with the policy's trigger."""
    trig = _trigger(f, role, signal)
    if trig is None or trig.threshold is None or trig.op == "is_true":
        f.error(e.line, field, f"the policy has no {role} trigger on {signal}")
        return
    want = f"{signal} {OP_TEXT[trig.op]} {_num(trig.threshold)}"
    text = THOUSANDS.sub("", clean_value(e.value))
    m = COMPARISON.search(text)
    if m is None:
        f.error(e.line, field, f"cannot read a threshold in {e.value.strip()!r} (policy: {want})")
        return
    if second_threshold(text, m.end()):
        f.error(e.line, field, f"{e.value.strip()!r} states more than one threshold ({want})")
        return
    named = text[: m.start()].strip().lower().replace(" ", "_")
    number = float(m["num"]) * (1000 if m["unit"] else 1)
    op = OPS[m["op"]]
    same = math.isclose(number, trig.threshold, rel_tol=1e-9, abs_tol=1e-12)
    if named not in ("", signal) or not same or op != trig.op:
        f.error(
            e.line,
            field,
            f"{clean_value(e.value)!r} disagrees with the policy's trigger {trig.id} ({want})",
        )


def check_loops(f: Findings, e: SpecEntry) -> None:
    """The Implementer's "N failed compile/test loops" agrees with the policy's trigger."""
    trig = _trigger(f, "implementer", "failed_loops")
    if trig is None or trig.threshold is None:
        f.error(e.line, "implementer_escalation", "the policy has no failed_loops trigger")
        return
    want = _num(trig.threshold)
    m = LOOPS.match(clean_value(e.value))
    if m is None:
        f.error(
            e.line,
            "implementer_escalation",
            f"cannot read a loop count in {e.value.strip()!r} (policy: {want} failed "
            "compile/test loops)",
        )
        return
    if re.search(r"[0-9]", clean_value(e.value)[m.end() :]):
        f.error(
            e.line,
            "implementer_escalation",
            f"{e.value.strip()!r} states more than one loop count (policy: {want})",
        )
        return
    # the policy's op is ge: N failed loops escalate; a spec states the N
    if int(m["num"]) != trig.threshold or trig.op != "ge":
        f.error(
            e.line,
            "implementer_escalation",
            f"{m['num']} failed loops disagrees with the policy's trigger {trig.id} "
            f"(failed_loops {OP_TEXT.get(trig.op, trig.op)} {want})",
        )


def second_threshold(text: str, end: int) -> bool:
    """True when ``text`` holds another comparison after the one ending at ``end``
    ("confidence < 0.75 (or < 0.5 on weekends)"): a line that states two rules agrees
    with no single trigger, whichever of them a reader takes."""
    return COMPARISON.search(text, end) is not None


def check_family(f: Findings, e: SpecEntry, family: str, title: str) -> None:
    """The spec says escalation-only for Kimi/DeepSeek, and the policy's models are so."""
    provider = FAMILY_PROVIDERS[family]
    models = [m for m in f.policy.models.values() if m.provider == provider]
    says_only = clean_value(e.value).lower().startswith("escalation-only")
    if not says_only:
        f.error(
            e.line,
            family,
            f"the policy makes {title} escalation-only (§4/§5), the spec says {e.value.strip()!r}",
        )
    elif models and not all(m.escalation_only for m in models):
        loose = [m.display for m in models if not m.escalation_only]
        f.error(e.line, family, f"the policy lets {', '.join(loose)} serve without an escalation")


def _num(value: float) -> str:
    return f"{value:g}"
