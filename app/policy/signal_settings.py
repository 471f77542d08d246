"""Policy settings that make the §3 signals truthful: how much each failed grounding check
lowers a self-reported confidence, how much room each role's reply gets, and how many
tool actions make a role tool-heavy. Every field has a default, so an older policy file
without these tables still loads."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Grounding(_Strict):
    """A confidence is the model's self-report capped by checks Switchyard makes; each
    failed check lowers the cap (from 1.0) by its amount here."""

    #: a plan: files its steps name are neither in the repository nor declared new
    plan_unknown_files: float = Field(default=0.3, ge=0, le=1)
    #: a plan: no step names a file at all
    plan_no_files: float = Field(default=0.3, ge=0, le=1)
    #: a plan: symbols its steps name (``parse()``, `` `Tokenizer` ``) are nowhere in the repo
    plan_unknown_symbols: float = Field(default=0.15, ge=0, le=1)
    #: a plan: some steps repeat another step or say nothing
    plan_duplicate_steps: float = Field(default=0.3, ge=0, le=1)
    #: a plan: acceptance tests it names do not exist
    plan_unknown_tests: float = Field(default=0.15, ge=0, le=1)
    #: a plan: its goal shares too few of the task's key terms
    plan_off_task: float = Field(default=0.25, ge=0, le=1)
    #: the share of the task's key terms the goal must name (a lexical overlap)
    goal_overlap_min: float = Field(default=0.2, ge=0, le=1)
    #: a change: its edits did not apply
    change_not_applied: float = Field(default=0.6, ge=0, le=1)
    #: a change: it touches none of the (existing) files the plan named
    change_off_plan: float = Field(default=0.3, ge=0, le=1)
    #: a change: empty, or larger than the plan implies
    change_size: float = Field(default=0.25, ge=0, le=1)
    #: changed lines a plan step implies at most (the size check's bound is steps × this)
    change_lines_per_step: int = Field(default=40, ge=1, le=10_000)


class Generation(_Strict):
    """Output room per reply (max_tokens), sized to what the reply holds, and the number of
    model calls one stage may make."""

    #: a plan.json: the schema's bounded fields at a small model's verbosity
    plan_tokens: int = Field(default=400, ge=32, le=32_768)
    #: the Architect's self-interrogation (a few questions)
    question_tokens: int = Field(default=160, ge=16, le=8192)
    #: an edit reply: this many tokens per token of the files it may touch (a block
    #: repeats what it changes, SEARCH and REPLACE: 0.3 is a change to ~15% of them) …
    edit_tokens_per_file_token: float = Field(default=0.3, gt=0, le=4)
    #: … plus this margin (the markers, the trailer) …
    edit_margin_tokens: int = Field(default=160, ge=0, le=8192)
    #: … and never more than this
    edit_max_tokens: int = Field(default=700, ge=32, le=32_768)
    #: an ACE reflection
    reflection_tokens: int = Field(default=300, ge=16, le=8192)
    #: the Judge's verdict (findings with citations)
    verdict_tokens: int = Field(default=400, ge=32, le=32_768)
    #: the critic-only sidecar's report
    critique_tokens: int = Field(default=500, ge=32, le=32_768)
    #: a reasoning model's thinking on top of the visible reply, per effort
    #: (OpenAI's max_completion_tokens counts both)
    reasoning_low_tokens: int = Field(default=1024, ge=0, le=200_000)
    reasoning_medium_tokens: int = Field(default=4096, ge=0, le=200_000)
    reasoning_high_tokens: int = Field(default=16_384, ge=0, le=200_000)
    #: model calls one pipeline stage may make (repairs included); past it the stage stops
    max_calls_per_stage: int = Field(default=12, ge=1, le=1000)

    def reasoning_tokens(self, effort: str | None) -> int:
        return {
            "low": self.reasoning_low_tokens,
            "medium": self.reasoning_medium_tokens,
            "high": self.reasoning_high_tokens,
        }.get(effort or "", 0)


class ToolUse(_Strict):
    """When a role's real tool actions (sandboxed commands, file reads, searches) make it
    tool-heavy. The Implementer's count is its ``tool_calls`` signal (the trigger holds
    that threshold); the Librarian's is a flag set here."""

    librarian_heavy_actions: int = Field(default=40, ge=1, le=100_000)
