"""What a spec's §8 block changes for one run, and how (pure).

The lint and the run read the block through this one module, so what ``spec lint``
accepts is exactly what ``run --spec`` applies; nothing is accepted and then ignored.

Applied for the run, and recorded in its evidence:

* the roles' YES/NO lines: a role marked NO is not exercised (the pipeline plans from
  the task without the Architect, clips instead of asking the Librarian, skips the Judge
  unless the change is High-Risk; it refuses to run at all without the Implementer);
* ``local_only = true`` (never false over a policy or a flag that says true);
* ``HR = YES|NO`` (YES makes the change High-Risk; the classifier may still find it so);
* ``Stage0 Tier2 (NotebookLM): YES|NO``, the run's Tier2 opt-in;
* ``Librarian full sweep: YES|NO``, a whole-repository sweep by the Librarian (§3);
* each item of ``Overrides (must be rare):``, one of
  - ``ROLE: MODEL [why]``: the role's first choice for this run (a local role takes a
    local model, a cloud role a cloud one: an override never turns local into cloud);
  - ``architect escalation: confidence < 0.8`` / ``implementer escalation: 3 failed
    compile/test loops`` / ``librarian escalation: context_estimate > 60k``: a trigger's
    threshold (its comparison stays the policy's);
  - ``budget: session $2`` / ``budget: day $10``: a cap, lowered only.
"""

from __future__ import annotations

import math
import re

from pydantic import BaseModel, ConfigDict, Field

from app.policy.schema import Policy, Trigger
from app.policy.spec import SpecBlock, clean_value, is_none, read_yes_no
from app.policy.spec_checks.roles import ROLE_LINES, compact_role_names
from app.policy.spec_checks.routing import COMPARISON, LOOPS, OPS, THOUSANDS, second_threshold

_ITEM = re.compile(r"^(?P<key>[^:]{1,60}):\s*(?P<value>.*)$")
_MONEY = re.compile(r"^(?P<scope>session|day)\s+\$?\s*(?P<usd>[0-9]+(?:\.[0-9]+)?)\s*(usd)?$", re.I)
#: override key → (role, signal) of the trigger whose threshold it sets
THRESHOLD_KEYS = {
    "architect escalation": ("architect", "confidence"),
    "implementer escalation": ("implementer", "failed_loops"),
    "librarian escalation": ("librarian", "context_estimate"),
}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RoleModel(_Frozen):
    role: str
    model: str
    note: str = ""
    line: int


class Threshold(_Frozen):
    trigger: str
    role: str
    signal: str
    threshold: float
    was: float
    line: int


class BudgetCap(_Frozen):
    scope: str  # session | day
    usd: float
    was: float
    line: int


Override = RoleModel | Threshold | BudgetCap


class SpecOverrides(_Frozen):
    """Everything a spec's block changes for a run."""

    path: str
    #: policy role id → exercised (only the roles the block marks)
    roles: dict[str, bool] = Field(default_factory=dict)
    local_only: bool | None = None
    high_risk: bool | None = None
    tier2: bool | None = None
    full_sweep: bool | None = None
    models: list[RoleModel] = Field(default_factory=list)
    thresholds: list[Threshold] = Field(default_factory=list)
    budgets: list[BudgetCap] = Field(default_factory=list)

    def exercised(self, role: str) -> bool:
        """A role the block does not mark NO is exercised."""
        return self.roles.get(role, True)

    def apply(self, policy: Policy) -> Policy:
        """The policy this run uses: role models, thresholds and caps overridden."""
        roles = dict(policy.roles)
        for m in self.models:
            roles[m.role] = roles[m.role].model_copy(update={"default": m.model})
        by_id = {t.trigger: t.threshold for t in self.thresholds}
        triggers = [
            t.model_copy(update={"threshold": by_id[t.id]}) if t.id in by_id else t
            for t in policy.triggers
        ]
        budget = policy.budget
        for cap in self.budgets:
            budget = budget.model_copy(update={f"{cap.scope}_usd": cap.usd})
        return policy.model_copy(update={"roles": roles, "triggers": triggers, "budget": budget})

    def describe(self) -> list[str]:
        """One line per change, for the audit line and the evidence."""
        out = [f"{role}: {'YES' if on else 'NO'}" for role, on in sorted(self.roles.items())]
        if self.local_only is not None:
            out.append(f"local_only = {str(self.local_only).lower()}")
        if self.high_risk is not None:
            out.append(f"HR = {'YES' if self.high_risk else 'NO'}")
        if self.full_sweep is not None:
            out.append(f"librarian full sweep: {'YES' if self.full_sweep else 'NO'}")
        out += [f"{m.role} → {m.model}" for m in self.models]
        out += [
            f"{t.trigger}: {t.signal} threshold {t.was:g} → {t.threshold:g}"
            for t in self.thresholds
        ]
        out += [f"budget {b.scope} ${b.was:g} → ${b.usd:g}" for b in self.budgets]
        return out


def parse_override(text: str, line: int, policy: Policy) -> Override | str:
    """One item of the Overrides list as a change, or why it is not one Switchyard applies."""
    m = _ITEM.match(clean_value(text))
    if m is None:
        return f"expected 'KEY: VALUE', got {text.strip()!r} ({_KNOWN})"
    key = re.sub(r"\s+", " ", m["key"].strip().lower())
    value = m["value"].strip()
    if key in THRESHOLD_KEYS:
        return _threshold(key, value, line, policy)
    if key == "budget":
        return _budget(value, line, policy)
    rid = compact_role_names(policy).get(re.sub(r"[^a-z0-9]", "", key))
    if rid is not None:
        return _role_model(rid, value, line, policy)
    return f"unknown override {m['key'].strip()!r} ({_KNOWN})"


_KNOWN = (
    "the overrides a spec may make: 'ROLE: MODEL', 'architect escalation: confidence < X', "
    "'implementer escalation: N failed compile/test loops', 'librarian escalation: "
    "context_estimate > N', 'budget: session $X' or 'budget: day $X'"
)


def _role_model(rid: str, value: str, line: int, policy: Policy) -> RoleModel | str:
    name, _, note = value.partition(" ")
    model_id = policy.resolve(name.strip().rstrip(",;"))
    if model_id not in policy.models:
        return f"unknown model {name!r} for {rid} (not in the policy's [models] or [aliases])"
    role = policy.roles[rid]
    served = _serves(policy.model(model_id).endpoint, policy.model(model_id).embedding_dim)
    if role.kind != served:
        # an embedding model as the tutor, a YOLO model as the librarian: lint said
        # compliant, and the role would have been given a model that cannot serve it
        return f"{rid} is a role of kind {role.kind}: {model_id!r} serves {served}"
    cloud = policy.is_cloud(model_id)
    if role.locality == "local" and cloud:
        return (
            f"{rid} is a local role: an override cannot make a cloud model its default "
            "(escalation stays trigger-only, §3)"
        )
    if role.locality == "cloud" and not cloud:
        return f"{rid} is a cloud role: its model must be a cloud model, not {model_id!r}"
    if policy.model(model_id).escalation_only:
        # the router skips an escalation-only default: lint said compliant, and the
        # override was ignored (the policy file's loader refuses the same default)
        return f"{model_id!r} is escalation-only: it can never be {rid}'s default"
    return RoleModel(role=rid, model=model_id, note=note.strip(), line=line)


def _serves(endpoint: str, embedding_dim: int | None) -> str:
    """The role kind a model can serve, from what the catalogue says of it."""
    if endpoint == "tensorrt":
        return "vision"
    if endpoint == "sentence_transformers" or embedding_dim is not None:
        return "embedding"
    return "llm"


def _trigger(policy: Policy, role: str, signal: str) -> Trigger | None:
    return next((t for t in policy.triggers if t.role == role and t.signal == signal), None)


def _threshold(key: str, value: str, line: int, policy: Policy) -> Threshold | str:
    role, signal = THRESHOLD_KEYS[key]
    trig = _trigger(policy, role, signal)
    if trig is None or trig.threshold is None:
        return f"the policy has no {role} trigger on {signal} to override"
    text = THOUSANDS.sub("", value)
    if signal == "failed_loops":
        loops = LOOPS.match(text)
        if loops is None:
            return f"cannot read a loop count in {value!r} (e.g. '3 failed compile/test loops')"
        if re.search(r"[0-9]", text[loops.end() :]):
            return f"cannot read {value!r}: it states more than one loop count"
        number = float(loops["num"])
        if number < 1:
            return "the failed-loop threshold must be at least 1"
    else:
        cmp = COMPARISON.search(text)
        if cmp is None:
            example = {"confidence": "< 0.8", "context_estimate": "> 60k"}.get(signal, "< 0.8")
            return f"cannot read a threshold in {value!r} (e.g. '{signal} {example}')"
        if re.match(r"[0-9A-Za-z_.]", text[cmp.end() : cmp.end() + 1]):
            # '1e5' read as 1 and '100_000' as 100: the Kimi trigger then fired on nearly
            # every request, with the spec called compliant
            return f"cannot read {value!r}: write the threshold as a plain number (100000, 100k)"
        if second_threshold(text, cmp.end()):
            return f"cannot read {value!r}: it states more than one threshold"
        named = text[: cmp.start()].strip().lower().replace(" ", "_")
        if named not in ("", signal):
            return f"{key} is a threshold on {signal}, not on {named!r}"
        if OPS[cmp["op"]] != trig.op:
            return f"an override changes {trig.id}'s threshold, not its comparison ({trig.op})"
        number = float(cmp["num"]) * (1000 if cmp["unit"] else 1)
        if signal == "confidence" and not 0.0 <= number <= 1.0:
            return f"a confidence threshold is between 0 and 1, got {number:g}"
    if not math.isfinite(number):
        return f"not a number: {value!r}"
    return Threshold(
        trigger=trig.id, role=role, signal=signal, threshold=number, was=trig.threshold, line=line
    )


def never_fires(change: Threshold, policy: Policy) -> bool:
    """Whether the overridden trigger can no longer fire: a signal that is never negative
    (a confidence, a token estimate, a loop count) below 0 or less, a confidence above 1.
    The run then stays local where the policy would escalate; the lint says so (it read
    as compliant: an earlier stop's note)."""
    trig = _trigger(policy, change.role, change.signal)
    op = trig.op if trig is not None else None
    if op == "lt" and change.threshold <= 0:
        return True
    if op in ("gt", "ge"):
        # a bound the signal never passes: a confidence's 1, a prompt larger than every
        # window the catalog serves (999999999k of context read as compliant, where
        # confidence < 0 was said: a user audit)
        windows = [m.context_window for m in policy.models.values() if m.context_window]
        bound = {
            "confidence": 1.0,
            "context_estimate": float(max(windows)) if windows else None,
        }.get(change.signal)
        if bound is not None:
            return change.threshold >= bound if op == "gt" else change.threshold > bound
    return False


def _budget(value: str, line: int, policy: Policy) -> BudgetCap | str:
    m = _MONEY.match(value.strip())
    if m is None:
        return f"expected 'budget: session $X' or 'budget: day $X', got {value!r}"
    scope = m["scope"].lower()
    usd = float(m["usd"])
    was = float(getattr(policy.budget, f"{scope}_usd"))
    if usd > was:
        return f"a spec may only lower a cap: the policy's {scope} cap is ${was:g}, not ${usd:g}"
    return BudgetCap(scope=scope, usd=usd, was=was, line=line)


def role_marks(block: SpecBlock, policy: Policy) -> dict[str, bool]:
    """The block's YES/NO role lines as policy role ids (unreadable lines left out)."""
    names = compact_role_names(policy)
    marks: dict[str, bool] = {}
    for e in block.section("roles"):
        rid = names.get(re.sub(r"[^a-z0-9]", "", e.key))
        mark = read_yes_no(e.value)  # the lint's reading (check_roles: first_word)
        if rid is not None and mark is not None and rid not in marks:
            marks[rid] = mark
    return marks


def spec_overrides(block: SpecBlock, policy: Policy) -> SpecOverrides:
    """What ``block`` changes for a run. Call it on a block the lint accepted: an item it
    cannot read raises ValueError (the lint reports it with its line first)."""
    models: list[RoleModel] = []
    thresholds: list[Threshold] = []
    budgets: list[BudgetCap] = []
    for e in block.section("overrides"):
        if is_none(e.value):
            continue
        change = parse_override(e.value, e.line, policy)
        if isinstance(change, str):
            raise ValueError(f"{block.path}:{e.line}: overrides: {change}")
        if isinstance(change, RoleModel):
            models.append(change)
        elif isinstance(change, Threshold):
            thresholds.append(change)
        else:
            budgets.append(change)
    marks = role_marks(block, policy) if not block.infrastructure_only else {}
    if block.infrastructure_only:
        marks = {rid: False for _, rid in ROLE_LINES if rid in policy.roles}
    return SpecOverrides(
        path=block.path,
        roles=marks,
        local_only=block.local_only,
        high_risk=block.high_risk,
        tier2=block.tier2,
        full_sweep=block.full_sweep,
        models=models,
        thresholds=thresholds,
        budgets=budgets,
    )
