"""The roles block: every §8 role marked YES or NO in the full form, none exercised in the
infrastructure-only one."""

from __future__ import annotations

import re

from app.policy.schema import Policy
from app.policy.spec import SpecEntry, clean_value, first_word
from app.policy.spec_checks.findings import Findings

#: the §8 role lines, in the seed's order, with the policy role each one stands for
ROLE_LINES: tuple[tuple[str, str], ...] = (
    ("Stage0 Tier2 (NotebookLM)", "tier2"),
    ("Architect/Planner", "architect"),
    ("Implementer/Rust Ace", "implementer"),
    ("Librarian", "librarian"),
    ("Tutor", "tutor"),
    ("Auditor/Judge", "judge"),
)


def _compact(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def compact_role_names(policy: Policy) -> dict[str, str]:
    """Compact spelling → policy role id: the §8 names, the policy's titles and ids."""
    names: dict[str, str] = {}
    for title, rid in ROLE_LINES:
        names[_compact(title)] = rid
        names[_compact(title.split("(")[0])] = rid
        names[rid] = rid
        for part in title.split("/"):
            names.setdefault(_compact(part), rid)
    for rid, role in policy.roles.items():
        if rid in {r for _, r in ROLE_LINES}:
            names.setdefault(_compact(role.title), rid)
            names.setdefault(_compact(role.title.split("(")[0]), rid)
        names.setdefault(_compact(rid), rid)
    return names


def role_names(f: Findings) -> dict[str, str]:
    return compact_role_names(f.policy)


def check_roles(f: Findings) -> dict[str, bool | None]:
    """The full form's role lines; each role's mark (None: neither YES nor NO)."""
    names = role_names(f)
    seen: dict[str, SpecEntry] = {}
    marks: dict[str, bool | None] = {}
    header = next((e for e in f.block.entries if e.key.startswith("roles exercised")), None)
    entries = f.block.section("roles")
    for e in entries:
        if not e.key:
            f.error(e.line, "roles", f"expected 'ROLE: YES|NO', got {e.value!r}")
            continue
        rid = names.get(_compact(e.key))
        if rid is None:
            known = ", ".join(t for t, _ in ROLE_LINES)
            f.error(e.line, f"roles.{e.name}", f"unknown role (the §8 roles: {known})")
            continue
        title = dict((r, t) for t, r in ROLE_LINES)[rid]
        if rid in seen:
            f.error(e.line, f"roles.{title}", f"repeated (first on line {seen[rid].line})")
            continue
        seen[rid] = e
        raw = clean_value(e.value)
        word = first_word(raw)
        if word in ("YES", "NO"):
            marks[rid] = word == "YES"
        else:
            marks[rid] = None
            f.error(
                e.line,
                f"roles.{title}",
                f"marked neither YES nor NO (got {raw or 'nothing'!r})",
            )
        if rid not in f.policy.roles:
            f.error(e.line, f"roles.{title}", f"the policy has no role {rid!r}")
    where = header.line if header is not None else f.heading
    if header is None and not entries:
        f.error(f.heading, "roles", "missing 'Roles exercised by this spec:' and its role list")
        return marks
    for title, rid in ROLE_LINES:
        if rid not in seen:
            f.error(where, f"roles.{title}", "role line missing (mark it YES or NO)")
    return marks


def check_infrastructure_only(f: Findings) -> None:
    """'Roles exercised: none', no role marked YES, and the guardrails line."""
    entry = next(
        (e for e in f.block.entries if e.key == "roles exercised" and e.section == ""), None
    )
    if entry is None:
        f.error(
            f.heading,
            "roles_exercised",
            "an infrastructure-only spec says 'Roles exercised: none'",
        )
    elif not clean_value(entry.value).lower().startswith("none"):
        f.error(
            entry.line,
            "roles_exercised",
            f"an infrastructure-only spec exercises no role: expected 'none', got "
            f"{entry.value.strip()!r}",
        )
    for e in f.block.section("roles"):
        if first_word(clean_value(e.value)) == "YES":
            f.error(
                e.line,
                f"roles.{e.name}",
                "an infrastructure-only spec exercises no role, yet this one is YES",
            )
    if not any(e.key.startswith("guardrails") for e in f.block.entries):
        f.warn(
            f.heading,
            "guardrails",
            "missing 'Guardrails still apply: sandboxing, evidence/logging, no hallucinated "
            "citations.'",
        )
