"""The VRAM fit plan: which local models share the GPU, and what each vLLM may take.

Pure arithmetic over the policy's catalog (``params_b``, ``quant``,
``kv_bytes_per_token``, ``context_window``) and ``hardware.vram_gb``. Sizes are GiB
(2**30 bytes), the unit ``nvidia-smi`` and vLLM report, so "32 GB" on the card is 32 here.

need = weights + KV cache + runtime overhead, where

* weights  = params × bytes per parameter of the quantisation (table below);
* KV cache = ``kv_bytes_per_token`` × context length: the room for one full-length
  sequence, the least vLLM accepts at start-up (it refuses a ``--max-model-len`` whose KV
  cache does not fit), and what the catalog's per-token figure is computed for (fp16 KV);
* overhead = a flat 1.0 GiB per instance for CUDA graphs, activations, the sampler and
  the CUDA context; measured overheads sit between 0.6 and 1.5 GiB for 7–32B models.

Placement is greedy in a fixed order of role importance (implementer, architect,
librarian, ace, tutor, then any other role alphabetically, then the cloud roles' local
stand-ins): a model joins the co-resident set if the set's total fraction of the GPU
stays within ``runtimes.vllm.gpu_memory_utilization``; otherwise it is swapped in on
demand. Each vLLM instance gets ``--gpu-memory-utilization`` = its need / total VRAM,
rounded up to 0.01. A model that does not fit even alone at its full window is planned
with the largest window that fits (a multiple of 1024), and any swapped model that could
join the resident set with a smaller window says so.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.policy.schema import Policy

__all__ = [
    "BYTES_PER_PARAM",
    "MIN_SUGGESTED_CONTEXT",
    "ROLE_ORDER",
    "RUNTIME_OVERHEAD_GB",
    "FitPlan",
    "ModelFit",
    "bytes_per_param",
    "fit_plan",
]

GiB = float(2**30)

#: bytes per parameter for each quantisation, including the per-group scales.
BYTES_PER_PARAM: dict[str, float] = {
    "fp32": 4.0,
    "fp16": 2.0,
    "bf16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "w8a8": 1.0,
    # 4-bit weights are 0.5 B; AWQ/GPTQ add a scale and zero per group of 128 (~0.05 B)
    "int4": 0.55,
    "awq-int4": 0.55,
    "gptq-int4": 0.55,
    "awq": 0.55,
    "gptq": 0.55,
    # GGUF block formats: bits per weight / 8, scales included (llama.cpp's own figures)
    "q8_0": 1.0625,  # 8.5 bpw
    "q6_k": 0.8203,  # 6.5625 bpw
    "q5_k_m": 0.7125,  # ~5.7 bpw
    "q5_1": 0.75,  # 6.0 bpw
    "q5_0": 0.6875,  # 5.5 bpw
    "q4_k_m": 0.6,  # ~4.8 bpw
    "q4_1": 0.625,  # 5.0 bpw: a 32-weight block = 16 B of nibbles + fp16 scale + fp16 min
    "q4_0": 0.5625,  # 4.5 bpw: 16 B of nibbles + one fp16 scale per 32 weights
}

#: per-instance runtime overhead (CUDA graphs, activations, CUDA context), GiB
RUNTIME_OVERHEAD_GB = 1.0
#: don't suggest running a model with a window smaller than this; below it a coding
#: model cannot hold a plan plus the files it works on
MIN_SUGGESTED_CONTEXT = 4096
_CONTEXT_STEP = 1024

#: role importance: who keeps the GPU when not everything fits
ROLE_ORDER = ("implementer", "architect", "librarian", "ace", "tutor")

Placement = Literal["resident", "swap", "too_large", "unknown"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelFit(_Frozen):
    model: str
    roles: list[str]
    served_name: str
    params_b: float | None
    quant: str | None
    bytes_per_param: float | None
    #: the window the model is planned with (the catalog's, an override, or reduced)
    context: int
    #: the catalog's (or overridden) window before any reduction
    requested_context: int
    weights_gb: float
    kv_gb: float
    overhead_gb: float
    need_gb: float
    #: ``--gpu-memory-utilization`` for this model's vLLM instance (None: cannot run)
    gpu_memory_utilization: float | None
    placement: Placement
    #: ``--max-model-len`` to start vLLM with (== context)
    max_model_len: int
    #: set when the model fits only with a smaller window than requested
    reduced_context: bool = False
    #: for a swapped model: the window with which it could stay co-resident instead
    coresident_max_model_len: int | None = None
    note: str = ""


class FitPlan(_Frozen):
    gpu_gb: float
    #: ``runtimes.vllm.gpu_memory_utilization``: the share of the GPU vLLM may take in all
    utilization_cap: float
    budget_gb: float
    models: list[ModelFit]
    resident: list[str]
    swap: list[str]
    resident_gb: float
    resident_utilization: float = Field(ge=0)

    def for_model(self, model_id: str) -> ModelFit | None:
        return next((m for m in self.models if m.model == model_id), None)

    def for_role(self, role: str) -> ModelFit | None:
        return next((m for m in self.models if role in m.roles), None)


def bytes_per_param(quant: str | None) -> float | None:
    if quant is None:
        return None
    return BYTES_PER_PARAM.get(quant.strip().lower())


def _ceil_hundredths(fraction: float) -> int:
    # the small epsilon keeps 0.30000000000000004 from becoming 0.31
    return math.ceil(fraction * 100 - 1e-9)


def _round_gb(x: float) -> float:
    return round(x, 2)


def _role_order(policy: Policy) -> list[tuple[str, str]]:
    """(role, catalog model) pairs in placement order, local LLM roles first."""
    local = {
        rid: r
        for rid, r in policy.roles.items()
        if r.kind == "llm" and r.locality == "local" and r.default
    }
    ranked = [r for r in ROLE_ORDER if r in local]
    ranked += sorted(r for r in local if r not in ROLE_ORDER)
    pairs = [(rid, policy.resolve(local[rid].default or "")) for rid in ranked]
    # the cloud roles' local stand-ins run on the same GPU when no trigger fires
    for rid in sorted(policy.roles):
        stand_in = policy.roles[rid].local_stand_in
        if stand_in:
            pairs.append((rid, policy.resolve(stand_in)))
    return pairs


def _fit_context(
    hundredths: int, fixed: float, kv_per_token: int, window: int, total: float
) -> int:
    """The largest window (a multiple of 1024, at most ``window``) for which the model's
    rounded-up GPU fraction stays within ``hundredths``; 0 when none does."""
    room = hundredths / 100 * total - fixed
    if room <= 0:
        return 0
    context = min(window, int(room // kv_per_token) // _CONTEXT_STEP * _CONTEXT_STEP)
    while context > 0 and _ceil_hundredths((fixed + kv_per_token * context) / total) > hundredths:
        context -= _CONTEXT_STEP
    return max(context, 0)


def fit_plan(
    policy: Policy,
    gpu_gb: float | None = None,
    context_override: dict[str, int] | None = None,
) -> FitPlan:
    """Plan which local LLM role models share the GPU. Deterministic for the same input.

    ``context_override`` maps a catalog model id to the window to plan it with.
    """
    total_gb = float(gpu_gb if gpu_gb is not None else policy.hardware.vram_gb)
    if total_gb <= 0:
        raise ValueError("gpu_gb must be positive")
    vllm = policy.runtimes.get("vllm")
    cap = vllm.gpu_memory_utilization if vllm and vllm.gpu_memory_utilization else 0.90
    # round the cap down: the rounded-up fractions of the instances must sum within it
    cap_hundredths = math.floor(cap * 100 + 1e-9)
    total = total_gb * GiB
    budget = total * cap_hundredths / 100
    overrides = context_override or {}

    roles_of: dict[str, list[str]] = {}
    for role, model_id in _role_order(policy):
        if model_id in policy.models and policy.models[model_id].provider == "local":
            roles_of.setdefault(model_id, [])
            if role not in roles_of[model_id]:
                roles_of[model_id].append(role)

    fits: list[ModelFit] = []
    #: swapped models (index in fits, fixed bytes, KV bytes a token, window), hinted below
    hints: list[tuple[int, float, int, int]] = []
    used_hundredths = 0
    resident: list[str] = []
    swap: list[str] = []
    resident_bytes = 0.0
    for model_id, roles in roles_of.items():
        m = policy.models[model_id]
        requested = overrides.get(model_id, m.context_window)
        bpp = bytes_per_param(m.quant)
        base = {
            "model": model_id,
            "roles": roles,
            "served_name": m.served_name,
            "params_b": m.params_b,
            "quant": m.quant,
            "bytes_per_param": bpp,
            "requested_context": requested,
            "overhead_gb": RUNTIME_OVERHEAD_GB,
        }
        if m.params_b is None or bpp is None or m.kv_bytes_per_token is None:
            missing = [
                name
                for name, v in (
                    ("params_b", m.params_b),
                    ("known quant", bpp),
                    ("kv_bytes_per_token", m.kv_bytes_per_token),
                )
                if v is None
            ]
            fits.append(
                ModelFit(
                    **base,
                    context=requested,
                    weights_gb=0.0,
                    kv_gb=0.0,
                    need_gb=0.0,
                    gpu_memory_utilization=None,
                    placement="unknown",
                    max_model_len=requested,
                    note=f"cannot size: no {', '.join(missing)} in the catalog (quant {m.quant!r})",
                )
            )
            continue
        kv_tok = m.kv_bytes_per_token
        weights = m.params_b * 1e9 * bpp
        overhead = RUNTIME_OVERHEAD_GB * GiB
        fixed = weights + overhead
        context = requested
        reduced = False
        note = ""
        need = fixed + kv_tok * context
        if _ceil_hundredths(need / total) > cap_hundredths:
            context = _fit_context(cap_hundredths, fixed, kv_tok, requested, total)
            if context < MIN_SUGGESTED_CONTEXT:
                fits.append(
                    ModelFit(
                        **base,
                        context=requested,
                        weights_gb=_round_gb(weights / GiB),
                        kv_gb=_round_gb(kv_tok * requested / GiB),
                        need_gb=_round_gb(need / GiB),
                        gpu_memory_utilization=None,
                        placement="too_large",
                        max_model_len=requested,
                        note=(
                            f"does not fit on {total_gb:g} GiB even alone: weights and "
                            f"overhead take {fixed / GiB:.1f} GiB of the {budget / GiB:.1f} "
                            f"GiB vLLM may use"
                        ),
                    )
                )
                continue
            reduced = True
            need = fixed + kv_tok * context
            note = f"fits only with --max-model-len {context} (of {requested})"
        frac = _ceil_hundredths(need / total)
        if used_hundredths + frac <= cap_hundredths:
            placement: Placement = "resident"
            used_hundredths += frac
            resident.append(model_id)
            resident_bytes += need
        else:
            placement = "swap"
            swap.append(model_id)
            hints.append((len(fits), fixed, kv_tok, context))
        fits.append(
            ModelFit(
                **base,
                context=context,
                weights_gb=_round_gb(weights / GiB),
                kv_gb=_round_gb(kv_tok * context / GiB),
                need_gb=_round_gb(need / GiB),
                gpu_memory_utilization=frac / 100,
                placement=placement,
                max_model_len=context,
                reduced_context=reduced,
                note=note,
            )
        )
    # Would a smaller window let a swapped model stay? (A hint; the plan keeps full
    # windows.) Measured against the resident set as it ends: measured as the loop went,
    # a model was told it could join a set that later models then filled.
    for i, fixed, kv_tok, context in hints:
        shorter = _fit_context(cap_hundredths - used_hundredths, fixed, kv_tok, context, total)
        if shorter >= MIN_SUGGESTED_CONTEXT:
            hint = f"could stay co-resident with --max-model-len {shorter}"
            note = f"{fits[i].note}; {hint}" if fits[i].note else hint
            fits[i] = fits[i].model_copy(update={"coresident_max_model_len": shorter, "note": note})
    return FitPlan(
        gpu_gb=total_gb,
        utilization_cap=cap_hundredths / 100,
        budget_gb=_round_gb(budget / GiB),
        models=fits,
        resident=resident,
        swap=swap,
        resident_gb=_round_gb(resident_bytes / GiB),
        resident_utilization=used_hundredths / 100,
    )
