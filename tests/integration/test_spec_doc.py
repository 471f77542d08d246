"""docs/spec.md held to the code: its two blocks lint as it says, and every override it
shows is one a run applies (a user writes a spec from this page, not from the tests)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.policy import load_policy
from app.policy.spec_lint import lint_text
from app.policy.spec_overrides import BudgetCap, RoleModel, Threshold, parse_override

DOC = Path(__file__).resolve().parents[2] / "docs" / "spec.md"


def blocks() -> list[str]:
    return re.findall(r"```md\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def overrides() -> list[str]:
    """The override items the page shows, as a spec would list them."""
    section = DOC.read_text(encoding="utf-8").split("## Overrides", 1)[1].split("\n## ", 1)[0]
    shown = re.findall(r"`((?:[A-Za-z ]+): [^`]+)`", section)
    return [item for item in shown if not item.startswith("ROLE:")]  # the grammar itself


def test_both_forms_on_the_page_are_compliant_and_without_warnings() -> None:
    loaded = load_policy()
    full, infra = blocks()
    for text, form in ((full, "full"), (infra, "infrastructure_only")):
        report = lint_text(text, "docs/spec.md", loaded)
        assert report.form == form
        assert report.problems == [], [str(p) for p in report.problems]


@pytest.mark.parametrize("item", overrides())
def test_every_override_shown_is_applied(item: str) -> None:
    policy = load_policy().policy
    parsed = parse_override(item, 1, policy)
    assert isinstance(parsed, RoleModel | Threshold | BudgetCap), (item, parsed)


def test_the_page_shows_each_kind_of_override() -> None:
    policy = load_policy().policy
    kinds = {type(parse_override(item, 1, policy)) for item in overrides()}
    assert kinds == {RoleModel, Threshold, BudgetCap}
