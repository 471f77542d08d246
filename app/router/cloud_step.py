"""Serving a request in the cloud: the escalation line, the human's approval, the budget
reservation, the call, the settlement and the call line, each before it takes effect
(GR-005, GR-011, GR-013). ``None`` from a step means: decide again (denied, unavailable,
over budget, failed); what happened is already in the audit.

Every cloud call sends the request masked (:func:`app.router.calling.mask_request`):
a repository secret quoted into a brief, a test log or a diff never reaches a provider.
How many secrets were masked is the ``secrets_masked`` value of the ``call`` line (and
of the ``skip`` line when the call failed: the masked request did leave); the secrets
themselves are never written. The provenance's ``input_hash`` stays the hash of the
request as the caller built it, so the escalation line and the call line agree.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from app.backends.base import BackendError
from app.dollars import dollars
from app.errors import BudgetExceeded
from app.remembered import digest
from app.router.approvals import TIMEOUT, ApprovalRequest
from app.router.calling import mask_request
from app.router.cost import cost_usd
from app.router.ledger.errors import ReservationClosed
from app.router.retry import rule_for
from app.router.routed import (
    OVER_BUDGET,
    UNAVAILABLE,
    DeltaHook,
    RoutedResult,
    RouteFailed,
    StreamBroken,
    Write,
    call_values,
    input_hash,
    routed,
)
from app.router.types import Decision

if TYPE_CHECKING:
    from app.backends.base import ChatRequest, Usage
    from app.policy.schema import Model
    from app.router.service import Router


def provenance_of(
    d: Decision, request: ChatRequest, digest_of: Callable[[str], bytes] = digest
) -> dict[str, Any]:
    """GR-013's minimal provenance of an escalation (no content, a hash of it)."""
    return {
        "trigger": [r.trigger for r in d.reasons],
        "values": {r.signal: r.value for r in d.reasons},
        "policy_version": d.policy_version,
        "input_hash": input_hash(request, digest_of),
        "model": d.target,
        "est_cost_usd": round(d.est_cost_usd, 6),
    }


async def escalate(
    router: Router,
    d: Decision,
    request: ChatRequest,
    run: str | None,
    on_delta: DeltaHook | None,
    write: Write,
    denied: set[str],
    failed: dict[str, str],
    *,
    inputs: Mapping[str, Any] | None = None,
    digest_of: Callable[[str], bytes] = digest,
) -> RoutedResult | None:
    """Announce ``d``, ask for approval when it needs one, then serve it.

    ``inputs``: what decide() read (app.router.recorded); None for a repair's repeat.
    ``digest_of``: the request's :class:`~app.remembered.Digests` (its count, its hash
    and its masking digest the same texts).
    """
    assert d.target is not None and d.provider is not None
    # a run stopped meanwhile (a local step failed after the stop) announces nothing and
    # asks nobody: before the escalation line, which would stand with no decision after it
    router.gate(run)
    values = {r.signal: r.value for r in d.reasons}
    origin = d.local.model if d.local else None
    recorded = {"inputs": inputs} if inputs is not None else {}
    provenance = provenance_of(d, request, digest_of)  # the call line repeats it
    await write(
        "escalation",
        from_=origin,
        to=d.target,
        reason_codes=d.reason_codes,
        values={
            **values,
            "chain_step": d.chain_step,
            "est_cost_usd": d.est_cost_usd,
            **recorded,
        },
        provenance=provenance,
        detail=f"{', '.join(r.text for r in d.reasons)} → {d.target}",
    )
    approver = "session-approval"
    if d.needs_approval:
        missing = router.backends.unavailable().get(d.target)
        if missing is not None:
            # Nobody is asked to approve a call that cannot be made (no key): the skip is
            # audited and the chain moves on (a prompt here would be a wasted keypress,
            # and in an editor a dialog for nothing).
            failed[d.target] = f"{UNAVAILABLE}: {missing.removeprefix(UNAVAILABLE + ': ')}"
            await write(
                "skip",
                to=d.target,
                reason_codes=["SKIP_UNAVAILABLE"],
                values={"reason": "unavailable", "detail": missing},
                detail=f"{d.target}: {missing}",
            )
            return None
        left = min(await router.ledger.left_usd(router.session, d.provider), 1e12)
        if left < d.est_cost_usd:
            # Spent by another request since the decision: nobody is asked to approve a
            # call the reservation would then refuse (the human said yes to nothing).
            why = f"estimated {dollars(d.est_cost_usd)} > {dollars(left)} left"
            await _budget_stop(
                d,
                write,
                failed,
                why,
                detail=f"{d.target}: {why} (before asking for approval)",
                left_usd=round(left, 6),
            )
            return None
        decision = await router.approvals.request(
            ApprovalRequest(
                session=router.session,
                run=run,
                role=d.role,
                model=d.target,
                provider=d.provider,
                reasons=[r.model_dump() for r in d.reasons],
                values=values,
                est_cost_usd=d.est_cost_usd,
                budget_left_usd=left,
                origin=router.run_origins.get(run, "") if run is not None else "",
            )
        )
        if not decision.allowed:
            denied.add(d.target)
            if decision.decision == "deny_all" or decision.decided_by == TIMEOUT:
                # the rest of the chain is not asked again: after "deny all", or when
                # nobody answered (a timeout would otherwise wait once per cloud step)
                denied.update(d.chain)
            return None
        approver = decision.decided_by
    return await serve_cloud(
        router,
        d,
        request,
        run,
        on_delta,
        write,
        failed,
        approver,
        provenance=provenance,
        digest_of=digest_of,
    )


async def serve_cloud(
    router: Router,
    d: Decision,
    request: ChatRequest,
    run: str | None,
    on_delta: DeltaHook | None,
    write: Write,
    failed: dict[str, str],
    approver: str,
    *,
    provenance: Mapping[str, Any] | None = None,
    digest_of: Callable[[str], bytes] = digest,
) -> RoutedResult | None:
    """An approved cloud step: reachable? reserve, call, settle (or release), audit.

    ``provenance``: the escalation line's (:func:`provenance_of`), when the caller has it.
    """
    assert d.target is not None and d.provider is not None
    missing = router.backends.unavailable().get(d.target)
    if missing is not None:
        failed[d.target] = f"{UNAVAILABLE}: {missing.removeprefix(UNAVAILABLE + ': ')}"
        await write(
            "skip",
            to=d.target,
            reason_codes=["SKIP_UNAVAILABLE"],
            values={"reason": "unavailable", "detail": missing, "approver": approver},
            detail=f"{d.target}: {missing}",
        )
        return None
    try:
        reservation = await router.ledger.reserve(
            session=router.session,
            provider=d.provider,
            role=d.role,
            model=d.target,
            amount_usd=d.est_cost_usd,
            run=run,
        )
    except BudgetExceeded as exc:
        await _budget_stop(d, write, failed, str(exc), detail=str(exc))
        return None
    outgoing, masked = mask_request(request, digest_of)
    router.in_flight.add(reservation.id)  # renewed while the call is in flight
    cut: list[Usage] = []  # the tries cut short after their reply began: billed
    # a try after a billed one is reserved for first, as the first was: one reservation
    # covers one try, and retries after cuts crossed the caps (a review)
    more: list[str] = []

    async def reserve_again() -> bool:
        try:
            extra = await router.ledger.reserve(
                session=router.session,
                provider=d.provider or "",
                role=d.role,
                model=d.target or "",
                amount_usd=d.est_cost_usd,
                run=run,
            )
        except BudgetExceeded as exc:
            await write(
                "budget_stop",
                to=d.target,
                reason_codes=["GR011_BUDGET_CAP"],
                values={"est_cost_usd": d.est_cost_usd, "retry_after_cut": True},
                detail=f"{d.target}: no retry after a try cut short: {exc}",
            )
            return False
        more.append(extra.id)
        router.in_flight.add(extra.id)
        return True

    model = router.policy.model(d.target)
    try:
        result = await router.call(d, outgoing, write, on_delta, cut, reserve_again)
    except asyncio.CancelledError:
        # The caller went away mid-call (a client disconnected, a run was stopped): the
        # provider may bill what it generated, so the reservation is settled at its full
        # estimate (never crossing a cap by guessing low), and the audit says so; tries
        # cut short before it besides.
        await asyncio.shield(
            _cancelled(router, reservation.id, d, write, before=_cut_cost(model, cut, d)[0])
        )
        raise
    except StreamBroken as broken:
        # Part of the reply is with the reader: it is billed, and no retry or other
        # model may continue it. Settled at the estimate, as a cancelled call is.
        await _cancelled(
            router, reservation.id, d, write, broken=broken, before=_cut_cost(model, cut, d)[0]
        )
        raise RouteFailed(str(broken)) from None
    except BackendError as exc:
        cut_usd, cut_in, cut_out = _cut_cost(model, cut, d)
        await router.ledger.release(
            reservation.id, actual_usd=cut_usd, tokens_in=cut_in, tokens_out=cut_out
        )
        rule = rule_for(router.policy, exc.kind)
        if rule is not None and rule.cooldown_s > 0 and exc.kind != "context_length":
            router.health.mark_down(d.target, rule.cooldown_s, str(exc))
        failed[d.target] = f"{exc.kind}: {exc}"
        await write(
            "skip",
            to=d.target,
            reason_codes=["SKIP_FAILED", f"ERR_{exc.kind.upper()}"],
            values={
                "error": exc.kind,
                "status": exc.status,
                "secrets_masked": masked,
                **_cut_values(cut, cut_usd),
            },
            detail=f"{d.target} failed ({exc}); moving down the chain"
            + (f" ({len(cut)} tries cut short, billed ~{dollars(cut_usd)})" if cut else ""),
        )
        return None
    except Exception as exc:
        # Not a backend's failure but a fault on the way (a reply no model of ours reads):
        # the call may be billed, so it settles at its estimate, audited, and the error
        # goes on. It left the escalation's reservation in flight and no closing line.
        await _cancelled(
            router,
            reservation.id,
            d,
            write,
            error=type(exc).__name__,
            before=_cut_cost(model, cut, d)[0],
        )
        raise
    finally:
        router.in_flight.done(reservation.id)
        if more:  # (the retries' reservations: what they held is in the one settlement)
            await asyncio.shield(_release_more(router, more))
    actual = cost_usd(model, result.usage.tokens_in, result.usage.tokens_out)
    cut_usd, cut_in, cut_out = _cut_cost(model, cut, d)
    refused = result.usage.refused
    unreported = result.usage.counted_locally and (
        model.reasoning_effort is not None or refused is not None
    )
    if unreported:
        # no usage from a reasoning model: its thinking is billed as output and counted
        # nowhere here, so the call settles at its estimate, which covers it (it settled
        # at the visible reply alone: a fraction of what the provider bills); nor when
        # the server's usage could not be this call's (what it bills is not known)
        actual = max(actual, d.est_cost_usd)
    actual += cut_usd  # (the tries cut short before this one are this call's cost too)
    expired = past = False
    try:
        await router.ledger.settle(
            reservation.id,
            actual_usd=actual,
            tokens_in=result.usage.tokens_in + cut_in,
            tokens_out=result.usage.tokens_out + cut_out,
            latency_ms=result.latency_ms,
        )
    except ReservationClosed as exc:
        if exc.status != "expired":
            raise
        # another process charged it by expiry meanwhile (its clock ahead of this one's,
        # or a call that outlived its TTL): the charge stands at the full estimate, and
        # the call was made and answered, so its line is written (it was not, and the
        # answer was an error after the whole reply had streamed: a chaos audit); what it
        # cost past the estimate is a row of its own, so the ledger holds all of it (a
        # call counted twice in the reports, in this rare case, rather than money lost)
        expired, past = True, actual > d.est_cost_usd
        if past:
            await router.ledger.record_call(
                session=router.session,
                run=run,
                role=d.role,
                model=d.target,
                provider=d.provider,
                tokens_in=0,
                tokens_out=0,
                latency_ms=0.0,
                cost_usd=actual - d.est_cost_usd,
            )
        actual = max(actual, d.est_cost_usd)
    await write(
        "call",
        to=d.target,
        reason_codes=d.reason_codes,
        values={
            **call_values(result, actual),
            "secrets_masked": masked,
            "provider": d.provider,
            # (an expired call that cost more was charged its estimate and the rest apart)
            **({"settled_at_estimate": True} if unreported or (expired and not past) else {}),
            **({"reservation_expired": True} if expired else {}),
            **_cut_values(cut, cut_usd),
        },
        provenance={
            **(provenance if provenance is not None else provenance_of(d, request, digest_of)),
            "approver": approver,
            "cost_usd": round(actual, 9),
        },
        detail=f"{result.usage.tokens_in} in / {result.usage.tokens_out} out, {dollars(actual)}",
    )
    out = routed(d, result, actual, escalated=True)
    out.approver = approver
    return out


def _cut_cost(model: Model, cut: list[Usage], d: Decision) -> tuple[float, int, int]:
    """What the tries cut short cost (at the model's prices, as counted here), and their
    tokens in and out. A reasoning model's try is billed its hidden thinking too, which
    nothing counted: each is charged no less than the estimate (as a call with no usage
    is)."""
    if not cut:
        return 0.0, 0, 0
    tokens_in, tokens_out = sum(u.tokens_in for u in cut), sum(u.tokens_out for u in cut)
    usd = cost_usd(model, tokens_in, tokens_out)
    if model.reasoning_effort is not None:
        usd = max(usd, d.est_cost_usd * len(cut))
    return usd, tokens_in, tokens_out


async def _release_more(router: Router, ids: list[str]) -> None:
    for rid in ids:
        router.in_flight.done(rid)
        with contextlib.suppress(ReservationClosed):  # (expired meanwhile: it stands)
            await router.ledger.release(rid, outcome="retry")


def _cut_values(cut: list[Usage], usd: float) -> dict[str, Any]:
    """The call or skip line's account of the tries cut short (none: nothing said)."""
    if not cut:
        return {}
    return {
        "tries_cut_short": len(cut),
        "cut_short_tokens_in": sum(u.tokens_in for u in cut),
        "cut_short_tokens_out": sum(u.tokens_out for u in cut),
        "cut_short_cost_usd": round(usd, 9),
    }


async def _budget_stop(
    d: Decision, write: Write, failed: dict[str, str], why: str, *, detail: str, **values: Any
) -> None:
    """A cloud step the budget cannot cover (GR-011): its line, and why, for the failure."""
    assert d.target is not None
    await write(
        "budget_stop",
        to=d.target,
        reason_codes=["GR011_BUDGET_CAP"],
        values={"est_cost_usd": d.est_cost_usd, **values},
        detail=detail,
    )
    failed[d.target] = f"{OVER_BUDGET}: {why}"


async def _cancelled(
    router: Router,
    reservation_id: str,
    d: Decision,
    write: Write,
    *,
    broken: StreamBroken | None = None,
    error: str | None = None,
    before: float = 0.0,
) -> None:
    """Settle a call that ended with no usage at its estimate, and say why: cancelled,
    its stream ``broken`` after part of the reply was read, or an ``error`` (its type).
    ``before``: what tries cut short before it cost, charged with it."""
    cancelled = broken is None and error is None
    try:
        await router.ledger.settle(
            reservation_id,
            actual_usd=d.est_cost_usd + before,
            tokens_in=d.est_tokens_in,
            tokens_out=0,
            latency_ms=0.0,
            outcome="cancelled" if cancelled else "failed",
        )
    except ReservationClosed as exc:
        if exc.status != "expired":
            raise
        # charged at the same estimate by another process's expiry: the line still says
        # what became of the call (the refusal had replaced the call's own error)
    if broken is not None:
        why, code = str(broken), "STREAM_BROKEN"
    elif error is not None:
        why, code = f"the call ended in an error ({error})", "CALL_ERROR"
    else:
        why, code = "the call was cancelled mid-way", "CALL_CANCELLED"
    await write(
        "budget",
        to=d.target,
        reason_codes=[code, "SETTLED_AT_ESTIMATE"],
        values={
            "est_cost_usd": round(d.est_cost_usd, 6),
            **({"cut_short_cost_usd": round(before, 9)} if before else {}),
        },
        detail=f"{d.target}: {why}; settled at the reserved {dollars(d.est_cost_usd)} (the "
        "provider may bill what it generated)"
        + (f", and {dollars(before)} for tries cut short before it" if before else ""),
    )
