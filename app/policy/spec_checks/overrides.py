"""The overrides list: present, and either "none" or overrides Switchyard applies.

Each item is read by :func:`app.policy.spec_overrides.parse_override`, the same reader
``run --spec`` applies, so an override the lint accepts is never ignored.
"""

from __future__ import annotations

from app.policy.spec import clean_value, is_none
from app.policy.spec_checks.findings import Findings
from app.policy.spec_overrides import RoleModel, Threshold, never_fires, parse_override


def check_overrides(f: Findings, *, required: bool = True) -> None:
    """The list's items; ``required=False`` (the infrastructure-only form, whose template
    has no list) checks a list that is there all the same, as the run applies it."""
    header = next(
        (e for e in f.block.entries if e.key.startswith("overrides") and not e.section), None
    )
    if header is None:
        if not required:
            return
        f.error(f.heading, "overrides", "missing 'Overrides (must be rare):' and its list")
        return
    if clean_value(header.value):
        if not is_none(header.value):
            f.error(
                header.line,
                "overrides",
                "list each override on its own '- ' line ('Overrides: none' is fine inline)",
            )
        return
    items = [e for e in f.block.section("overrides") if clean_value(e.value)]
    if not items:
        f.error(
            header.line,
            "overrides",
            "overrides are not listed: write '- none' or list each override",
        )
        return
    seen: dict[str, int] = {}
    for e in items:
        if is_none(e.value):
            continue
        change = parse_override(e.value, e.line, f.policy)
        if isinstance(change, str):
            f.error(e.line, "overrides", change)
            continue
        what = (
            f"role {change.role}"
            if isinstance(change, RoleModel)
            else change.trigger
            if isinstance(change, Threshold)
            else f"budget {change.scope}"
        )
        if isinstance(change, Threshold) and never_fires(change, f.policy):
            stated = e.value.split(":", 1)[-1].strip()
            f.warn(
                e.line,
                "overrides",
                f"{change.trigger} never escalates at {stated!r} (the signal never passes"
                " it, or no model's window holds such a prompt): this override turns that"
                " escalation off (the run stays local where the policy would escalate)",
            )
        if what in seen:
            f.error(e.line, "overrides", f"{what} is overridden twice (first on line {seen[what]})")
        seen.setdefault(what, e.line)
