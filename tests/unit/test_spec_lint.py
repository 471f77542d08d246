"""`switchyard spec lint`: §8 compliance of a spec's "Model & Runtime" block."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.cli.main import main
from app.policy import load_policy
from app.policy.loader import LoadedPolicy
from app.policy.spec import SpecError
from app.policy.spec_lint import LintReport, lint_file, lint_text, model_mentions
from app.resources import default_policy_path

# The seed's §8 templates, verbatim (docs/MODEL-POLICY.md, version 1.0.0).
SEED_FULL = """\
## Model & Runtime (Spec Overrides)

Policy: docs/MODEL-POLICY.md (version: 1.0.0)

Roles exercised by this spec:
- Stage0 Tier2 (NotebookLM): YES/NO
- Architect/Planner: YES/NO
- Implementer/Rust Ace: YES/NO
- Librarian: YES/NO
- Tutor: YES/NO
- Auditor/Judge: YES/NO

Routing mode: local-first with escalation
Architect escalation: confidence < 0.75
Implementer escalation: 2 failed compile/test loops
Kimi: escalation-only (Librarian hard sweeps)
DeepSeek: escalation-only (Implementer stuck)

Primary tiers:
- fast_local: <local 14B planner> + <local 32B coder> (vLLM on RTX 5090)
- slow_cloud_escalation: DeepSeek (reasoner/chat) [escalation-only]
- premium_judge: GPT-5.1 High / Claude Opus (HR required)

Privacy:
- local_only = false  # if true → forbids all cloud calls

High-risk:
- HR = YES/NO (if YES → cloud Judge required)

Overrides (must be rare):
- <none | list>
"""

SEED_INFRA = """\
## Model & Runtime (Spec Overrides)

Policy: docs/MODEL-POLICY.md (version: 1.0.0)

This spec is **infrastructure-only** and does not invoke model routing directly.
Roles exercised: none (no Architect/Implementer/Librarian/Tutor/Judge).
Privacy: local_only = <true|false>
Guardrails still apply: sandboxing, evidence/logging, no hallucinated citations.
"""

ROLES = {
    "Stage0 Tier2 (NotebookLM)": "NO",
    "Architect/Planner": "YES",
    "Implementer/Rust Ace": "YES",
    "Librarian": "NO",
    "Tutor": "NO",
    "Auditor/Judge": "YES",
}
PREAMBLE = "# Spec: fix the parser\n\nSome prose about the change.\n\n"  # 4 lines before


def filled(roles: dict[str, str] = ROLES, template: str = SEED_FULL) -> str:
    text = template
    for name, mark in roles.items():
        text = text.replace(f"- {name}: YES/NO", f"- {name}: {mark}")
    return text


def write(tmp_path: Path, body: str, name: str = "spec.md") -> Path:
    path = tmp_path / name
    path.write_text(PREAMBLE + body + "\n## Acceptance\n\n- tests pass\n", encoding="utf-8")
    return path


def line_of(path: Path, needle: str) -> int:
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return n
    raise AssertionError(needle)


@pytest.fixture(scope="module")
def loaded() -> LoadedPolicy:
    return load_policy()


def lint(path: Path, loaded: LoadedPolicy) -> LintReport:
    return lint_file(path, loaded)


def errors(report: LintReport) -> list[str]:
    return [str(p) for p in report.errors]


# ── the acceptance cases ─────────────────────────────────────────────────────────────────


def test_the_seed_template_filled_in_with_a_role_list_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write(tmp_path, filled())
    assert main(["spec", "lint", str(spec)]) == 0
    out = capsys.readouterr().out
    assert f"{spec}: compliant (full form, policy 1.0.0" in out
    # HR left as the template's YES/NO is not a finding: the classifier decides
    assert f"{spec}:{line_of(spec, 'HR = ')}: warning: high_risk.HR" in out


def test_the_filled_template_with_every_choice_made_has_no_finding_at_all(
    tmp_path: Path, loaded: LoadedPolicy
) -> None:
    spec = write(tmp_path, filled().replace("HR = YES/NO", "HR = YES"))
    assert lint(spec, loaded).problems == []


def test_the_unfilled_template_names_each_role_line(tmp_path: Path, loaded: LoadedPolicy) -> None:
    spec = write(tmp_path, SEED_FULL)
    report = lint(spec, loaded)
    assert not report.compliant
    assert [p.line for p in report.errors] == [line_of(spec, f"- {r}:") for r in ROLES]
    assert all("marked neither YES nor NO (got 'YES/NO')" in p.message for p in report.errors)


def test_four_problems_each_on_its_own_file_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = (
        filled({**ROLES, "Librarian": "MAYBE"})
        .replace("(version: 1.0.0)", "(version: 0.9.0)")
        .replace("local_only = false", "local_only = sometimes")
        .replace("confidence < 0.75", "confidence < 0.6")
    )
    spec = write(tmp_path, body)
    assert main(["spec", "lint", str(spec)]) == 1
    out = capsys.readouterr().out.splitlines()
    expected = {
        line_of(spec, "Policy:"): "policy.version: the spec names policy version '0.9.0'",
        line_of(spec, "- Librarian:"): "roles.Librarian: marked neither YES nor NO (got 'MAYBE')",
        line_of(spec, "Architect escalation"): "architect_escalation: 'confidence < 0.6' "
        "disagrees with the policy's trigger architect_low_confidence (confidence < 0.75)",
        line_of(spec, "local_only ="): "privacy.local_only: local_only must be true or false, "
        "got 'sometimes'",
    }
    errs = [line for line in out if not line.split(": ", 2)[1].startswith("warning")][:-1]
    assert len(errs) == 4, out
    for line_no, text in expected.items():
        prefix = f"{spec}:{line_no}: "
        (hit,) = [line for line in errs if line.startswith(prefix)]
        assert hit.startswith(prefix + text), hit
    assert out[-1].startswith(f"{spec}: NOT compliant")


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, filled(), "good.md")
    bad = write(tmp_path, filled().replace("2 failed", "3 failed"), "bad.md")
    assert main(["spec", "lint", str(good), str(bad), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["compliant"] is False and data["policy_version"] == "1.0.0"
    assert data["usage_errors"] == []
    first, second = data["files"]
    assert (first["path"], first["compliant"], first["errors"]) == (str(good), True, 0)
    assert first["form"] == "full" and first["spec_policy_version"] == "1.0.0"
    assert second["compliant"] is False
    (problem,) = [p for p in second["problems"] if p["severity"] == "error"]
    assert problem["field"] == "implementer_escalation"
    assert problem["line"] == line_of(bad, "Implementer escalation")
    assert set(problem) == {"path", "line", "field", "message", "severity"}


# ── the infrastructure-only form ─────────────────────────────────────────────────────────


def test_infrastructure_only_with_a_boolean_passes(tmp_path: Path, loaded: LoadedPolicy) -> None:
    for value in ("true", "false"):
        spec = write(tmp_path, SEED_INFRA.replace("<true|false>", value))
        report = lint(spec, loaded)
        assert report.form == "infrastructure_only"
        assert report.problems == [], report.problems


def test_infrastructure_only_template_as_is_fails_on_local_only(
    tmp_path: Path, loaded: LoadedPolicy
) -> None:
    spec = write(tmp_path, SEED_INFRA)
    assert errors(lint(spec, loaded)) == [
        f"{spec}:{line_of(spec, 'local_only')}: privacy.local_only: local_only must be true "
        "or false, got '<true|false>'"
    ]


@pytest.mark.parametrize(
    ("change", "needle", "words"),
    [
        (
            ("Roles exercised: none", "Roles exercised: Architect"),
            "Roles exercised",
            "expected 'none'",
        ),
        (("(version: 1.0.0)", "(version: 2.0.0)"), "Policy:", "policy version '2.0.0'"),
        (
            ("Guardrails still apply", "High-risk:\n- HR = YES\nGuardrails still apply"),
            "HR = YES",
            "infrastructure-only spec exercises no role",
        ),
        (
            ("Guardrails still apply", "Architect escalation: confidence < 0.9\nGuardrails"),
            "Architect escalation",
            "disagrees with the policy's trigger",
        ),
    ],
    ids=["roles-exercised", "version", "hr-yes", "threshold"],
)
def test_infrastructure_only_failures(
    tmp_path: Path, loaded: LoadedPolicy, change: tuple[str, str], needle: str, words: str
) -> None:
    body = SEED_INFRA.replace("<true|false>", "false").replace(*change)
    spec = write(tmp_path, body)
    (err,) = lint(spec, loaded).errors
    assert err.line == line_of(spec, needle) and words in err.message, err


def test_infrastructure_only_with_a_role_marked_yes_fails(
    tmp_path: Path, loaded: LoadedPolicy
) -> None:
    body = SEED_INFRA.replace("<true|false>", "true") + "\nRoles exercised by this spec:\n"
    body += "- Tutor: YES\n"
    spec = write(tmp_path, body)
    (err,) = lint(spec, loaded).errors
    assert err.line == line_of(spec, "- Tutor: YES") and "yet this one is YES" in err.message


def test_infrastructure_only_without_guardrails_line_warns(
    tmp_path: Path, loaded: LoadedPolicy
) -> None:
    body = SEED_INFRA.replace("<true|false>", "true").replace(
        "Guardrails still apply: sandboxing, evidence/logging, no hallucinated citations.\n", ""
    )
    report = lint(write(tmp_path, body), loaded)
    assert report.compliant and [w.field for w in report.warnings] == ["guardrails"]


# ── High-Risk and the cloud Judge ────────────────────────────────────────────────────────


def test_hr_yes_requires_the_judge_line_yes(tmp_path: Path, loaded: LoadedPolicy) -> None:
    body = filled({**ROLES, "Auditor/Judge": "NO"}).replace("HR = YES/NO", "HR = YES")
    spec = write(tmp_path, body)
    (err,) = lint(spec, loaded).errors
    assert err.line == line_of(spec, "HR = YES")
    assert "requires the cloud Judge (GR-002): mark 'Auditor/Judge: YES'" in err.message


def test_hr_no_with_the_judge_off_passes(tmp_path: Path, loaded: LoadedPolicy) -> None:
    body = filled({**ROLES, "Auditor/Judge": "NO"}).replace("HR = YES/NO", "HR = NO")
    assert lint(write(tmp_path, body), loaded).problems == []


def test_hr_yes_under_local_only_can_never_merge(tmp_path: Path, loaded: LoadedPolicy) -> None:
    body = (
        filled()
        .replace("HR = YES/NO", "HR = YES")
        .replace("local_only = false", "local_only = true")
    )
    spec = write(tmp_path, body)
    (err,) = lint(spec, loaded).errors
    assert err.line == line_of(spec, "HR = YES") and "GR-009" in err.message


def test_hr_yes_in_a_session_local_only_by_the_environment_can_never_merge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``SWITCHYARD_LOCAL_ONLY`` makes every run here local_only: the lint judges the spec
    by that, as the run would (it read the policy file's false and said compliant)."""
    body = filled().replace("HR = YES/NO", "HR = YES")
    spec = write(tmp_path, body)
    assert main(["spec", "lint", str(spec)]) == 0
    capsys.readouterr()
    monkeypatch.setenv("SWITCHYARD_LOCAL_ONLY", "1")
    assert main(["spec", "lint", str(spec)]) == 1
    out = capsys.readouterr().out
    assert f"{spec}:{line_of(spec, 'HR = YES')}: high_risk.HR" in out and "GR-009" in out
    # and the spec's own "local_only = false" is named as what it cannot do
    assert "this session is local_only (SWITCHYARD_LOCAL_ONLY" in out


def test_hr_must_be_yes_or_no(tmp_path: Path, loaded: LoadedPolicy) -> None:
    spec = write(tmp_path, filled().replace("HR = YES/NO", "HR = perhaps"))
    (err,) = lint(spec, loaded).errors
    assert err.field == "high_risk.HR" and "got 'perhaps" in err.message


# ── roles, routing, thresholds, tiers, overrides ─────────────────────────────────────────


def test_a_missing_role_line_is_named(tmp_path: Path, loaded: LoadedPolicy) -> None:
    spec = write(tmp_path, filled().replace("- Tutor: NO\n", ""))
    (err,) = lint(spec, loaded).errors
    assert err.field == "roles.Tutor" and err.line == line_of(spec, "Roles exercised by")


def test_unknown_and_repeated_role_lines(tmp_path: Path, loaded: LoadedPolicy) -> None:
    body = filled().replace("- Tutor: NO\n", "- Tutor: NO\n- Tutor: YES\n- Oracle: YES\n")
    spec = write(tmp_path, body)
    fields = [(e.field, e.message.split(" (")[0]) for e in lint(spec, loaded).errors]
    assert fields == [("roles.Tutor", "repeated"), ("roles.Oracle", "unknown role")]


def test_role_lines_may_use_the_policys_titles_and_emphasis(
    tmp_path: Path, loaded: LoadedPolicy
) -> None:
    body = (
        filled()
        .replace("- Architect/Planner: YES", "- Architect / Planner: **YES**")
        .replace("- Auditor/Judge: YES", "- `Auditor / Judge`: yes (HR only)")
        .replace("- Librarian: NO", "- Librarian (long-context): NO")
    )
    assert lint(write(tmp_path, body), loaded).errors == []


@pytest.mark.parametrize(
    ("old", "new", "needle", "field"),
    [
        ("local-first with escalation", "cloud-first", "Routing mode", "routing_mode"),
        ("confidence < 0.75", "confidence <= 0.75", "Architect escalation", "architect_escalation"),
        ("confidence < 0.75", "self_check < 0.75", "Architect escalation", "architect_escalation"),
        ("confidence < 0.75", "when unsure", "Architect escalation", "architect_escalation"),
        (
            "2 failed compile/test loops",
            "3 failed compile/test loops",
            "Implementer escalation",
            "implementer_escalation",
        ),
        (
            "2 failed compile/test loops",
            "a few loops",
            "Implementer escalation",
            "implementer_escalation",
        ),
        ("Kimi: escalation-only", "Kimi: default for the Librarian", "Kimi:", "kimi"),
        ("DeepSeek: escalation-only", "DeepSeek: always", "DeepSeek:", "deepseek"),
    ],
    ids=["mode", "op", "signal", "unreadable", "loops", "loops-unreadable", "kimi", "deepseek"],
)
def test_routing_lines_that_disagree(
    tmp_path: Path, loaded: LoadedPolicy, old: str, new: str, needle: str, field: str
) -> None:
    spec = write(tmp_path, filled().replace(old, new))
    (err,) = lint(spec, loaded).errors
    assert (err.field, err.line) == (field, line_of(spec, needle)), err


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("confidence < 0.75", "confidence < 0.75 (or < 0.5 on weekends)", "architect_escalation"),
        (
            "2 failed compile/test loops",
            "2 failed compile/test loops (4 in CI)",
            "implementer_escalation",
        ),
    ],
)
def test_a_routing_line_with_a_second_rule_agrees_with_no_trigger(
    tmp_path: Path, loaded: LoadedPolicy, old: str, new: str, field: str
) -> None:
    assert old in filled()
    spec = write(tmp_path, filled().replace(old, new))
    (err,) = lint(spec, loaded).errors
    assert err.field == field and "more than one" in err.message, err


def test_missing_routing_lines(tmp_path: Path, loaded: LoadedPolicy) -> None:
    body = filled().replace("Routing mode: local-first with escalation\n", "")
    body = body.replace("Kimi: escalation-only (Librarian hard sweeps)\n", "")
    spec = write(tmp_path, body)
    errs = lint(spec, loaded).errors
    assert [(e.field, e.line) for e in errs] == [
        ("routing_mode", line_of(spec, "## Model & Runtime")),
        ("kimi", line_of(spec, "## Model & Runtime")),
    ]
    assert all(e.message.startswith("missing line") for e in errs)


def test_an_optional_librarian_line_is_checked_too(tmp_path: Path, loaded: LoadedPolicy) -> None:
    ok = filled().replace("Kimi:", "Librarian escalation: context_estimate > 100k\nKimi:")
    assert lint(write(tmp_path, ok, "ok.md"), loaded).errors == []
    ok2 = ok.replace("> 100k", "> 100,000")
    assert lint(write(tmp_path, ok2, "ok2.md"), loaded).errors == []
    bad = write(tmp_path, ok.replace("> 100k", "> 50k"), "bad.md")
    (err,) = lint(bad, loaded).errors
    assert err.field == "librarian_escalation"


def test_thresholds_are_compared_with_the_loaded_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = default_policy_path().read_text()
    old = 'signal = "confidence"\nop = "lt"\nthreshold = 0.75'
    assert old in text
    policy = tmp_path / "policy.toml"
    policy.write_text(text.replace(old, old.replace("0.75", "0.8")))
    spec = write(tmp_path, filled())
    assert main(["spec", "lint", str(spec), "--policy", str(policy)]) == 1
    out = capsys.readouterr().out
    assert f"{spec}:{line_of(spec, 'Architect escalation')}: architect_escalation:" in out
    assert "(confidence < 0.8)" in out


@pytest.mark.parametrize(
    ("tier", "names"),
    [
        ("fast_local", "Qwen3 14B + Qwen2.5 Coder 32B (vLLM)"),
        ("fast_local", "qwen3-14b + <local 32B coder>"),
        ("slow_cloud_escalation", "DeepSeek Reasoner / deepseek-chat"),
        ("premium_judge", "gpt-5.1-high / claude-opus-4.7"),
        ("premium_judge", "Claude Opus"),
        ("premium_judge", "<the best judge you can afford>"),
    ],
)
def test_tier_names_match_loosely(
    tmp_path: Path, loaded: LoadedPolicy, tier: str, names: str
) -> None:
    body = _with_tier(filled(), tier, names)
    assert lint(write(tmp_path, body), loaded).errors == []


@pytest.mark.parametrize(
    ("tier", "names", "bad"),
    [
        ("premium_judge", "GPT-5.1 Low / Claude Opus", "GPT-5.1 Low"),
        ("premium_judge", "Llama 3 70B", "Llama 3 70B"),
        ("slow_cloud_escalation", "Kimi K2", "Kimi K2"),
        ("fast_local", "<planner> + Claude Sonnet", "Claude Sonnet"),
    ],
)
def test_tier_names_the_policy_does_not_have(
    tmp_path: Path, loaded: LoadedPolicy, tier: str, names: str, bad: str
) -> None:
    spec = write(tmp_path, _with_tier(filled(), tier, names))
    (err,) = lint(spec, loaded).errors
    assert err.field == f"tiers.{tier}" and err.line == line_of(spec, f"- {tier}:")
    assert err.message.startswith(f"{bad!r} is not in the policy's {tier} tier")


def test_missing_and_unknown_tiers(tmp_path: Path, loaded: LoadedPolicy) -> None:
    body = filled().replace(
        "- premium_judge: GPT-5.1 High / Claude Opus (HR required)", "- turbo: something"
    )
    spec = write(tmp_path, body)
    errs = lint(spec, loaded).errors
    assert [(e.field, e.line) for e in errs] == [
        ("tiers.premium_judge", line_of(spec, "Primary tiers:")),
        ("tiers.turbo", line_of(spec, "- turbo:")),
    ]


def test_overrides_must_be_listed(tmp_path: Path, loaded: LoadedPolicy) -> None:
    empty = write(tmp_path, filled().replace("- <none | list>\n", ""), "empty.md")
    (err,) = lint(empty, loaded).errors
    assert err.field == "overrides" and err.line == line_of(empty, "Overrides (must be rare)")
    gone = filled().replace("Overrides (must be rare):\n- <none | list>\n", "")
    (err,) = lint(write(tmp_path, gone, "gone.md"), loaded).errors
    assert err.field == "overrides" and err.message.startswith("missing")
    for listed in ("- none", "- judge: claude-opus-4.7 for this spec (approved by the lead)"):
        body = filled().replace("- <none | list>", listed)
        assert lint(write(tmp_path, body, "listed.md"), loaded).errors == []


def test_a_finding_that_quotes_a_key_masks_it(
    tmp_path: Path, loaded: LoadedPolicy, capsys: pytest.CaptureFixture[str]
) -> None:
    key = "sk-proj-PASTEDHERE0123456789abcdefXYZ"
    spec = write(tmp_path, filled().replace("- <none | list>", f"- key = {key}"))
    (err,) = lint(spec, loaded).errors
    assert err.field == "overrides" and key not in err.message and "[REDACTED]" in err.message
    assert main(["spec", "lint", str(spec), "--json"]) == 1
    assert key not in capsys.readouterr().out


# ── the policy reference ─────────────────────────────────────────────────────────────────


def test_the_policy_files_own_path_is_a_valid_reference(
    tmp_path: Path, loaded: LoadedPolicy
) -> None:
    absolute = filled().replace("docs/MODEL-POLICY.md", str(loaded.path))
    assert lint(write(tmp_path, absolute, "abs.md"), loaded).errors == []
    local = tmp_path / "policy.toml"
    local.write_text(loaded.path.read_text())
    own = load_policy(local)
    relative = filled().replace("docs/MODEL-POLICY.md", "`./policy.toml`")
    assert lint(write(tmp_path, relative, "rel.md"), own).errors == []


def test_another_path_is_not(tmp_path: Path, loaded: LoadedPolicy) -> None:
    spec = write(tmp_path, filled().replace("docs/MODEL-POLICY.md", "docs/OTHER.md"))
    (err,) = lint(spec, loaded).errors
    assert err.field == "policy.path" and err.line == line_of(spec, "Policy:")


@pytest.mark.parametrize(
    "line", ["Policy: docs/MODEL-POLICY.md", "Policy: (version: 1.0.0)", "Policy:"]
)
def test_a_malformed_policy_line(tmp_path: Path, loaded: LoadedPolicy, line: str) -> None:
    spec = write(tmp_path, filled().replace("Policy: docs/MODEL-POLICY.md (version: 1.0.0)", line))
    (err,) = lint(spec, loaded).errors
    assert err.field == "policy" and err.line == line_of(spec, "Policy:")


def test_a_missing_policy_line_is_reported_at_the_heading(
    tmp_path: Path, loaded: LoadedPolicy
) -> None:
    spec = write(tmp_path, filled().replace("Policy: docs/MODEL-POLICY.md (version: 1.0.0)", ""))
    (err,) = lint(spec, loaded).errors
    assert err.field == "policy" and err.line == line_of(spec, "## Model & Runtime")


# ── usage errors (exit 2) ────────────────────────────────────────────────────────────────


def test_usage_errors_exit_2_and_the_other_files_are_still_linted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write(tmp_path, filled(), "good.md")
    none = tmp_path / "none.md"
    none.write_text("# A spec without the block\n")
    binary = tmp_path / "bin.md"
    binary.write_bytes(b"\xff\xfe## Model")
    missing = tmp_path / "missing.md"
    huge = tmp_path / "huge.md"  # 200 MB took 0.8 GB to lint (an audit)
    huge.write_text(filled() + "x" * (1 << 20))
    files = [good, none, binary, missing, tmp_path, huge]
    rc = main(["spec", "lint", *map(str, files)])
    assert rc == 2
    captured = capsys.readouterr()
    assert f"{good}: compliant" in captured.out
    err = captured.err.splitlines()
    assert err == [
        f"switchyard: {none}: no '## Model & Runtime (Spec Overrides)' block",
        f"switchyard: {binary}: cannot read spec: not UTF-8 text (byte 0)",
        f"switchyard: {missing}: no such spec file",
        f"switchyard: {tmp_path}: is a directory, not a spec file",
        f"switchyard: {huge}: larger than a spec (1,048,576 bytes at most)",
    ]


def test_no_file_at_all_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["spec", "lint"])
    assert exc.value.code == 2
    capsys.readouterr()


def test_a_bad_policy_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write(tmp_path, filled())
    assert main(["spec", "lint", str(spec), "--policy", str(tmp_path / "nope.toml")]) == 2
    assert "cannot read policy" in capsys.readouterr().err


def test_strict_turns_warnings_into_findings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write(tmp_path, filled())
    assert main(["spec", "lint", "--strict", str(spec)]) == 1
    assert "NOT compliant" in capsys.readouterr().out


def test_lint_text_raises_only_spec_error_without_a_block(loaded: LoadedPolicy) -> None:
    with pytest.raises(SpecError):
        lint_text("nothing here", "x.md", loaded)


def test_model_mentions() -> None:
    assert model_mentions("GPT-5.1 High / Claude Opus (HR required)") == [
        "GPT-5.1 High",
        "Claude Opus",
    ]
    assert model_mentions("DeepSeek (reasoner/chat) [escalation-only]") == ["DeepSeek"]
    assert model_mentions("<local 14B planner> + <local 32B coder> (vLLM on RTX 5090)") == []


def _with_tier(text: str, tier: str, names: str) -> str:
    lines = [f"- {tier}: {names}" if ln.startswith(f"- {tier}:") else ln for ln in text.split("\n")]
    return "\n".join(lines)


def test_the_librarian_full_sweep_switch_is_yes_or_no(tmp_path: Path, loaded: LoadedPolicy) -> None:
    """Issue 17: `Librarian full sweep: YES` asks `run` for a whole-repository sweep."""
    from app.policy.spec import read_spec
    from app.policy.spec_overrides import spec_overrides

    marker = "Kimi: escalation-only (Librarian hard sweeps)\n"
    base = filled().replace("HR = YES/NO", "HR = NO")
    yes = write(tmp_path, base.replace(marker, marker + "Librarian full sweep: YES\n"))
    assert lint(yes, loaded).problems == []
    overrides = spec_overrides(read_spec(yes), loaded.policy)
    assert overrides.full_sweep is True
    assert "librarian full sweep: YES" in overrides.describe()
    bad = write(tmp_path, base.replace(marker, marker + "Librarian full sweep: maybe\n"), "b.md")
    (problem,) = lint(bad, loaded).errors
    assert problem.line == line_of(bad, "full sweep") and "YES or NO" in problem.message
    assert (
        spec_overrides(read_spec(write(tmp_path, base, "c.md")), loaded.policy).full_sweep is None
    )


@pytest.mark.parametrize(
    ("override", "fires"),
    [
        ("- Architect escalation: confidence < 0", False),
        ("- Architect escalation: confidence < 0.5", True),
        ("- Librarian escalation: context_estimate > 60k", True),
        # past every window the catalog serves (a user audit: read as compliant)
        ("- Librarian escalation: context_estimate > 999999999k", False),
        ("- Librarian escalation: context_estimate > 300k", True),
    ],
)
def test_an_override_that_turns_a_trigger_off_is_said(
    tmp_path: Path, loaded: LoadedPolicy, override: str, fires: bool
) -> None:
    """`confidence < 0` never fires (a confidence is never negative): the spec turned the
    Architect's escalation off and was called compliant with no word (an earlier note)."""
    spec = write(tmp_path, filled().replace("- <none | list>", override))
    report = lint(spec, loaded)
    assert report.errors == []
    said = [w for w in report.warnings if w.field == "overrides"]
    if fires:
        assert said == []
    else:
        (w,) = said
        assert w.line == line_of(spec, override) and "turns that escalation off" in w.message


def test_a_second_block_is_an_error_naming_it(tmp_path: Path, loaded: LoadedPolicy) -> None:
    """Only the first block is read: a second saying local_only = true was a warning, the
    spec compliant, and its run went to the cloud (a user audit)."""
    body = filled().replace("HR = YES/NO", "HR = YES")
    stricter = body.replace("local_only = false", "local_only = true")
    assert stricter != body
    spec = write(tmp_path, body + "\n## Other\n\n" + stricter)
    report = lint(spec, loaded)
    assert not report.compliant
    second = [n for n, ln in enumerate(spec.read_text().splitlines(), 1) if "Spec Overrides" in ln]
    (problem,) = report.errors
    assert problem.line == second[1] and "this one's settings ignored" in problem.message


def test_prose_naming_the_infrastructure_only_form_is_not_that_form(
    tmp_path: Path, loaded: LoadedPolicy
) -> None:
    """ "Note: this change is not infrastructure-only." in a full block read the block as
    the infrastructure-only form, and five errors followed (a user audit)."""
    body = filled().replace("HR = YES/NO", "HR = YES")
    spec = write(tmp_path, body + "\nNote: this change is not infrastructure-only.\n")
    report = lint(spec, loaded)
    assert report.form == "full" and report.problems == [], report.problems
    infra = write(tmp_path, SEED_INFRA, name="infra.md")
    assert lint(infra, loaded).form == "infrastructure_only"
