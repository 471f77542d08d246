"""§8 spec compliance: check a spec's "Model & Runtime (Spec Overrides)" block.

Checked against the loaded policy:

* the policy reference (the seed's ``docs/MODEL-POLICY.md`` or the policy file's own
  path) and its version;
* full form: every §8 role line, each marked YES or NO; the routing mode; the Architect
  and Implementer thresholds (against the policy's triggers); the Kimi and DeepSeek lines;
  the three tiers (model names compared loosely with the policy's tiers, ``<placeholders>``
  allowed); local_only a boolean; HR = YES only with the cloud Judge; overrides listed;
* infrastructure-only form: "Roles exercised: none", local_only a boolean.

Every problem names the line inside the spec file. Only :class:`~app.policy.spec.SpecError`
(a usage error: no file, no block) ever escapes; everything else is a finding. The checks
themselves are in :mod:`app.policy.spec_checks`, one module per part of the block; this
module runs them in order and makes the report.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from app.policy.loader import LoadedPolicy
from app.policy.spec import Form, SpecBlock, find_block, read_spec
from app.policy.spec_checks.findings import Findings, LintProblem, Severity
from app.policy.spec_checks.overrides import check_overrides
from app.policy.spec_checks.policy_ref import check_policy_ref
from app.policy.spec_checks.privacy import HR_UNDECIDED, check_hr, check_local_only
from app.policy.spec_checks.roles import ROLE_LINES, check_infrastructure_only, check_roles
from app.policy.spec_checks.routing import FAMILY_PROVIDERS, ROUTING_MODE, check_routing
from app.policy.spec_checks.tiers import TIER_LINES, check_tiers, model_mentions

__all__ = [
    "FAMILY_PROVIDERS",
    "HR_UNDECIDED",
    "ROLE_LINES",
    "ROUTING_MODE",
    "TIER_LINES",
    "LintProblem",
    "LintReport",
    "Severity",
    "lint_block",
    "lint_file",
    "lint_text",
    "model_mentions",
]


class LintReport(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    form: Form
    policy_version: str
    spec_policy_version: str | None
    problems: list[LintProblem] = Field(default_factory=list)

    @property
    def errors(self) -> list[LintProblem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[LintProblem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def compliant(self) -> bool:
        return not self.errors

    def as_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "form": self.form,
            "compliant": self.compliant,
            "policy_version": self.policy_version,
            "spec_policy_version": self.spec_policy_version,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "problems": [p.model_dump() for p in self.problems],
        }


# ── entry points ─────────────────────────────────────────────────────────────────────────


def lint_file(path: Path, loaded: LoadedPolicy, *, session_local_only: bool = False) -> LintReport:
    """Lint the block in ``path``. Raises SpecError when there is no file or no block."""
    block = read_spec(path)
    return lint_block(block, loaded, spec_dir=path.parent, session_local_only=session_local_only)


def lint_text(
    text: str, path: str, loaded: LoadedPolicy, *, spec_dir: Path | None = None
) -> LintReport:
    """Lint the block in ``text`` (``path`` names it in the findings)."""
    return lint_block(find_block(text, path), loaded, spec_dir=spec_dir)


def lint_block(
    block: SpecBlock,
    loaded: LoadedPolicy,
    *,
    spec_dir: Path | None = None,
    session_local_only: bool = False,
) -> LintReport:
    """``session_local_only``: the session the spec would run in is local_only beyond the
    policy file (``SWITCHYARD_LOCAL_ONLY``, the config, ``--local-only``)."""
    found = Findings(block, loaded, spec_dir, session_local_only=session_local_only)
    _run(found)
    problems = sorted(found.problems, key=lambda p: (p.line, p.severity != "error"))
    return LintReport(
        path=block.path,
        form=block.form,
        policy_version=loaded.policy.version,
        spec_policy_version=found.spec_version,
        problems=problems,
    )


def _run(f: Findings) -> None:
    """Every check the block's form calls for; the report sorts what they find by line."""
    b = f.block
    if b.duplicate_heading_line is not None:
        # an error, not a warning: only the first is read, and a second that is stricter
        # (local_only = true) was a compliant spec whose run went to the cloud (a user audit)
        f.error(
            b.duplicate_heading_line,
            "block",
            "a second 'Model & Runtime (Spec Overrides)' block: only the first would be read,"
            " and this one's settings ignored; keep one",
        )
    check_policy_ref(f)
    local_only = check_local_only(f)
    if b.infrastructure_only:
        check_infrastructure_only(f)
        check_hr(f, judge_yes=False, local_only=local_only, required=False)
        # the full form's lines are optional here, but must still agree when present
        check_routing(f, required=False)
        check_tiers(f, required=False)
        check_overrides(f, required=False)
        return
    roles = check_roles(f)
    check_routing(f, required=True)
    check_tiers(f, required=True)
    check_hr(f, judge_yes=roles.get("judge") is True, local_only=local_only, required=True)
    check_overrides(f)
