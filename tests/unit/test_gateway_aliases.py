"""Client model names → roles (app.gateway.ids) under the shipped policy and the schema's
defaults: Claude's names by family, the Claude 3 ones too (an older Claude Code's
``/model`` choices got a 404 while ``claude-3-5-haiku*`` was mapped: a user audit)."""

from __future__ import annotations

import pytest

from app.gateway.errors import GatewayError
from app.gateway.ids import resolve_model
from app.policy import load_policy
from app.policy.schema import Gateway
from app.resources import default_policy_path

#: each name, and the role its family serves
CLAUDE_NAMES = [
    ("claude-opus-4-7", "architect"),
    ("claude-sonnet-4-5-20250929", "implementer"),
    ("claude-haiku-4-5", "tutor"),
    ("claude-3-opus-20240229", "architect"),
    ("claude-3-opus-latest", "architect"),
    ("claude-3-7-sonnet-latest", "implementer"),
    ("claude-3-7-sonnet-20250219", "implementer"),
    ("claude-3-5-sonnet-20241022", "implementer"),
    ("claude-3-5-sonnet-latest", "implementer"),
    ("claude-3-sonnet-20240229", "implementer"),
    ("claude-3-5-haiku-20241022", "tutor"),
    ("claude-3-5-haiku-latest", "tutor"),
    ("claude-3-haiku-20240307", "tutor"),
    ("Claude-3-7-Sonnet-Latest", "implementer"),  # (ids are read in lower case)
]


@pytest.mark.parametrize(("name", "role"), CLAUDE_NAMES)
def test_claude_names_map_by_family_under_the_shipped_policy(name: str, role: str) -> None:
    policy = load_policy(default_policy_path()).policy
    assert resolve_model(policy, name).role == role
    assert resolve_model(policy, f"{name}+escalate").user_request


def test_the_schema_default_maps_the_same_names_as_the_shipped_policy() -> None:
    """A policy file without ``[gateway.aliases]`` gets the schema's: the same map."""
    shipped = load_policy(default_policy_path()).policy.gateway.aliases
    assert Gateway().aliases == shipped


@pytest.mark.parametrize("name", ["claude-2.1", "claude-instant-1.2", "gpt-4o", "claude-3-7"])
def test_other_names_are_still_a_404(name: str) -> None:
    policy = load_policy(default_policy_path()).policy
    with pytest.raises(GatewayError) as refused:
        resolve_model(policy, name)
    assert refused.value.status == 404 and "claude-3*-sonnet*" in refused.value.message
