"""The policy file's schema: strict pydantic models (unknown keys are errors)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.hosts import HostPort, named_local_hosts
from app.policy.signal_settings import Generation, Grounding, ToolUse

Locality = Literal["local", "cloud"]
RoleKind = Literal["llm", "retrieval", "embedding", "vision"]
EndpointKind = Literal[
    "openai_compatible", "anthropic", "llamacpp_inprocess", "sentence_transformers", "tensorrt"
]
RuntimeKind = Literal["vllm", "llamacpp_server", "llamacpp_inprocess", "ollama"]
TriggerOp = Literal["lt", "le", "gt", "ge", "is_true"]
RetryKind = Literal[
    "rate_limited", "server_error", "timeout", "connect", "context_length", "bad_output", "auth"
]

# Signals a trigger may read. Numbers are compared with a threshold; flags with is_true.
NUMERIC_SIGNALS = frozenset(
    {
        "confidence",
        "plan_steps",
        "files_touched",
        "open_questions",
        "failed_loops",
        "self_check_confidence",
        "modules_touched",
        "tool_calls",
        "context_estimate",
        "local_synth_confidence",
    }
)
FLAG_SIGNALS = frozenset(
    {
        "tool_heavy",
        "contradictions_detected",
        "full_sweep",
        "interesting_failure",
        "high_risk",
        "tier2_opt_in",
        "user_request",
    }
)
# Signals that are fractions in [0, 1]: their thresholds must be too.
UNIT_SIGNALS = frozenset({"confidence", "self_check_confidence", "local_synth_confidence"})


class Strict(BaseModel):
    # nan/inf are valid TOML but no policy number means them: a nan threshold never fires.
    # strict: TOML has types of its own, and a value of another was converted silently
    # (`session_usd = "5"`, `local_only = "yes"` became true, `max_output_tokens = true`
    # became 1); an int still reads as a float
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)


class PolicyMeta(Strict):
    version: str = Field(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$")
    seed: str
    created: str
    status: Literal["active", "draft", "deprecated"]


class Privacy(Strict):
    local_only: bool
    #: local runtime endpoints on other hosts ("gpu-box.lan:8000") that local_only still
    #: lets through, besides the runtimes' own base_url hosts (checked by address)
    local_hosts: list[str] = Field(default_factory=list)


class Sandbox(Strict):
    """GR-010: where the project's test command runs (see ``[sandbox]`` in the policy)."""

    #: run the test command with no sandbox at all (network on, writes unconfined) where
    #: neither bwrap nor user namespaces (``unshare``) work; audited; refused under local_only
    allow_unsandboxed: bool = False


class Gateway(Strict):
    """``switchyard serve``: which model ids clients may ask for, and what they mean."""

    #: the roles served as model ids (the Judge runs inside the pipeline only)
    roles: list[str] = Field(
        default_factory=lambda: ["architect", "implementer", "librarian", "tutor"]
    )
    #: what the model id ``auto`` serves
    auto_role: str = "implementer"
    #: other model names (shell-style patterns, lower case) → role; Claude Code's own
    #: names by default, so it works with no model flag, by family (Opus, Sonnet, Haiku),
    #: the Claude 3 names (``claude-3-7-sonnet-latest``, ``claude-3-opus-20240229``) too
    aliases: dict[str, str] = Field(
        default_factory=lambda: {
            "claude-opus*": "architect",
            "claude-sonnet*": "implementer",
            "claude-haiku*": "tutor",
            "claude-3*-opus*": "architect",
            "claude-3*-sonnet*": "implementer",
            "claude-3*-haiku*": "tutor",
        }
    )
    #: a model id ending in this is the user's explicit request to escalate (§3)
    escalate_suffix: str = "+escalate"
    #: seconds between keep-alives while a request waits for an approval
    keepalive_s: float = Field(default=10.0, gt=0, le=120)


#: the largest cap a policy may name, USD: 1e308 was "ok" and overflowed where it was
#: made nano-dollars, a traceback in every command that read the budget
MAX_CAP_USD = 1_000_000
#: the largest price, USD per million tokens (the dearest models cost hundreds)
MAX_PRICE_USD_PER_MTOK = 100_000
#: the most tokens a count in the policy may name (a window, an output cap)
MAX_TOKENS = 100_000_000


class Budget(Strict):
    currency: Literal["USD"] = "USD"
    session_usd: float = Field(ge=0, le=MAX_CAP_USD)
    day_usd: float = Field(ge=0, le=MAX_CAP_USD)
    reservation_ttl_s: float = Field(gt=0, le=86400)
    #: a negative cap was accepted (it blocked every call, with the policy called ok)
    provider_day_usd: dict[str, Annotated[float, Field(ge=0, le=MAX_CAP_USD)]] = Field(
        default_factory=dict
    )
    #: each user's day cap in a shared (team) store, where day_usd and provider_day_usd
    #: are the whole team's; in a machine's own SQLite file every cost is its user's
    user_day_usd: float | None = Field(default=None, ge=0, le=MAX_CAP_USD)


class Approvals(Strict):
    timeout_s: float = Field(gt=0, le=3600)


class Hardware(Strict):
    gpu: str
    vram_gb: float = Field(gt=0)
    primary_runtime: str
    fallback_runtime: str
    ollama: Literal["dev-only", "allowed", "forbidden"]


class LocalServices(Strict):
    must_run_locally: list[str]


class Runtime(Strict):
    kind: RuntimeKind
    base_url: str | None = None
    #: more endpoints serving the same models (two GPU boxes): requests spread across the
    #: healthy ones; ``base_url``, when set, is the first
    base_urls: list[str] = Field(default_factory=list)
    model: str | None = None
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)

    @property
    def urls(self) -> list[str]:
        """Every endpoint of this runtime, ``base_url`` first, without repeats."""
        listed = [self.base_url] if self.base_url else []
        return list(dict.fromkeys(u.rstrip("/") for u in [*listed, *self.base_urls]))


class LocalChain(Strict):
    order: list[str] = Field(min_length=1)


class Provider(Strict):
    protocol: Literal["openai", "anthropic"]
    base_url: str | None = None
    api_key_env: str | None = None


class Model(Strict):
    display: str
    provider: str
    endpoint: EndpointKind
    served_name: str
    context_window: int = Field(ge=0, le=MAX_TOKENS)
    params_b: float | None = Field(default=None, gt=0)
    quant: str | None = None
    kv_bytes_per_token: int | None = Field(default=None, gt=0)
    embedding_dim: int | None = Field(default=None, gt=0)
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    price_in_usd_per_mtok: float = Field(default=0.0, ge=0, le=MAX_PRICE_USD_PER_MTOK)
    price_out_usd_per_mtok: float = Field(default=0.0, ge=0, le=MAX_PRICE_USD_PER_MTOK)
    #: prompt tokens the provider read from its prompt cache (Anthropic's cache reads,
    #: OpenAI's and DeepSeek's cached tokens), USD per million; None: charged at
    #: ``price_in_usd_per_mtok`` (never less than the bill)
    price_cache_read_usd_per_mtok: float | None = Field(
        default=None, ge=0, le=MAX_PRICE_USD_PER_MTOK
    )
    #: prompt tokens written to the provider's prompt cache (Anthropic's 5-minute cache
    #: writes, 1.25 × input), USD per million; None: charged at ``price_in_usd_per_mtok``
    price_cache_write_usd_per_mtok: float | None = Field(
        default=None, ge=0, le=MAX_PRICE_USD_PER_MTOK
    )
    escalation_only_roles: list[str] = Field(default_factory=list)
    speed_variant: str | None = None

    @property
    def escalation_only(self) -> bool:
        return bool(self.escalation_only_roles)


class Role(Strict):
    title: str
    kind: RoleKind
    locality: Locality
    default: str | None = None
    alternatives: list[str] = Field(default_factory=list)
    runtimes: list[str] = Field(default_factory=list)
    fallback: list[str] = Field(default_factory=list)
    local_stand_in: str | None = None
    max_output_tokens: int = Field(default=2048, gt=0, le=MAX_TOKENS)
    max_turns: int | None = Field(default=None, gt=0)
    #: a non-authoritative sidecar (§2): cloud only on its triggers, no local stand-in
    sidecar: bool = False
    prefer_speed: bool = False
    constraints: str = ""


class Trigger(Strict):
    id: str
    role: str
    reason: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")
    signal: str
    op: TriggerOp
    threshold: float | None = None
    target: str | None = None
    seed: str = ""


class RetryRule(Strict):
    max_retries: int = Field(ge=0, le=10)
    backoff_s: float = Field(ge=0, le=600)
    max_backoff_s: float = Field(ge=0, le=3600)
    honour_retry_after: bool
    cooldown_s: float = Field(ge=0, le=86400)


class Consensus(Strict):
    enabled: bool
    critic: bool
    critic_role: str
    pipeline: list[str]
    forbidden: list[str]
    allowed_sidecars: list[str]


class Tier(Strict):
    models: list[str] = Field(min_length=1)
    note: str = ""


class Guardrail(Strict):
    title: str
    group: Literal["governance", "evidence", "privacy", "structured_output"]
    enabled: bool


class HighRiskRule(Strict):
    id: str
    title: str
    paths: list[str] = Field(default_factory=list)
    lines: list[str] = Field(default_factory=list)
    requires_cross_module: bool = False


class HighRisk(Strict):
    cross_module_min_modules: int = Field(ge=2, le=100)
    rules: list[HighRiskRule] = Field(min_length=1)


class Stage0(Strict):
    mmr_lambda: float = Field(ge=0, le=1)
    prefilter: int = Field(ge=1, le=100000)
    top_k: int = Field(ge=1, le=1000)
    code_top_k: int = Field(ge=1, le=1000)
    token_budget: int = Field(ge=256, le=2_000_000)
    max_file_bytes: int = Field(ge=1024)
    chunk_lines: int = Field(ge=5, le=2000)
    chunk_overlap: int = Field(ge=0, le=1000)
    constitution_files: list[str] = Field(default_factory=list)


class Memory(Strict):
    weight_tfidf: float = Field(ge=0, le=1)
    weight_embedding: float = Field(ge=0, le=1)
    weight_dynamic: float = Field(ge=0, le=1)
    recency_half_life_days: float = Field(gt=0, le=3650)


class Embeddings(Strict):
    default: str
    local_fallback: str


class Ace(Strict):
    min_pattern_confidence: float = Field(ge=0, le=1)
    max_harmful_bullets: int = Field(ge=0, le=100)
    interesting_diff_files: int = Field(ge=1)
    interesting_diff_insertions: int = Field(ge=1)
    #: failed loops that make a run an interesting failure (one failed loop is not)
    interesting_failed_loops: int = Field(default=2, ge=1)


class Resolution(Strict):
    id: str
    seed: str
    resolution: str


class Policy(Strict):
    policy: PolicyMeta
    privacy: Privacy
    sandbox: Sandbox = Field(default_factory=Sandbox)
    gateway: Gateway = Field(default_factory=Gateway)
    budget: Budget
    approvals: Approvals
    hardware: Hardware
    local_services: LocalServices
    runtimes: dict[str, Runtime]
    local_chain: LocalChain
    providers: dict[str, Provider]
    models: dict[str, Model]
    aliases: dict[str, str] = Field(default_factory=dict)
    roles: dict[str, Role]
    triggers: list[Trigger]
    retries: dict[RetryKind, RetryRule]
    consensus: Consensus
    tiers: dict[str, Tier]
    guardrails: dict[str, Guardrail]
    high_risk: HighRisk
    stage0: Stage0
    memory: Memory
    embeddings: Embeddings
    ace: Ace
    grounding: Grounding = Field(default_factory=Grounding)
    generation: Generation = Field(default_factory=Generation)
    tool_use: ToolUse = Field(default_factory=ToolUse)
    resolutions: list[Resolution] = Field(default_factory=list)

    @property
    def version(self) -> str:
        return self.policy.version

    def resolve(self, name: str) -> str:
        """A catalog id for ``name``, following aliases (one level)."""
        return self.aliases.get(name, name)

    def model(self, name: str) -> Model:
        return self.models[self.resolve(name)]

    def chain(self, role: str) -> list[str]:
        """The role's escalation chain as catalog ids.

        For a cloud-by-default role (Judge, Tier2) the default itself is the first step.
        """
        spec = self.roles[role]
        steps = [self.resolve(m) for m in spec.fallback]
        if spec.locality == "cloud" and spec.default:
            default = self.resolve(spec.default)
            steps = [default, *(m for m in steps if m != default)]
        return steps

    def triggers_for(self, role: str) -> list[Trigger]:
        """``role``'s triggers in file order: its own, and each ``*`` trigger on a signal
        it has no trigger of its own for (its own takes that one's place)."""
        own = {t.signal for t in self.triggers if t.role == role}
        return [
            t for t in self.triggers if t.role == role or (t.role == "*" and t.signal not in own)
        ]

    def is_cloud(self, model_id: str) -> bool:
        return self.model(model_id).provider != "local"

    def named_local_hosts(self) -> frozenset[HostPort]:
        """The non-loopback hosts local_only still lets through (checked by address)."""
        urls = [u for rt in self.runtimes.values() for u in rt.urls]
        return named_local_hosts(urls, self.privacy.local_hosts)
