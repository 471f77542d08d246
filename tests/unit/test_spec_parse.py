"""The §8 block reader: what `switchyard run --spec` takes from it, and the lint's entries."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.errors import UsageError
from app.policy.spec import SpecError, find_block, read_spec
from tests.unit.test_spec_lint import SEED_FULL, SEED_INFRA, filled

RUN_SPEC = """# Fix the parser

## Model & Runtime (Spec Overrides)

Policy: docs/MODEL-POLICY.md (version: 1.0.0)

Privacy:
- local_only = false

High-risk:
- HR = YES (if YES → cloud Judge required)

Overrides (must be rare):
- <none | list>
"""


def test_what_a_run_reads_is_unchanged() -> None:
    block = find_block(RUN_SPEC, "spec.md")
    assert (block.policy_ref, block.policy_version) == ("docs/MODEL-POLICY.md", "1.0.0")
    assert block.local_only is False and block.high_risk is True
    assert block.overrides == [] and not block.infrastructure_only
    assert block.start_line == 3 and block.form == "full"


def test_values_a_run_cannot_use_are_none() -> None:
    block = find_block(SEED_FULL, "t.md")
    assert block.high_risk is None  # "YES/NO": the classifier decides
    assert find_block(SEED_INFRA, "t.md").local_only is None  # "<true|false>"


def test_overrides_are_listed_without_placeholders() -> None:
    text = filled().replace("- <none | list>", "- judge: claude-opus-4.7\n- none\n- tutor: off")
    assert find_block(text, "t.md").overrides == ["judge: claude-opus-4.7", "tutor: off"]


def test_the_block_ends_at_the_next_heading_of_its_rank() -> None:
    text = "# T\n\n## Model & Runtime (Spec Overrides)\n\n### Notes\n- HR = YES\n\n## Next\n- x\n"
    block = find_block(text, "t.md")
    assert block.lines[-1] == "" and block.lines[-2] == "- HR = YES"
    assert block.high_risk is True


def test_entries_carry_file_lines_sections_and_keys() -> None:
    text = "intro\n\n" + filled()
    block = find_block(text, "t.md")
    lines = text.splitlines()
    for e in block.entries:
        assert e.name in lines[e.line - 1] or e.value in lines[e.line - 1]
    roles = block.section("roles")
    assert [e.key for e in roles] == [
        "stage0 tier2 (notebooklm)",
        "architect/planner",
        "implementer/rust ace",
        "librarian",
        "tutor",
        "auditor/judge",
    ]
    assert [e.key for e in block.section("tiers")] == [
        "fast_local",
        "slow_cloud_escalation",
        "premium_judge",
    ]
    (lo,) = block.find("local_only")
    assert (lo.section, lo.value, lines[lo.line - 1].startswith("- local_only")) == (
        "privacy",
        "false",
        True,
    )
    (hr,) = block.find("hr")
    assert hr.value.startswith("YES/NO") and hr.section == "high_risk"
    (mode,) = block.find("routing mode")
    assert mode.value == "local-first with escalation"


def test_the_infrastructure_only_form_is_recognised() -> None:
    block = find_block(SEED_INFRA.replace("<true|false>", "true"), "t.md")
    assert block.infrastructure_only and block.form == "infrastructure_only"
    assert block.local_only is True
    (roles,) = block.find("roles exercised")
    assert roles.value.startswith("none")
    # "Roles exercised: none" alone is enough
    plain = "## Model & Runtime (Spec Overrides)\nRoles exercised: none\nlocal_only = false\n"
    assert find_block(plain, "t.md").infrastructure_only


def test_a_second_block_is_noted() -> None:
    text = filled() + "\n## Other\n\n" + filled()
    block = find_block(text, "t.md")
    assert (
        block.duplicate_heading_line
        == text.splitlines().index("## Model & Runtime (Spec Overrides)", 1) + 1
    )


def test_code_fences_are_ignored() -> None:
    text = "```md\n" + filled() + "```\n"
    block = find_block(text, "t.md")
    assert all("```" not in e.value and "```" not in e.name for e in block.entries)


def test_read_spec_errors_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such spec file"):
        read_spec(tmp_path / "missing.md")
    (tmp_path / "empty.md").write_text("")
    with pytest.raises(UsageError, match="no '## Model & Runtime"):
        read_spec(tmp_path / "empty.md")
    assert SpecError("x").exit_code == 2


def test_the_roles_tier2_line_opts_a_run_in_to_the_synthesis() -> None:
    assert find_block(SEED_FULL, "t.md").tier2 is None  # "YES/NO": not said
    assert find_block(RUN_SPEC, "t.md").tier2 is None  # no roles list at all
    roles = {"Stage0 Tier2 (NotebookLM)": "YES"}
    assert find_block(filled(roles), "t.md").tier2 is True
    roles = {"Stage0 Tier2 (NotebookLM)": "NO"}
    assert find_block(filled(roles), "t.md").tier2 is False


def test_an_example_block_in_a_code_fence_is_not_the_spec_s_own() -> None:
    """A spec that shows the template in a fence above its own block had the example read
    (its ``- budget: session $1`` applied) and its own block warned about as a second
    one (a CLI audit). A spec whose only block is fenced is the template pasted with its
    fence, and is read."""
    example = RUN_SPEC.split("\n", 2)[2].replace("- <none | list>", "- budget: session $1")
    own = RUN_SPEC.split("\n", 2)[2]
    text = f"# Feature\n\nThe template:\n\n```md\n{example}```\n\n{own}"
    block = find_block(text, "spec.md")
    assert block.duplicate_heading_line is None
    assert block.start_line == text.splitlines().index("## Model & Runtime (Spec Overrides)", 8) + 1
    assert not [e for e in block.entries if "budget" in e.value]
    # the fence alone: the template pasted with it
    fenced = find_block(f"# Feature\n\n```md\n{example}```\n", "spec.md")
    assert [e.value for e in fenced.entries if "budget" in e.value] == ["budget: session $1"]


def test_a_fenced_example_inside_or_after_the_block_and_a_tilde_fence() -> None:
    """A review: an example fenced after the block's own lines was read as the block's
    (a ``- budget: session $1`` applied); a ``` line inside a ~~~ fence flipped every
    fence after it, so the real block was taken for an example."""
    example = RUN_SPEC.split("\n", 2)[2].replace("- <none | list>", "- budget: session $1")
    own = RUN_SPEC.split("\n", 2)[2]
    after = f"# Feature\n\n{own}\nFor example:\n\n```md\n{example}```\n"
    block = find_block(after, "spec.md")
    assert block.start_line == 3 and not [e for e in block.entries if "budget" in e.value]
    tilde = f"# Feature\n\n~~~md\n```\n{example}~~~\n\n{own}"
    block = find_block(tilde, "spec.md")
    assert (
        block.start_line == tilde.splitlines().index("## Model & Runtime (Spec Overrides)", 6) + 1
    )
    assert not [e for e in block.entries if "budget" in e.value]
