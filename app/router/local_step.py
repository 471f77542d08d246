"""Serving a request on a local runtime: the route (or runtime-fallback) line, the call,
the zero-cost ledger record and the call line, in that order (GR-005)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from app.router.routed import (
    RUNTIME_LABEL,
    DeltaHook,
    RoutedResult,
    Write,
    call_values,
    cut_note,
    routed,
    tokens_text,
)
from app.router.types import Decision, Skip

if TYPE_CHECKING:
    from app.backends.base import ChatRequest
    from app.router.service import Router


def why_local(router: Router, skip: Skip, failed: dict[str, str]) -> str:
    """How a local runtime step is described in the runtime-fallback line."""
    if skip.reason == "not_served":
        return "serves another model"
    if skip.reason != "unhealthy":
        return skip.reason.replace("_", " ")
    key = f"runtime:{skip.runtime}"
    if key in failed:
        return failed[key]
    down = router.health.reason(key)
    return f"down ({down.split(':', 1)[0]})" if down else "unreachable"


log = logging.getLogger(__name__)

#: the part of the prompt's count kept free besides it: this count is not the runtime's
#: tokenizer's, and a runtime refuses a request whose prompt and output cap pass its window
WINDOW_SLACK = (16, 10)  # tokens, and a tenth of the prompt's


def within_window(request: ChatRequest, window: int, tokens_in: int) -> ChatRequest:
    """``request`` with its output cap lowered to what is left of a local runtime's
    ``window`` after the prompt (and a little more): a coding agent asks for 32,000 or
    128,000 tokens (Claude Code), vLLM refuses a prompt and a cap that pass its window,
    and the refusal read as "prompt too long" on every model (an audit, with Claude
    Code on a 32k window). Unchanged when the cap fits, or the prompt was not counted."""
    if tokens_in <= 0:
        return request
    fixed, share = WINDOW_SLACK
    room = window - tokens_in - fixed - tokens_in // share
    if room < 1 or request.max_tokens <= room:
        return request  # (a prompt that leaves no room: the runtime says so, as before)
    return request.model_copy(update={"max_tokens": room})


async def serve_local(
    router: Router,
    d: Decision,
    request: ChatRequest,
    run: str | None,
    on_delta: DeltaHook | None,
    write: Write,
    failed: dict[str, str],
    *,
    inputs: Mapping[str, Any] | None = None,
) -> RoutedResult:
    assert d.target is not None and d.runtime is not None and d.local is not None
    label = RUNTIME_LABEL.get(d.runtime, d.runtime)
    values: dict[str, Any] = {"runtime": d.runtime, "window": d.local.context_window}
    asked = request.max_tokens
    request = within_window(request, d.local.context_window, d.est_tokens_in)
    if request.max_tokens != asked:
        values["max_tokens"] = {"asked": asked, "sent": request.max_tokens}
    if d.notes:
        values["notes"] = d.notes
    if inputs is not None:
        values["inputs"] = inputs  # what decide() read (app.router.recorded)
    if d.local.substituted_for:
        src_model, _, src_rt = d.local.substituted_for.partition(" on ")
        gone = [s for s in d.skipped if s.runtime != "cloud"]
        steps = []
        for skip in gone:
            why = why_local(router, skip, failed)
            where = RUNTIME_LABEL.get(skip.runtime, skip.runtime)
            steps.append(
                f"{where} {why}" if skip.model == src_model else f"{skip.model} on {where} {why}"
            )
        values["skipped"] = [s.model_dump() for s in gone]
        await write(
            "runtime_fallback",
            from_=f"{src_model}@{src_rt}",
            to=f"{d.target}@{d.runtime}",
            reason_codes=["GR005_RUNTIME_FALLBACK", *d.reason_codes],
            values=values,
            detail=f"{src_model} on {', '.join(steps)} → {d.target} {label}",
        )
    else:
        await write(
            "route",
            to=f"{d.target}@{d.runtime}",
            reason_codes=d.reason_codes,
            values=values,
            detail=f"{d.role} → {d.target} ({label})",
        )
    try:
        result = await router.call(d, request, write, on_delta)
    except asyncio.CancelledError:
        # the caller went away mid-call (Ctrl-C, a client gone, a run stopped): the route
        # line stood with nothing after it, and the ledger's failed calls missed it
        try:
            await asyncio.shield(_cancelled(router, d, run, write))
        except Exception:  # a store already closing: the cancel goes on, said in the log
            log.warning("the cancelled call of %s could not be recorded", d.target, exc_info=True)
        raise
    usage = result.usage
    await _record(
        router,
        d,
        run,
        usage.tokens_in,
        usage.tokens_out,
        result.latency_ms,
        "ok",
        tokens_cached=usage.tokens_cached,
    )
    await write(
        "call",
        to=f"{d.target}@{d.runtime}",
        values=call_values(result, 0.0),
        detail=tokens_text(
            usage.tokens_in, usage.tokens_out, usage.tokens_cached, usage.tokens_cache_write
        )
        + ", $0"
        + cut_note(result),
    )
    return routed(d, result, 0.0, escalated=False)


async def _cancelled(router: Router, d: Decision, run: str | None, write: Write) -> None:
    """A local call cancelled mid-way: recorded (free, its prompt's estimate), and said."""
    assert d.target is not None and d.runtime is not None
    await _record(router, d, run, d.est_tokens_in, 0, 0.0, "cancelled")
    await write(
        "call",
        to=f"{d.target}@{d.runtime}",
        reason_codes=["CALL_CANCELLED"],
        values={"outcome": "cancelled", "cost_usd": 0.0},
        detail=f"{d.target}: the call was cancelled mid-way, $0",
    )


async def _record(
    router: Router,
    d: Decision,
    run: str | None,
    tokens_in: int,
    tokens_out: int,
    latency_ms: float,
    outcome: str,
    *,
    tokens_cached: int = 0,
) -> None:
    """A local call's zero-cost ledger record (``tokens_cached``: of ``tokens_in``, read
    from the server's prefix cache, as vLLM can report it)."""
    assert d.target is not None
    await router.ledger.record_call(
        session=router.session,
        run=run,
        role=d.role,
        model=d.target,
        provider="local",
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        latency_ms=latency_ms,
        cost_usd=0.0,
        outcome=outcome,
        tokens_cached=tokens_cached,
    )
