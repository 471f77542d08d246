"""The semantic difference of two policies (``switchyard policy diff A B``), pure.

Not a text diff: two files that differ only in comments, key order or an alias spelling
have no difference. Triggers, high-risk rules and resolutions are matched by id, a
role's models are compared once aliases are resolved, and every difference is filed
under what it changes: thresholds (the triggers), chains (who serves a role and where
it escalates to), caps (the budget), prices, guardrail switches, or other.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from app.policy.schema import Policy

Category = Literal["thresholds", "chains", "caps", "prices", "guardrails", "other"]
CATEGORIES: tuple[Category, ...] = ("thresholds", "chains", "caps", "prices", "guardrails", "other")
#: list sections whose items are matched by their ``id``
_BY_ID = {("triggers",), ("high_risk", "rules"), ("resolutions",)}
_ROLE_MODELS = ("default", "alternatives", "fallback", "local_stand_in")
_CHAIN_KEYS = {*_ROLE_MODELS, "locality", "runtimes", "sidecar", "prefer_speed"}
_GUARD_PATHS = {("privacy", "local_only"), ("consensus", "enabled"), ("consensus", "critic")}

Path = tuple[str, ...]


class DiffEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    category: Category
    path: str
    change: Literal["added", "removed", "changed"]
    old: Any = None
    new: Any = None

    @property
    def text(self) -> str:
        if self.change == "added":
            return f"{self.path}: added {_show(self.new)}"
        if self.change == "removed":
            return f"{self.path}: removed (was {_show(self.old)})"
        return f"{self.path}: {_show(self.old)} → {_show(self.new)}"


class PolicyDiff(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    a_version: str
    b_version: str
    entries: list[DiffEntry]

    def by_category(self) -> dict[str, list[DiffEntry]]:
        out: dict[str, list[DiffEntry]] = {c: [] for c in CATEGORIES}
        for e in self.entries:
            out[e.category].append(e)
        return {c: es for c, es in out.items() if es}


def _show(value: Any) -> str:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        # bracketed: the chain's own arrows apart from the old → new one
        return f"[{' → '.join(value)}]" if value else "(none)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        inner = ", ".join(f"{k}={_show(v)}" for k, v in value.items() if v not in (None, "", []))
        return "{" + inner + "}"
    return str(value)


def _semantic(p: Policy) -> dict[str, Any]:
    """The policy as data, with every role's models named by catalog id (aliases resolved)
    and the role's effective escalation chain."""
    data = p.model_dump(mode="json")
    for rid, role in data["roles"].items():
        for key in _ROLE_MODELS:
            value = role[key]
            if isinstance(value, list):
                role[key] = [p.resolve(m) for m in value]
            elif isinstance(value, str):
                role[key] = p.resolve(value)
        role["fallback"] = p.chain(rid)  # a cloud role's default is its chain's first step
    for trig in data["triggers"]:
        if trig["target"]:
            trig["target"] = p.resolve(trig["target"])
    data["policy"].pop("created")
    return data


def _category(path: Path) -> Category:
    head = path[0]
    if head == "triggers":
        return "other" if path[-1] == "seed" else "thresholds"  # seed: where the seed says so
    if head == "budget" or path[:2] == ("approvals", "timeout_s"):
        return "caps"
    if head == "models" and len(path) >= 3 and path[2].startswith("price_"):
        return "prices"
    if head == "guardrails" or head == "sandbox" or path[:2] in _GUARD_PATHS:
        return "guardrails"
    if head == "local_chain" or (head == "roles" and (len(path) == 2 or path[2] in _CHAIN_KEYS)):
        return "chains"
    return "other"


def _walk(path: Path, a: Any, b: Any, out: list[DiffEntry]) -> None:
    if a == b:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for key in [*a, *(k for k in b if k not in a)]:
            sub = (*path, str(key))
            if key not in b:
                out.append(_entry(sub, "removed", a[key], None))
            elif key not in a:
                out.append(_entry(sub, "added", None, b[key]))
            else:
                _walk(sub, a[key], b[key], out)
        return
    if path in _BY_ID and isinstance(a, list) and isinstance(b, list):
        _walk(path, {i["id"]: i for i in a}, {i["id"]: i for i in b}, out)
        return
    out.append(_entry(path, "changed", a, b))


def _entry(
    path: Path, change: Literal["added", "removed", "changed"], old: Any, new: Any
) -> DiffEntry:
    return DiffEntry(category=_category(path), path=".".join(path), change=change, old=old, new=new)


def _trigger_order(p: Policy) -> dict[str, list[str]]:
    """Each role's triggers in the order decide() tries them: the first that fires
    chooses the target, so two policies with the same triggers in another order route
    differently ("no semantic difference" was said of them)."""
    # a role's own triggers and every role's ("*") in the one order decide() reads them
    return {r: [t.id for t in p.triggers_for(r)] for r in p.roles}


def diff_policies(a: Policy, b: Policy) -> PolicyDiff:
    out: list[DiffEntry] = []
    _walk((), _semantic(a), _semantic(b), out)
    order_a, order_b = _trigger_order(a), _trigger_order(b)
    for role in [*order_a, *(r for r in order_b if r not in order_a)]:
        ids_a, ids_b = order_a.get(role, []), order_b.get(role, [])
        shared_a = [i for i in ids_a if i in ids_b]
        shared_b = [i for i in ids_b if i in ids_a]
        if shared_a != shared_b:
            out.append(_entry(("triggers", "order", role), "changed", shared_a, shared_b))
    order = {c: i for i, c in enumerate(CATEGORIES)}
    out.sort(key=lambda e: order[e.category])  # stable: file order within a category
    return PolicyDiff(a_version=a.version, b_version=b.version, entries=out)
