"""The lint and the run read a spec's §8 block the same way: a line the lint reads as
``local_only = true``, ``HR = YES`` or ``Librarian: NO`` is what ``run --spec`` applies."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.policy import load_policy
from app.policy.loader import LoadedPolicy
from app.policy.spec import find_block
from app.policy.spec_lint import lint_text
from app.policy.spec_overrides import spec_overrides
from app.resources import default_policy_path
from tests.unit.test_spec_lint import ROLES, SEED_FULL, SEED_INFRA, filled


@pytest.fixture(scope="module")
def loaded() -> LoadedPolicy:
    return load_policy()


def template() -> str:
    return filled().replace("- HR = YES/NO", "- HR = NO")


def test_a_later_local_only_in_prose_does_not_turn_the_privacy_line_off(
    loaded: LoadedPolicy,
) -> None:
    # the run took the last "local_only = X" of any line, the lint the first privacy line
    text = (
        template()
        .replace("- local_only = false", "- local_only = true")
        .replace("Policy: docs/MODEL-POLICY.md (version: 1.0.0)\n", "")
    ) + "Policy: docs/MODEL-POLICY.md (version: 1.0.0) - see local_only = false\n"
    report = lint_text(text, "spec.md", loaded)
    assert report.compliant, [str(p) for p in report.errors]
    block = find_block(text, "spec.md")
    assert block.local_only is True
    assert spec_overrides(block, loaded.policy).local_only is True


@pytest.mark.parametrize(
    "value", ["YES!", "YES(required)", "_YES_", "YES:", "YES—cloud", "**YES**"]
)
def test_hr_the_lint_reads_as_yes_is_yes_for_the_run(value: str, loaded: LoadedPolicy) -> None:
    text = filled().replace("- HR = YES/NO", f"- HR = {value}")
    report = lint_text(text, "spec.md", loaded)
    assert not [p for p in report.errors if p.field == "high_risk.HR"]
    assert spec_overrides(find_block(text, "spec.md"), loaded.policy).high_risk is True


@pytest.mark.parametrize("value", ["YESTERDAY", "maybe", "", "Y"])
def test_hr_the_lint_refuses_is_unset_for_the_run(value: str, loaded: LoadedPolicy) -> None:
    text = filled().replace("- HR = YES/NO", f"- HR = {value}")
    report = lint_text(text, "spec.md", loaded)
    assert [p for p in report.errors if p.field == "high_risk.HR"]
    assert find_block(text, "spec.md").high_risk is None


@pytest.mark.parametrize("mark", ["NO!", "NO.", "**NO**", "NO (not needed)"])
def test_a_role_the_lint_reads_as_no_is_not_exercised(mark: str, loaded: LoadedPolicy) -> None:
    text = filled({**ROLES, "Librarian": mark}).replace("- HR = YES/NO", "- HR = NO")
    report = lint_text(text, "spec.md", loaded)
    assert report.compliant, [str(p) for p in report.errors]
    applied = spec_overrides(find_block(text, "spec.md"), loaded.policy)
    assert applied.exercised("librarian") is False


def test_a_librarian_full_sweep_line_reads_the_same_way(loaded: LoadedPolicy) -> None:
    text = template().replace("Routing mode:", "Librarian full sweep: **YES!**\nRouting mode:")
    report = lint_text(text, "spec.md", loaded)
    assert not [p for p in report.problems if p.field == "librarian_full_sweep"]
    assert spec_overrides(find_block(text, "spec.md"), loaded.policy).full_sweep is True


def test_an_infrastructure_only_spec_with_an_override_list_is_checked(
    loaded: LoadedPolicy,
) -> None:
    # the lint returned before the overrides for this form; the run then raised
    base = SEED_INFRA.replace("<true|false>", "true")
    text = base + "Overrides (must be rare):\n- budget: session $999\n"
    report = lint_text(text, "spec.md", loaded)
    line = text.splitlines().index("- budget: session $999") + 1
    assert [(p.line, p.field) for p in report.errors] == [(line, "overrides")]
    assert "only lower a cap" in report.errors[0].message
    lowered = base + "Overrides (must be rare):\n- budget: session $1\n"
    assert lint_text(lowered, "spec.md", loaded).compliant
    applied = spec_overrides(find_block(lowered, "spec.md"), loaded.policy)
    assert [(b.scope, b.usd) for b in applied.budgets] == [("session", 1.0)]


def test_the_seed_templates_read_as_before() -> None:
    block = find_block(SEED_FULL, "t.md")
    assert block.local_only is False and block.high_risk is None and block.overrides == []
    assert find_block(SEED_INFRA, "t.md").local_only is None


def test_hr_yes_under_a_local_only_policy_is_an_error(tmp_path: Path) -> None:
    """The spec's own local_only was read; the policy's (which a spec cannot turn off)
    made the same spec a warning: the run could never be merge-ready."""
    text = default_policy_path().read_text(encoding="utf-8")
    assert "local_only = false" in text
    path = tmp_path / "p.toml"
    path.write_text(text.replace("local_only = false", "local_only = true", 1))
    strict = load_policy(path)
    spec = filled({**ROLES, "Auditor/Judge": "YES"}).replace("- HR = YES/NO", "- HR = YES")
    report = lint_text(spec, "spec.md", strict)
    assert [p.field for p in report.errors if "local_only = true forbids" in p.message] == [
        "high_risk.HR"
    ]
