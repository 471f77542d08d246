"""Model ids the gateway serves: the roles, ``auto``, and the policy's aliases (pure).

A client asks for a model by name; the name is a role (``architect``, ``implementer``,
``librarian``, ``tutor``), ``auto`` (the policy's auto_role), or any name matching an
alias pattern (Claude Code's ``claude-sonnet-4-5-…`` → implementer). A name ending in the
policy's escalate suffix (``architect+escalate``), or a request carrying the header
``x-switchyard-escalate: 1``, is the user's explicit request to escalate (§3). Which model
actually serves is the router's decision, never the name's.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from app.gateway.errors import GatewayError
from app.policy.schema import Policy


@dataclass(frozen=True)
class Resolved:
    role: str
    #: the name ended in the escalate suffix: the user's request (§3)
    user_request: bool


def served_ids(policy: Policy) -> list[str]:
    """What ``GET /v1/models`` lists: the roles, ``auto``, their escalating forms, and the
    alias patterns that are plain names (patterns with wildcards cannot be listed)."""
    g = policy.gateway
    ids = [*g.roles, "auto"]
    ids += [f"{i}{g.escalate_suffix}" for i in ids]
    ids += sorted(p for p in g.aliases if not any(ch in p for ch in "*?["))
    return ids


def resolve_model(policy: Policy, name: str) -> Resolved:
    """The role ``name`` asks for, or a 404 that lists the valid ids."""
    g = policy.gateway
    raw = name.strip()
    escalate = raw.endswith(g.escalate_suffix)
    base = raw[: -len(g.escalate_suffix)] if escalate else raw
    key = base.lower()
    if key == "auto":
        return Resolved(g.auto_role, escalate)
    if key in g.roles:
        return Resolved(key, escalate)
    for pattern, role in g.aliases.items():
        if fnmatch.fnmatchcase(key, pattern.lower()):
            return Resolved(role, escalate)
    valid = ", ".join(served_ids(policy))
    patterns = ", ".join(p for p in g.aliases if any(ch in p for ch in "*?["))
    raise GatewayError(
        404,
        "not_found",
        f"unknown model {name!r}: Switchyard serves roles, not models. Valid ids: {valid}"
        + (f"; and names matching {patterns}" if patterns else ""),
        code="model_not_found",
    )
