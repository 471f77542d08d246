"""Machine-read outputs (GR-012). Each JSON schema is sent to the model for constrained
decoding, then the reply is validated against the same model.

Lengths are bounded on purpose: a grammar-constrained small model otherwise fills a free
string until it runs out of tokens. Each item of a list of texts is bounded too, and no
bound is above 1,000 characters: the in-process backend leaves longer ones out of the
grammar (llama.cpp refuses a deeper nesting; app/backends/llamacpp_grammar.py), and the
135M model then wrote one tutor question for 2,048 tokens, until the reply was cut off.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: one short text of a list: a risk, a question, a test to run
Item = Annotated[str, Field(max_length=300)]
#: a repository-relative path
PathText = Annotated[str, Field(max_length=260)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlanStep(Strict):
    title: str = Field(min_length=1, max_length=160)
    files: list[PathText] = Field(default_factory=list, max_length=12)
    rationale: str = Field(default="", max_length=300)


class Plan(Strict):
    """plan.json: what the Architect emits."""

    goal: str = Field(min_length=1, max_length=300)
    steps: list[PlanStep] = Field(min_length=1, max_length=12)
    risks: list[Item] = Field(default_factory=list, max_length=8)
    acceptance_tests: list[Item] = Field(default_factory=list, max_length=8)
    confidence: float = Field(ge=0, le=1)
    open_questions: list[Item] = Field(default_factory=list, max_length=8)


class ImplementerOutput(Strict):
    """The Implementer's older reply: a unified diff inside JSON. Replies now carry edit
    blocks (:mod:`app.pipeline.edits`), whose parser still reads this shape."""

    diff: str = Field(min_length=1, max_length=40_000, description="a unified diff")
    self_check_confidence: float = Field(ge=0, le=1)
    notes: str = Field(default="", max_length=500)


class Finding(Strict):
    """One Judge finding; ``cite`` is evidence: `path:line`, `test:NAME` or `audit:SEQ`."""

    severity: Literal["info", "minor", "major", "blocker"]
    message: str = Field(min_length=1, max_length=400)
    cite: str = Field(min_length=1, max_length=200)


class Verdict(Strict):
    verdict: Literal["approve", "reject", "needs_work"]
    summary: str = Field(default="", max_length=600)
    findings: list[Finding] = Field(default_factory=list, max_length=20)


class CritiqueReport(Strict):
    """The critic-only sidecar (GR-001): it never rewrites."""

    risks: list[Item] = Field(default_factory=list, max_length=10)
    contradictions: list[Item] = Field(default_factory=list, max_length=10)
    missing_requirements: list[Item] = Field(default_factory=list, max_length=10)
    guardrail_conflicts: list[Item] = Field(default_factory=list, max_length=10)


class TutorTurn(Strict):
    """A coaching turn: questions before any answer (§1)."""

    questions: list[Item] = Field(min_length=1, max_length=4)
    hint: str = Field(default="", max_length=400)
    answer: str = Field(default="", max_length=1000)


class ReflectionPattern(Strict):
    pattern: str = Field(min_length=1, max_length=300)
    helpful: bool
    confidence: float = Field(ge=0, le=1)


class Reflection(Strict):
    """The ACE reflector's output after an interesting failure."""

    patterns: list[ReflectionPattern] = Field(default_factory=list, max_length=6)


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema sent for constrained decoding (inlined: no $ref for small grammars)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any, names: bool = False) -> Any:
        # ``names``: node is a properties mapping, whose keys are field names, not keywords
        if isinstance(node, dict):
            if "$ref" in node and not names:
                return inline(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {
                k: inline(v, names=(k == "properties" and not names))
                for k, v in node.items()
                if names or k not in ("title", "description")
            }
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    inlined: dict[str, Any] = inline(schema)
    return inlined
