"""What the router decides over and what it decides: Signals, RouterState, Decision."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field

SkipReason = Literal[
    "unhealthy",  # runtime or model marked down (health probe, cooldown after an error)
    "not_served",  # the runtime is up and its server does not list the model
    "context_too_small",  # prompt estimate + output budget exceeds the model's window
    "budget",  # the estimated cost exceeds what is left under a cap (GR-011)
    "local_only",  # GR-009 forbids every cloud call
    "denied",  # the human (or a timeout) denied this model
    "escalation_only",  # an escalation-only model entered first from another role's chain
    "unavailable",  # cannot be reached at all, e.g. no API key
    "failed",  # it was tried in this request and failed
]
Action = Literal["local", "escalate", "refuse"]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Signals(Frozen):
    """Everything §3 names. Numbers are compared with the policy's thresholds.

    A confidence is a finite number from 0 to 1: a NaN compares false with every
    threshold, so ``confidence=nan`` kept the §3 escalation from firing without a word.
    """

    # Architect
    confidence: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    plan_steps: int | None = Field(default=None, ge=0)
    files_touched: int | None = Field(default=None, ge=0)
    open_questions: int | None = Field(default=None, ge=0)
    # Implementer
    failed_loops: int | None = Field(default=None, ge=0)
    self_check_confidence: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    modules_touched: int | None = Field(default=None, ge=0)
    tool_calls: int | None = Field(default=None, ge=0)
    # Librarian (context_estimate is also the prompt size used for every role's checks)
    context_estimate: int | None = Field(default=None, ge=0)
    contradictions_detected: bool = False
    tool_heavy: bool = False
    full_sweep: bool = False
    local_synth_confidence: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    # ACE, Judge, Tier2
    interesting_failure: bool = False
    high_risk: bool = False
    tier2_opt_in: bool = False
    # Any role
    user_request: bool = False
    #: the reply's output cap when the caller sets one (the gateway: the client's
    #: max_tokens): the budget reservation covers it, not the role's default
    output_tokens: int | None = Field(default=None, ge=1)
    #: the JSON schema's note a cloud model is sent besides the prompt (a local runtime
    #: takes the schema as a grammar, never as text): a cloud step's window and estimate
    #: count it (a 300-field schema was priced at 11 tokens and sent as 16k: an audit)
    schema_tokens: int = Field(default=0, ge=0)
    #: (signal, what its value rests on): a grounded confidence's self-report and failed
    #: checks, said in the trigger's text when it fires
    grounds: tuple[tuple[str, str], ...] = ()

    def with_estimate(
        self, tokens: int | None, output_tokens: int | None = None, schema_tokens: int = 0
    ) -> Self:
        """These signals with ``context_estimate`` set to ``tokens`` (the router's count
        of a request's prompt, a non-negative int: nothing to validate; None keeps the
        caller's), ``output_tokens`` to the request's own cap (a positive int, as
        ``ChatRequest`` holds it; None keeps the signal's) and ``schema_tokens`` to its
        schema's note (0 keeps the signal's). What ``model_copy(update=...)``
        makes, in half its time: once per request (issue 20). A subclass (its own private
        attributes or extras) gets ``model_copy``'s."""
        update: dict[str, int] = {}
        if output_tokens is not None:
            update["output_tokens"] = output_tokens
        if tokens is not None:
            update["context_estimate"] = tokens
        if schema_tokens:
            update["schema_tokens"] = schema_tokens
        if type(self) is not Signals:
            return self.model_copy(update=update)
        new = object.__new__(type(self))
        values = self.__dict__.copy()
        values.update(update)
        object.__setattr__(new, "__dict__", values)
        object.__setattr__(
            new, "__pydantic_fields_set__", self.__pydantic_fields_set__ | update.keys()
        )
        object.__setattr__(new, "__pydantic_extra__", None)
        object.__setattr__(new, "__pydantic_private__", None)
        return new


class RouterState(Frozen):
    """The world as the router sees it, captured before deciding (no I/O inside decide)."""

    local_only: bool = False
    session_left_usd: float = float("inf")
    day_left_usd: float = float("inf")
    provider_left_usd: dict[str, float] = Field(default_factory=dict)
    # keys: "runtime:<name>" for local runtimes, a model id for cloud models; absent = healthy
    health: dict[str, bool] = Field(default_factory=dict)
    # model id → why it cannot be reached at all (e.g. "no key: OPENAI_API_KEY not set")
    unavailable: dict[str, str] = Field(default_factory=dict)
    # model id → how it failed earlier in this request
    failed: dict[str, str] = Field(default_factory=dict)
    approved: frozenset[str] = frozenset()  # allowed for the whole session
    denied: frozenset[str] = frozenset()
    # model id → the window of the model that actually serves (GGUF metadata, max_model_len)
    context_windows: dict[str, int] = Field(default_factory=dict)

    def budget_left(self, provider: str) -> float:
        return min(
            self.session_left_usd,
            self.day_left_usd,
            self.provider_left_usd.get(provider, float("inf")),
        )


class Reason(Frozen):
    """One trigger that fired, with the value that made it fire."""

    code: str
    trigger: str
    signal: str
    op: str
    value: float | bool
    threshold: float | None = None
    text: str


class Skip(Frozen):
    model: str
    runtime: str
    reason: SkipReason
    detail: str = ""


class LocalTarget(Frozen):
    model: str
    runtime: str
    context_window: int
    #: set when the role's own model/runtime could not serve (GR-005 must say so)
    substituted_for: str | None = None
    #: the prompt exceeds every local window and this one is tried anyway: ``run``'s brief
    #: is condensed by the Librarian to fit beforehand; other requests fail as too long
    condense: bool = False


class Decision(Frozen):
    role: str
    action: Action
    policy_version: str
    target: str | None = None
    provider: str | None = None
    runtime: str | None = None
    reasons: list[Reason] = Field(default_factory=list)
    needs_approval: bool = False
    est_tokens_in: int = 0
    est_tokens_out: int = 0
    est_cost_usd: float = 0.0
    chain: list[str] = Field(default_factory=list)
    chain_step: int | None = None
    skipped: list[Skip] = Field(default_factory=list)
    local: LocalTarget | None = None
    refusal_code: str | None = None
    notes: list[str] = Field(default_factory=list)

    @property
    def reason_codes(self) -> list[str]:
        codes = [r.code for r in self.reasons]
        return list(dict.fromkeys(codes))

    @property
    def is_cloud(self) -> bool:
        return self.action == "escalate"
