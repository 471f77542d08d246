"""The VRAM fit plan over the shipped policy's local models."""

from __future__ import annotations

import math

import pytest

from app.backends.vram import (
    BYTES_PER_PARAM,
    MIN_SUGGESTED_CONTEXT,
    RUNTIME_OVERHEAD_GB,
    bytes_per_param,
    fit_plan,
)
from app.policy import Policy

GiB = 2**30


def test_every_local_llm_role_model_is_planned_once(policy: Policy) -> None:
    plan = fit_plan(policy)
    ids = [m.model for m in plan.models]
    assert len(ids) == len(set(ids))
    assert ids == ["qwen2.5-coder-32b", "qwen3-14b", "llama-3.1-8b", "qwen2.5-coder-7b"]
    by_id = {m.model: m for m in plan.models}
    # shared models list every role that uses them, stand-ins after the local roles
    assert by_id["llama-3.1-8b"].roles == ["librarian", "ace", "tier2"]
    assert by_id["qwen3-14b"].roles == ["architect", "judge"]
    assert "smollm2-135m" not in ids  # the embedded model runs on the CPU


def test_numbers_are_sane(policy: Policy) -> None:
    plan = fit_plan(policy)
    coder = plan.for_role("implementer")
    assert coder is not None
    # 32.8 B params × 0.55 B (AWQ int4 + scales) ≈ 16.8 GiB; 256 KiB/token × 32k = 8 GiB
    assert coder.weights_gb == pytest.approx(32.8e9 * 0.55 / GiB, abs=0.01)
    assert coder.kv_gb == pytest.approx(8.0, abs=0.01)
    assert coder.need_gb == pytest.approx(coder.weights_gb + 8.0 + RUNTIME_OVERHEAD_GB, abs=0.02)
    for m in plan.models:
        assert 0 < m.weights_gb < m.need_gb < plan.gpu_gb
        assert m.max_model_len == m.context == 32768
        assert m.gpu_memory_utilization is not None
        assert m.gpu_memory_utilization == pytest.approx(
            m.need_gb / plan.gpu_gb, abs=0.011
        )  # need / total, rounded up to 0.01
        assert m.gpu_memory_utilization * plan.gpu_gb >= m.need_gb - 0.01


def test_the_32b_coder_fits_alone_and_keeps_the_gpu(policy: Policy) -> None:
    plan = fit_plan(policy)
    assert plan.gpu_gb == 32
    assert plan.utilization_cap == 0.9
    assert plan.resident == ["qwen2.5-coder-32b"]
    assert plan.swap == ["qwen3-14b", "llama-3.1-8b", "qwen2.5-coder-7b"]
    coder = plan.for_model("qwen2.5-coder-32b")
    assert coder is not None and coder.placement == "resident"
    assert coder.gpu_memory_utilization == 0.81
    assert not coder.reduced_context


def test_fractions_of_co_resident_models_stay_within_the_cap(policy: Policy) -> None:
    for gpu in (8, 16, 24, 32, 48, 80, 141):
        plan = fit_plan(policy, gpu_gb=gpu)
        resident = [m for m in plan.models if m.placement == "resident"]
        total = sum(m.gpu_memory_utilization or 0 for m in resident)
        assert total == pytest.approx(plan.resident_utilization)
        assert total <= 0.90 + 1e-9, gpu
        for m in plan.models:
            if m.gpu_memory_utilization is not None:
                assert m.gpu_memory_utilization <= 0.90


def test_the_plan_is_deterministic(policy: Policy) -> None:
    first = fit_plan(policy).model_dump_json()
    assert all(fit_plan(policy).model_dump_json() == first for _ in range(5))


def test_a_small_gpu_forces_swaps(policy: Policy) -> None:
    plan = fit_plan(policy, gpu_gb=8)
    assert plan.resident == []
    assert all(m.placement in ("swap", "too_large") for m in plan.models)
    coder = plan.for_model("qwen2.5-coder-32b")
    assert coder is not None and coder.placement == "too_large"
    assert coder.gpu_memory_utilization is None
    assert "does not fit on 8 GiB even alone" in coder.note

    mid = fit_plan(policy, gpu_gb=16)
    assert mid.resident == ["qwen3-14b"]
    assert mid.swap == ["llama-3.1-8b", "qwen2.5-coder-7b"]


def test_a_model_that_fits_only_with_a_smaller_window_gets_one(policy: Policy) -> None:
    plan = fit_plan(policy, gpu_gb=24)
    coder = plan.for_model("qwen2.5-coder-32b")
    assert coder is not None
    assert coder.reduced_context and coder.placement == "resident"
    assert MIN_SUGGESTED_CONTEXT <= coder.max_model_len < 32768
    assert coder.max_model_len % 1024 == 0
    assert coder.gpu_memory_utilization is not None and coder.gpu_memory_utilization <= 0.90
    assert f"--max-model-len {coder.max_model_len}" in coder.note
    # one more 1024-token step would not fit
    bigger = coder.need_gb + 1024 * 262144 / GiB
    assert bigger / 24 > 0.90


def test_context_override_and_coresident_hint(policy: Policy) -> None:
    plan = fit_plan(policy, context_override={"qwen2.5-coder-32b": 8192})
    coder = plan.for_model("qwen2.5-coder-32b")
    assert coder is not None and coder.context == 8192 and coder.kv_gb == pytest.approx(2.0)
    assert plan.resident == ["qwen2.5-coder-32b"]
    # 8.96 GiB are left: the 14B needs 8.6 GiB before any KV cache (no useful window),
    # the 8B could join with 4k tokens and the 7B tutor with more; the plan says so
    tutor = plan.for_model("qwen2.5-coder-7b")
    assert tutor is not None and tutor.placement == "swap"
    hint = tutor.coresident_max_model_len
    assert hint is not None and MIN_SUGGESTED_CONTEXT <= hint < 32768
    assert f"could stay co-resident with --max-model-len {hint}" in tutor.note
    big = plan.for_model("qwen3-14b")
    assert big is not None and big.coresident_max_model_len is None
    eight = plan.for_model("llama-3.1-8b")
    assert eight is not None and eight.coresident_max_model_len == MIN_SUGGESTED_CONTEXT

    # taking the hint makes it so
    both = fit_plan(policy, context_override={"qwen2.5-coder-32b": 8192, "qwen2.5-coder-7b": hint})
    assert both.resident == ["qwen2.5-coder-32b", "qwen2.5-coder-7b"]
    assert both.resident_utilization <= 0.90


def test_bytes_per_param_table() -> None:
    assert bytes_per_param("fp16") == bytes_per_param("BF16") == 2.0
    assert bytes_per_param("fp8") == 1.0
    assert bytes_per_param("awq-int4") == 0.55
    assert bytes_per_param("Q4_1") == 0.625
    assert bytes_per_param("Q4_K_M") == 0.6
    assert bytes_per_param("fp32") == 4.0
    assert bytes_per_param("mystery") is None
    assert all(0 < v <= 4 for v in BYTES_PER_PARAM.values())


def test_unknown_quant_is_reported_not_guessed(policy: Policy) -> None:
    models = dict(policy.models)
    models["qwen2.5-coder-7b"] = models["qwen2.5-coder-7b"].model_copy(update={"quant": "exl2"})
    odd = policy.model_copy(update={"models": models})
    fit = fit_plan(odd).for_model("qwen2.5-coder-7b")
    assert fit is not None and fit.placement == "unknown"
    assert "known quant" in fit.note and fit.gpu_memory_utilization is None


def test_a_hint_is_measured_against_the_final_resident_set(policy: Policy) -> None:
    """At 40 GiB the 32B and the 7B fill the 0.90 cap; the 14B and the 8B, met before the
    7B joined, were told they could stay co-resident with a smaller window. Every hinted
    model must fit beside the set as it ends, at its hinted window."""
    for gb in (16, 24, 32, 40, 48, 80):
        plan = fit_plan(policy, gpu_gb=gb)
        used = round(plan.resident_utilization * 100)
        for fit in plan.models:
            if fit.coresident_max_model_len is None:
                continue
            assert fit.placement == "swap"
            alone = plan.for_model(fit.model)
            assert alone is not None
            kv = fit.kv_gb * fit.coresident_max_model_len / fit.context
            frac = math.ceil(round((fit.need_gb - fit.kv_gb + kv) / gb * 100, 6))
            assert used + frac <= round(plan.utilization_cap * 100), (gb, fit.model)
    forty = fit_plan(policy, gpu_gb=40)
    assert forty.resident_utilization == 0.90
    assert all(f.coresident_max_model_len is None for f in forty.models)
