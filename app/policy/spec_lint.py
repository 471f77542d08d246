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
(a usage error: no file, no block) ever escapes; everything else is a finding.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.policy.loader import LoadedPolicy
from app.policy.schema import Policy, Trigger
from app.policy.spec import Form, SpecBlock, SpecEntry, clean_value, find_block, read_spec

Severity = Literal["error", "warning"]

#: the §8 role lines, in the seed's order, with the policy role each one stands for
ROLE_LINES: tuple[tuple[str, str], ...] = (
    ("Stage0 Tier2 (NotebookLM)", "tier2"),
    ("Architect/Planner", "architect"),
    ("Implementer/Rust Ace", "implementer"),
    ("Librarian", "librarian"),
    ("Tutor", "tutor"),
    ("Auditor/Judge", "judge"),
)
TIER_LINES = ("fast_local", "slow_cloud_escalation", "premium_judge")
ROUTING_MODE = "local-first with escalation"
#: the seed's wording for a spec that leaves High-Risk to the run's classifier
HR_UNDECIDED = "YES/NO"
#: providers whose models §4/§5 call Kimi and DeepSeek
FAMILY_PROVIDERS = {"kimi": "moonshot", "deepseek": "deepseek"}

_OPS = {"<": "lt", "<=": "le", ">": "gt", ">=": "ge", "≤": "le", "≥": "ge", "=<": "le", "=>": "ge"}
_OP_TEXT = {"lt": "<", "le": "<=", "gt": ">", "ge": ">="}
_COMPARISON = re.compile(
    r"(?P<op><=|>=|=<|=>|≤|≥|<|>)\s*(?P<num>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[kK]\b)?"
)
_THOUSANDS = re.compile(r"(?<=[0-9]),(?=[0-9]{3}\b)")
_LOOPS = re.compile(r"^\s*(?P<num>[0-9]+)\s+failed\b", re.I)
_VERSION = re.compile(r"\(\s*version\s*:(?P<version>[^)]*)\)", re.I)
_MD_LINK = re.compile(r"^\[[^\]]*\]\((?P<target>[^)]*)\)$")
_PLACEHOLDER = re.compile(r"<[^<>]*>")
_NOTE = re.compile(r"\([^()]*\)|\[[^\[\]]*\]")
# no "\s*" around the separators: a long run of blanks would backtrack quadratically
_SPLIT = re.compile(r"\+|/|,|&|\bor\b|\band\b", re.I)
_TOKEN = re.compile(r"[a-z0-9]+(?:\.[0-9]+)*")
_WORD = re.compile(r"^\s*[*`_]*(?P<word>[A-Za-z]+(?:/[A-Za-z]+)?)")


class LintProblem(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    line: int
    field: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        tag = "warning: " if self.severity == "warning" else ""
        return f"{self.path}:{self.line}: {tag}{self.field}: {_one_line(self.message)}"


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


def _one_line(text: str) -> str:
    return re.sub(r"[\x00-\x1f\x7f\u2028\u2029]", " ", text)


# ── entry points ─────────────────────────────────────────────────────────────────────────


def lint_file(path: Path, loaded: LoadedPolicy) -> LintReport:
    """Lint the block in ``path``. Raises SpecError when there is no file or no block."""
    block = read_spec(path)
    return lint_block(block, loaded, spec_dir=path.parent)


def lint_text(
    text: str, path: str, loaded: LoadedPolicy, *, spec_dir: Path | None = None
) -> LintReport:
    """Lint the block in ``text`` (``path`` names it in the findings)."""
    return lint_block(find_block(text, path), loaded, spec_dir=spec_dir)


def lint_block(
    block: SpecBlock, loaded: LoadedPolicy, *, spec_dir: Path | None = None
) -> LintReport:
    linter = _Linter(block, loaded, spec_dir)
    linter.run()
    problems = sorted(linter.problems, key=lambda p: (p.line, p.severity != "error"))
    return LintReport(
        path=block.path,
        form=block.form,
        policy_version=loaded.policy.version,
        spec_policy_version=linter.spec_version,
        problems=problems,
    )


# ── the checks ───────────────────────────────────────────────────────────────────────────


class _Linter:
    def __init__(self, block: SpecBlock, loaded: LoadedPolicy, spec_dir: Path | None) -> None:
        self.block = block
        self.loaded = loaded
        self.policy: Policy = loaded.policy
        self.spec_dir = spec_dir
        self.problems: list[LintProblem] = []
        self.spec_version: str | None = None
        self.heading = block.start_line

    def error(self, line: int, field: str, message: str) -> None:
        self.problems.append(
            LintProblem(path=self.block.path, line=line, field=field, message=message)
        )

    def warn(self, line: int, field: str, message: str) -> None:
        self.problems.append(
            LintProblem(
                path=self.block.path, line=line, field=field, message=message, severity="warning"
            )
        )

    def one(
        self, key: str, field: str, expected: str, *, required: bool = True
    ) -> SpecEntry | None:
        """The single entry with ``key``; missing or repeated ones are findings."""
        found = [
            e for e in self.block.find(key) if e.section not in ("roles", "tiers", "overrides")
        ]
        if not found:
            if required:
                self.error(self.heading, field, f"missing line: {expected}")
            return None
        for dup in found[1:]:
            self.error(dup.line, field, f"repeated (first on line {found[0].line})")
        return found[0]

    def run(self) -> None:
        b = self.block
        if b.duplicate_heading_line is not None:
            self.warn(
                b.duplicate_heading_line,
                "block",
                "a second 'Model & Runtime (Spec Overrides)' block: only the first is read",
            )
        self.check_policy_ref()
        local_only = self.check_local_only()
        if b.infrastructure_only:
            self.check_infrastructure_only()
            self.check_hr(judge_yes=False, local_only=local_only, required=False)
            # the full form's lines are optional here, but must still agree when present
            self.check_routing(required=False)
            self.check_tiers(required=False)
            return
        roles = self.check_roles()
        self.check_routing(required=True)
        self.check_tiers(required=True)
        self.check_hr(judge_yes=roles.get("judge") is True, local_only=local_only, required=True)
        self.check_overrides()

    # policy reference ------------------------------------------------------------------

    def check_policy_ref(self) -> None:
        entry = self.one(
            "policy",
            "policy",
            f"Policy: {self.policy.policy.seed} (version: {self.policy.version})",
        )
        if entry is None:
            return
        m = _VERSION.search(entry.value)
        if m is None or not entry.value[: m.start()].strip():
            self.error(
                entry.line,
                "policy",
                f"expected 'PATH (version: X.Y.Z)', got {entry.value!r}",
            )
            return
        ref = clean_value(entry.value[: m.start()])
        link = _MD_LINK.match(ref)
        if link is not None:
            ref = link["target"].strip()
        version = clean_value(m["version"]).removeprefix("v")
        self.spec_version = version
        if version != self.policy.version:
            self.error(
                entry.line,
                "policy.version",
                f"the spec names policy version {version!r}; the loaded policy is "
                f"{self.policy.version} ({self.loaded.path})",
            )
        if not self.same_policy(ref):
            self.error(
                entry.line,
                "policy.path",
                f"{ref!r} is neither the seed's {self.policy.policy.seed} nor the loaded "
                f"policy file {self.loaded.path}",
            )

    def same_policy(self, ref: str) -> bool:
        seed = self.policy.policy.seed
        if ref.removeprefix("./") == seed.removeprefix("./"):
            return True
        if not ref or "\x00" in ref:
            return False
        target = self.loaded.path
        candidates = [Path(ref)]
        if self.spec_dir is not None and not Path(ref).is_absolute():
            candidates.append(self.spec_dir / ref)
        for cand in candidates:
            try:
                if cand.exists() and cand.samefile(target):
                    return True
            except (OSError, ValueError):
                continue
        return False

    # privacy / High-Risk ---------------------------------------------------------------

    def check_local_only(self) -> bool | None:
        entry = self.one("local_only", "privacy.local_only", "local_only = true|false")
        if entry is None:
            return None
        word = clean_value(entry.value).rstrip(",;.").lower()
        if word not in ("true", "false"):
            self.error(
                entry.line,
                "privacy.local_only",
                f"local_only must be true or false, got {entry.value.strip() or 'nothing'!r}",
            )
            return None
        value = word == "true"
        if not value and self.policy.privacy.local_only:
            self.warn(
                entry.line,
                "privacy.local_only",
                "the policy has local_only = true: a spec can turn it on, never off",
            )
        return value

    def check_hr(self, *, judge_yes: bool, local_only: bool | None, required: bool) -> bool | None:
        entry = self.one("hr", "high_risk.HR", "HR = YES|NO", required=required)
        if entry is None:
            return None
        raw = clean_value(entry.value)
        word = _first_word(raw)
        if word == HR_UNDECIDED:
            self.warn(
                entry.line,
                "high_risk.HR",
                "HR left as YES/NO: the run's High-Risk classifier decides (§7)",
            )
            return None
        if word not in ("YES", "NO"):
            self.error(
                entry.line, "high_risk.HR", f"HR must be YES or NO, got {raw or 'nothing'!r}"
            )
            return None
        if word == "NO":
            return False
        judge = self.policy.roles.get("judge")
        if judge is None or not any(self.policy.is_cloud(m) for m in self.policy.chain("judge")):
            self.error(
                entry.line, "high_risk.HR", "HR = YES needs a cloud Judge, and the policy has none"
            )
        if self.block.infrastructure_only:
            self.error(
                entry.line,
                "high_risk.HR",
                "HR = YES requires the cloud Judge (GR-002), but an infrastructure-only spec "
                "exercises no role",
            )
        elif not judge_yes:
            self.error(
                entry.line,
                "high_risk.HR",
                "HR = YES requires the cloud Judge (GR-002): mark 'Auditor/Judge: YES'",
            )
        if local_only is True:
            self.error(
                entry.line,
                "high_risk.HR",
                "HR = YES requires the cloud Judge (GR-002), which local_only = true forbids "
                "(GR-009): the run could never be merge-ready",
            )
        return True

    # roles -----------------------------------------------------------------------------

    def role_names(self) -> dict[str, str]:
        """Compact spelling → policy role id: the §8 names, the policy's titles and ids."""
        names: dict[str, str] = {}
        for title, rid in ROLE_LINES:
            names[_compact(title)] = rid
            names[_compact(title.split("(")[0])] = rid
            names[rid] = rid
            for part in title.split("/"):
                names.setdefault(_compact(part), rid)
        for rid, role in self.policy.roles.items():
            if rid in {r for _, r in ROLE_LINES}:
                names.setdefault(_compact(role.title), rid)
                names.setdefault(_compact(role.title.split("(")[0]), rid)
        return names

    def check_roles(self) -> dict[str, bool | None]:
        names = self.role_names()
        seen: dict[str, SpecEntry] = {}
        marks: dict[str, bool | None] = {}
        header = next((e for e in self.block.entries if e.key.startswith("roles exercised")), None)
        entries = self.block.section("roles")
        for e in entries:
            if not e.key:
                self.error(e.line, "roles", f"expected 'ROLE: YES|NO', got {e.value!r}")
                continue
            rid = names.get(_compact(e.key))
            if rid is None:
                known = ", ".join(t for t, _ in ROLE_LINES)
                self.error(e.line, f"roles.{e.name}", f"unknown role (the §8 roles: {known})")
                continue
            title = dict((r, t) for t, r in ROLE_LINES)[rid]
            if rid in seen:
                self.error(e.line, f"roles.{title}", f"repeated (first on line {seen[rid].line})")
                continue
            seen[rid] = e
            raw = clean_value(e.value)
            word = _first_word(raw)
            if word in ("YES", "NO"):
                marks[rid] = word == "YES"
            else:
                marks[rid] = None
                self.error(
                    e.line,
                    f"roles.{title}",
                    f"marked neither YES nor NO (got {raw or 'nothing'!r})",
                )
            if rid not in self.policy.roles:
                self.error(e.line, f"roles.{title}", f"the policy has no role {rid!r}")
        where = header.line if header is not None else self.heading
        if header is None and not entries:
            self.error(
                self.heading, "roles", "missing 'Roles exercised by this spec:' and its role list"
            )
            return marks
        for title, rid in ROLE_LINES:
            if rid not in seen:
                self.error(where, f"roles.{title}", "role line missing (mark it YES or NO)")
        return marks

    def check_infrastructure_only(self) -> None:
        entry = next(
            (e for e in self.block.entries if e.key == "roles exercised" and e.section == ""), None
        )
        if entry is None:
            self.error(
                self.heading,
                "roles_exercised",
                "an infrastructure-only spec says 'Roles exercised: none'",
            )
        elif not clean_value(entry.value).lower().startswith("none"):
            self.error(
                entry.line,
                "roles_exercised",
                f"an infrastructure-only spec exercises no role: expected 'none', got "
                f"{entry.value.strip()!r}",
            )
        for e in self.block.section("roles"):
            if _first_word(clean_value(e.value)) == "YES":
                self.error(
                    e.line,
                    f"roles.{e.name}",
                    "an infrastructure-only spec exercises no role, yet this one is YES",
                )
        if not any(e.key.startswith("guardrails") for e in self.block.entries):
            self.warn(
                self.heading,
                "guardrails",
                "missing 'Guardrails still apply: sandboxing, evidence/logging, no hallucinated "
                "citations.'",
            )

    # routing mode and thresholds -------------------------------------------------------

    def check_routing(self, *, required: bool) -> None:
        mode = self.one(
            "routing mode", "routing_mode", f"Routing mode: {ROUTING_MODE}", required=required
        )
        if mode is not None:
            value = clean_value(mode.value).rstrip(".").lower()
            if re.sub(r"\s+", " ", value) != ROUTING_MODE:
                self.error(
                    mode.line,
                    "routing_mode",
                    f"the policy routes {ROUTING_MODE!r}, the spec says {mode.value.strip()!r}",
                )
        arch = self.one(
            "architect escalation",
            "architect_escalation",
            "Architect escalation: confidence < 0.75",
            required=required,
        )
        if arch is not None:
            self.check_comparison(arch, "architect_escalation", "architect", "confidence")
        impl = self.one(
            "implementer escalation",
            "implementer_escalation",
            "Implementer escalation: 2 failed compile/test loops",
            required=required,
        )
        if impl is not None:
            self.check_loops(impl)
        lib = self.one("librarian escalation", "librarian_escalation", "", required=False)
        if lib is not None:
            self.check_comparison(lib, "librarian_escalation", "librarian", "context_estimate")
        for family, title in (("kimi", "Kimi"), ("deepseek", "DeepSeek")):
            e = self.one(
                family,
                family,
                f"{title}: escalation-only",
                required=required,
            )
            if e is not None:
                self.check_family(e, family, title)

    def trigger(self, role: str, signal: str) -> Trigger | None:
        return next(
            (t for t in self.policy.triggers if t.role == role and t.signal == signal), None
        )

    def check_comparison(self, e: SpecEntry, field: str, role: str, signal: str) -> None:
        trig = self.trigger(role, signal)
        if trig is None or trig.threshold is None or trig.op == "is_true":
            self.error(e.line, field, f"the policy has no {role} trigger on {signal}")
            return
        want = f"{signal} {_OP_TEXT[trig.op]} {_num(trig.threshold)}"
        text = _THOUSANDS.sub("", clean_value(e.value))
        m = _COMPARISON.search(text)
        if m is None:
            self.error(
                e.line, field, f"cannot read a threshold in {e.value.strip()!r} (policy: {want})"
            )
            return
        named = text[: m.start()].strip().lower().replace(" ", "_")
        number = float(m["num"]) * (1000 if m["unit"] else 1)
        op = _OPS[m["op"]]
        same = math.isclose(number, trig.threshold, rel_tol=1e-9, abs_tol=1e-12)
        if named not in ("", signal) or not same or op != trig.op:
            self.error(
                e.line,
                field,
                f"{clean_value(e.value)!r} disagrees with the policy's trigger {trig.id} ({want})",
            )

    def check_loops(self, e: SpecEntry) -> None:
        trig = self.trigger("implementer", "failed_loops")
        if trig is None or trig.threshold is None:
            self.error(e.line, "implementer_escalation", "the policy has no failed_loops trigger")
            return
        want = _num(trig.threshold)
        m = _LOOPS.match(clean_value(e.value))
        if m is None:
            self.error(
                e.line,
                "implementer_escalation",
                f"cannot read a loop count in {e.value.strip()!r} (policy: {want} failed "
                "compile/test loops)",
            )
            return
        # the policy's op is ge: N failed loops escalate; a spec states the N
        if int(m["num"]) != trig.threshold or trig.op != "ge":
            self.error(
                e.line,
                "implementer_escalation",
                f"{m['num']} failed loops disagrees with the policy's trigger {trig.id} "
                f"(failed_loops {_OP_TEXT.get(trig.op, trig.op)} {want})",
            )

    def check_family(self, e: SpecEntry, family: str, title: str) -> None:
        provider = FAMILY_PROVIDERS[family]
        models = [m for m in self.policy.models.values() if m.provider == provider]
        says_only = clean_value(e.value).lower().startswith("escalation-only")
        if not says_only:
            self.error(
                e.line,
                family,
                f"the policy makes {title} escalation-only (§4/§5), the spec says "
                f"{e.value.strip()!r}",
            )
        elif models and not all(m.escalation_only for m in models):
            loose = [m.display for m in models if not m.escalation_only]
            self.error(
                e.line, family, f"the policy lets {', '.join(loose)} serve without an escalation"
            )

    # tiers -----------------------------------------------------------------------------

    def check_tiers(self, *, required: bool) -> None:
        entries = self.block.section("tiers")
        header = next(
            (e for e in self.block.entries if e.key.endswith("tiers") and not e.section), None
        )
        seen: dict[str, SpecEntry] = {}
        for e in entries:
            name = e.key.replace(" ", "_")
            if name not in self.policy.tiers:
                known = ", ".join(self.policy.tiers)
                self.error(
                    e.line, f"tiers.{e.name or '?'}", f"unknown tier (the policy's: {known})"
                )
                continue
            if name in seen:
                self.error(e.line, f"tiers.{name}", f"repeated (first on line {seen[name].line})")
                continue
            seen[name] = e
            self.check_tier(e, name)
        if not required and not entries:
            return
        where = header.line if header is not None else self.heading
        for name in self.policy.tiers:
            if name not in seen:
                self.error(where, f"tiers.{name}", "tier line missing from 'Primary tiers:'")

    def check_tier(self, e: SpecEntry, tier: str) -> None:
        models = [self.policy.resolve(m) for m in self.policy.tiers[tier].models]
        for mention in model_mentions(e.value):
            if not any(self.mentions(mention, m) for m in models):
                self.error(
                    e.line,
                    f"tiers.{tier}",
                    f"{mention!r} is not in the policy's {tier} tier ({', '.join(models)})",
                )

    def mentions(self, mention: str, model_id: str) -> bool:
        """Loosely: every word of the mention starts a word of the model's id or name."""
        if self.policy.resolve(_slug(mention)) == model_id:
            return True
        words = _TOKEN.findall(mention.lower())
        if not words:
            return True
        model = self.policy.models.get(model_id)
        pool = set(_TOKEN.findall(model_id.lower()))
        if model is not None:
            pool |= set(_TOKEN.findall(model.display.lower()))
            pool |= set(_TOKEN.findall(model.served_name.lower()))
        for alias, target in self.policy.aliases.items():
            if target == model_id:
                pool |= set(_TOKEN.findall(alias.lower()))
        return all(any(p.startswith(w) for p in pool) for w in words)

    # overrides -------------------------------------------------------------------------

    def check_overrides(self) -> None:
        header = next(
            (e for e in self.block.entries if e.key.startswith("overrides") and not e.section), None
        )
        if header is None:
            self.error(
                self.heading, "overrides", "missing 'Overrides (must be rare):' and its list"
            )
            return
        if clean_value(header.value):
            return  # "Overrides: none" on one line
        if not [e for e in self.block.section("overrides") if clean_value(e.value)]:
            self.error(
                header.line,
                "overrides",
                "overrides are not listed: write '- none' or list each override",
            )


# ── helpers ──────────────────────────────────────────────────────────────────────────────


def model_mentions(value: str) -> list[str]:
    """Model names in a tier line, without notes ``(...)``/``[...]`` and ``<placeholders>``."""
    text = _PLACEHOLDER.sub(" ", value)
    for _ in range(4):  # nested notes, a few levels
        text = _NOTE.sub(" ", text)
    text = text.replace("(", " ").replace(")", " ").replace("[", " ").replace("]", " ")
    parts = [p.strip(" .*`-") for p in _SPLIT.split(text)]
    return [p for p in parts if _TOKEN.search(p.lower())]


def _first_word(text: str) -> str:
    m = _WORD.match(text)
    return m["word"].upper() if m else ""


def _compact(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _slug(text: str) -> str:
    return re.sub(r"[\s_]+", "-", text.strip().lower())


def _num(value: float) -> str:
    return f"{value:g}"
