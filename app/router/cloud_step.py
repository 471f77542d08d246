"""Serving a request in the cloud: the escalation line, the human's approval, the budget
reservation, the call, the settlement and the call line, each before it takes effect
(GR-005, GR-011, GR-013). ``None`` from a step means: decide again (denied, unavailable,
over budget, failed); what happened is already in the audit. A request the provider
refused as invalid (``bad_request``) is no step's failure but the request's: its
reservation is released and the route fails (:class:`~app.router.routed.BadRequest`)
with no next step, which would be asked for and sent the same request.

Every cloud call sends the request masked (:func:`app.router.calling.mask_request`):
a repository secret quoted into a brief, a test log or a diff never reaches a provider.
How many secrets were masked is the ``secrets_masked`` value of the ``call`` line (and
of the ``skip`` line when the call failed: the masked request did leave); the secrets
themselves are never written. The provenance's ``input_hash`` stays the hash of the
request as the caller built it, so the escalation line and the call line agree.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from app.backends.base import BackendError, Usage
from app.dollars import dollars
from app.errors import BudgetExceeded
from app.remembered import digest
from app.router.approvals import TIMEOUT, ApprovalRequest
from app.router.calling import BilledTry, mask_request
from app.router.cost import cost_nusd, cost_usd
from app.router.ledger.errors import LedgerError, ReservationClosed
from app.router.ledger.money import NANO
from app.router.ledger.records import Crossed, crossed_by, crossed_line
from app.router.retry import rule_for
from app.router.routed import (
    OVER_BUDGET,
    UNAVAILABLE,
    BadRequest,
    DeltaHook,
    RoutedResult,
    RouteFailed,
    StreamBroken,
    Write,
    bad_request,
    call_values,
    cut_note,
    input_hash,
    routed,
    tokens_text,
)
from app.router.same_host import endpoint_of, host_of, served_alongside
from app.router.types import Decision
from app.tokens import count_text

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from app.backends.base import ChatRequest, ChatResult
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
        "est_cost_usd": round(d.est_cost_usd, 9),  # (the reservation, to the nano-dollar)
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
    recorded: dict[str, Any] = {"inputs": inputs} if inputs is not None else {}
    provenance = provenance_of(d, request, digest_of)  # the call line repeats it
    detail = f"{', '.join(r.text for r in d.reasons)} → {d.target}"
    if not d.needs_approval and not router.approvals.is_session_denied(router.session):
        # Nobody is asked: the model was allowed for the session earlier. The line before
        # the call says so, where a reader (the audit tail, an editor's conversation)
        # would otherwise see an escalation and then a call with no approval between
        # (the call line's approver alone named it: an ACP audit).
        recorded["approval"] = "session"
        detail += " (approved for this session earlier: not asked again)"
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
        detail=detail,
    )
    approver = "session-approval"
    # a model allowed for the session was decided without asking; a "d" answered on
    # another question since (while this one wrote its line, read the ledger) outranks
    # it: asked through the broker, which answers with that denial and audits it (a review)
    if d.needs_approval or router.approvals.is_session_denied(router.session):
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
                left_usd=round(left, 9),
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

    One reservation covers one try (:class:`_Tries`): a try the provider bills with no
    result standing for it (cut short after its reply began; timed out after it took the
    request, settled at once on a ledger row of its own) is retried only once the retry
    is reserved for. A call that ends with no usage (cancelled, its stream broken) is
    settled at its estimate, or at what it delivered when that was more (:func:`_cancelled`).

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
    model = router.policy.model(d.target)
    tries = _Tries(router, d, run, write, model, reservation.id)
    closing: list[str] = []  # the retries' reservations, once a settlement owns them
    try:
        result = await router.call(d, outgoing, write, on_delta, tries)
    except asyncio.CancelledError:
        # The caller went away mid-call (a client disconnected, a run was stopped): the
        # provider may bill what it generated, so the reservation is settled at its full
        # estimate (never crossing a cap by guessing low), or at what was delivered when
        # that was more, and the audit says so; tries cut short before it besides.
        rid, in_flight = tries.closing_reservation()
        await asyncio.shield(
            _cancelled(
                router,
                rid,
                d,
                write,
                run,
                before=_cut_cost(model, tries.cut, d)[0],
                delivered=tries.delivered() if in_flight else None,
            )
        )
        raise
    except StreamBroken as broken:
        # Part of the reply is with the reader: it is billed, and no retry or other
        # model may continue it. Settled as a cancelled call is.
        rid, in_flight = tries.closing_reservation()
        await _cancelled(
            router,
            rid,
            d,
            write,
            run,
            broken=broken,
            before=_cut_cost(model, tries.cut, d)[0],
            delivered=tries.delivered() if in_flight else None,
        )
        raise RouteFailed(str(broken)) from None
    except BackendError as exc:
        cut_usd, cut_in, cut_out = _cut_cost(model, tries.cut, d)
        # (none left when the last try timed out, its reservation settled on its own, and
        # no try was cut short before it)
        rid, _ = tries.closing_reservation()
        crossed = (
            await _charge(
                router,
                rid,
                d,
                run,
                cut_usd,
                release=True,
                tokens_in=cut_in,
                tokens_out=cut_out,
            )
            if rid is not None
            else []
        )
        if exc.kind == "bad_request":
            raise await _bad_request(
                router, d, exc, write, masked, tries.cut, cut_usd, crossed, tries.timed
            ) from None
        rule = rule_for(router.policy, exc.kind)
        resting: list[str] = []
        if rule is not None and rule.cooldown_s > 0 and exc.kind != "context_length":
            router.health.mark_down(d.target, rule.cooldown_s, str(exc))
            if exc.no_answer:  # (a 408 or an error event came from a host that answers)
                resting = _host_down(router, d.target, rule.cooldown_s)
        failed[d.target] = f"{exc.kind}: {exc}"
        await write(
            "skip",
            to=d.target,
            reason_codes=["SKIP_FAILED", f"ERR_{exc.kind.upper()}"],
            values={
                "error": exc.kind,
                "status": exc.status,
                "secrets_masked": masked,
                **_cut_values(tries.cut, cut_usd),
                **_timed_out_values(tries.timed),
                **({"host_down": resting} if resting else {}),
            },
            detail=f"{d.target} failed ({exc}); moving down the chain"
            + (
                f" ({len(tries.cut)} tries cut short, billed ~{dollars(cut_usd)})"
                if tries.cut
                else ""
            )
            + _timed_out_note(tries.timed)
            + (f"; {', '.join(resting)}, on the same host, down too" if resting else ""),
        )
        await _say_crossed(d, write, crossed, cut_usd, "failed after tries cut short, billed")
        return None
    except Exception as exc:
        # Not a backend's failure but a fault on the way (a reply no model of ours reads):
        # the call may be billed, so it settles at its estimate, audited, and the error
        # goes on. It left the escalation's reservation in flight and no closing line.
        rid, in_flight = tries.closing_reservation()
        await _cancelled(
            router,
            rid,
            d,
            write,
            run,
            error=type(exc).__name__,
            before=_cut_cost(model, tries.cut, d)[0],
            delivered=tries.delivered() if in_flight else None,
        )
        raise
    else:
        # the retries' reservations are let go after the settlement, not before: freed
        # first, they let another request reserve what the settlement then charged (a cap
        # crossed by 40 %, an audit)
        if tries.more:
            closing = _taken(tries.more)
    finally:
        if tries.main is not None:
            router.in_flight.done(tries.main)
        if tries.more:  # (the reservation is closed: what the retries held is in it)
            await asyncio.shield(_release_more(router, _taken(tries.more)))
    assert tries.main is not None  # (the try that answered had one)
    served = _Served(
        router, d, tries.main, request, run, write, result, model, tries.cut, tries.timed
    )
    try:
        return await served.close(closing, masked, approver, provenance, digest_of)
    except asyncio.CancelledError:
        # Cancelled on the way (its settlement waited for a lock another request held):
        # what is left of it is done anyway, the settlement first, and the cancellation
        # goes on. Shielded only here: a task a request costs ~9 µs.
        await asyncio.shield(served.close(closing, masked, approver, provenance, digest_of))
        raise


class _Tries:
    """A cloud step's tries, as :func:`~app.router.calling.call_backend` reports them
    (its :class:`~app.router.calling.Billing`). One reservation covers one try:

    * ``main``: the reservation of the try in flight, which the call's end settles (or
      releases);
    * a try cut short after its reply began is counted into ``cut`` and charged with the
      call; its retry is reserved for first (``more``, let go after the settlement);
    * a try that timed out after the provider took it (it may process and bill it) is
      settled at once on ``main``, at its estimate (what it delivered, if more), its own
      ledger row and ``budget`` line, as a cancelled call is; its retry's reservation
      becomes ``main``. Until then (or when no retry is made) there is none.
    """

    __slots__ = ("cut", "d", "got", "main", "model", "more", "router", "run", "timed", "write")

    def __init__(
        self, router: Router, d: Decision, run: str | None, write: Write, model: Model, main: str
    ) -> None:
        self.router, self.d, self.run, self.write, self.model = router, d, run, write, model
        self.main: str | None = main
        self.more: list[str] = []
        self.cut: list[Usage] = []
        self.got: list[str] = []
        #: what each try that timed out was charged, on its own row
        self.timed: list[float] = []

    def delivered(self) -> Usage:
        """The try in flight's prompt (the estimate's) and its reply so far, as counted."""
        return Usage(
            tokens_in=self.d.est_tokens_in,
            tokens_out=count_text("".join(self.got)),
            counted_locally=True,
        )

    def closing_reservation(self) -> tuple[str | None, bool]:
        """The reservation the call's end is settled on, and whether a try was in flight
        on it. None in flight (a try that timed out took the last, and no retry had one
        yet): a cut try's reservation carries what the tries cut short cost, if any."""
        if self.main is not None:
            return self.main, True
        if self.more:
            self.main = self.more.pop(0)
            return self.main, False
        return None, False

    async def before_retry(self, after: BilledTry) -> bool:
        d = self.d
        assert d.target is not None and d.provider is not None
        try:
            extra = await self.router.ledger.reserve(
                session=self.router.session,
                provider=d.provider,
                role=d.role,
                model=d.target,
                amount_usd=d.est_cost_usd,
                run=self.run,
            )
        except BudgetExceeded as exc:
            what = "a try cut short" if after == "cut" else "a try that timed out"
            await self.write(
                "budget_stop",
                to=d.target,
                reason_codes=["GR011_BUDGET_CAP"],
                values={"est_cost_usd": d.est_cost_usd, f"retry_after_{after}": True},
                detail=f"{d.target}: no retry after {what}: {exc}",
            )
            return False
        if self.main is None:
            self.main = extra.id  # (the try that timed out settled the last)
        else:
            self.more.append(extra.id)
        self.router.in_flight.add(extra.id)
        return True

    async def timed_out(self, usage: Usage) -> None:
        # taken before anything is awaited: a cancel meanwhile finds no try in flight on
        # it, and does not settle it a second time
        rid, self.main = self.main, None
        if rid is None:
            return
        self.router.in_flight.done(rid)
        await asyncio.shield(self._settle_timed_out(rid, usage))

    async def _settle_timed_out(self, rid: str, usage: Usage) -> None:
        d = self.d
        assert d.target is not None
        tokens_in = max(d.est_tokens_in, usage.tokens_in)
        at = max(d.est_cost_usd, cost_usd(self.model, tokens_in, usage.tokens_out))
        crossed = await _charge(
            self.router,
            rid,
            d,
            self.run,
            at,
            outcome="timeout",
            tokens_in=tokens_in,
            tokens_out=usage.tokens_out,
        )
        self.timed.append(at)
        over = at > d.est_cost_usd
        settled = (
            f"what it delivered, {dollars(at)}, more than the reserved {dollars(d.est_cost_usd)}"
            if over
            else f"the reserved {dollars(at)}"
        )
        await self.write(
            "budget",
            to=d.target,
            reason_codes=[
                "CALL_TIMED_OUT",
                "SETTLED_AT_DELIVERED" if over else "SETTLED_AT_ESTIMATE",
            ],
            values={
                "est_cost_usd": round(d.est_cost_usd, 9),
                "cost_usd": round(at, 9),
                "tokens_out": usage.tokens_out,
                "try": len(self.timed),
                **(
                    {"over_estimate": True, "reserved_usd": round(d.est_cost_usd, 9)}
                    if over
                    else {}
                ),
            },
            detail=f"{d.target}: try {len(self.timed)} timed out after the provider took the "
            f"request; settled on its own at {settled} (the provider may bill what it "
            "generated)",
        )
        why = "cost more than its reservation" if over else "was settled at its estimate"
        await _say_crossed(d, self.write, crossed, at, why)


class _Served:
    """A cloud call that answered, to be closed: settled, its line written, the retries'
    reservations let go, in that order; ``close`` again after a cancellation does what is
    left (a settlement that was made is not made twice)."""

    __slots__ = (
        "actual",
        "crossed",
        "cut",
        "cut_usd",
        "d",
        "expired",
        "model",
        "recorded",
        "request",
        "reservation_id",
        "reserved",
        "result",
        "router",
        "run",
        "said",
        "step",
        "timed",
        "unreported",
        "write",
    )

    def __init__(
        self,
        router: Router,
        d: Decision,
        reservation_id: str,
        request: ChatRequest,
        run: str | None,
        write: Write,
        result: ChatResult,
        model: Model,
        cut: list[Usage],
        timed: list[float],
    ) -> None:
        self.router, self.d, self.reservation_id, self.request = router, d, reservation_id, request
        self.run, self.write, self.result, self.model, self.cut = run, write, result, model, cut
        self.timed = timed  # (each charged on a row of its own: not in this call's cost)
        #: how far closing went: 0 nothing, 1 settled, 2 its line begun, 3 done
        self.step = 0
        self.actual = self.cut_usd = self.reserved = 0.0
        self.expired = self.unreported = self.recorded = self.said = False
        #: the caps its settlement (or the row past an expired estimate) carried past
        self.crossed: list[Crossed] = []

    async def close(
        self,
        closing: list[str],
        masked: int,
        approver: str,
        provenance: Mapping[str, Any] | None,
        digest_of: Callable[[str], bytes],
    ) -> RoutedResult:
        """Settle, write the line, let the retries' reservations go. A ledger's write and
        an audit line, once begun, end before a cancel is raised (app.spool, AuditBase.add),
        so after a cancel ``step`` says what stands, and ``close`` again does the rest."""
        router, d, result = self.router, self.d, self.result
        assert d.target is not None
        if self.step == 0:
            self.reserved = d.est_cost_usd * (1 + len(closing))
        try:
            if self.step == 0:
                await self._settle()
                self.step = 1
            if self.step == 1:
                self.step = 2  # (begun: it stands, cancelled or not)
                await self._lines(masked, approver, provenance, digest_of)
            if self.crossed and not self.said:
                self.said = True  # (begun: it stands, cancelled or not)
                over = self.actual > self.reserved
                why = "cost more than its reservation" if over else _WITHIN
                await _say_crossed(d, self.write, self.crossed, self.actual, why)
        except asyncio.CancelledError:
            if self.step and closing:  # (settled: never before, or the gap is back)
                await asyncio.shield(_release_more(router, _taken(closing)))
            raise
        except BaseException:
            # the settlement (or its line) failed otherwise: the retries' reservations go
            # as they always went (held, they were renewed as long as the process lived and
            # charged in full after it, for tries already paid: a review)
            if closing:
                await asyncio.shield(_release_more(router, _taken(closing)))
            raise
        if closing:
            await asyncio.shield(_release_more(router, _taken(closing)))
        self.step = 3
        out = routed(d, result, self.actual, escalated=True)
        out.approver = approver
        return out

    async def _settle(self) -> None:
        """Settle at what the call cost. Another process may have charged it by expiry
        meanwhile (its clock ahead of this one's, or a call that outlived its TTL): the
        charge stands at the full estimate, and the call was made and answered, so its
        line is written (it was not, and the answer was an error after the whole reply had
        streamed: a chaos audit); what it cost past the estimate is a row of its own (a
        call counted twice in the reports, in this rare case, rather than money lost).
        Resumed after a cancel, nothing is charged twice: a settlement made reads as
        settled, and the row apart is marked before it is written."""
        d, result, router = self.d, self.result, self.router
        assert d.target is not None and d.provider is not None
        usage = result.usage
        # each part of the prompt at its own price: a cache read at the cache's (it was
        # charged at the input price, ~10 × a Claude Code turn's bill: a user's audit)
        nano = cost_nusd(
            self.model,
            usage.tokens_in,
            usage.tokens_out,
            tokens_cached=usage.tokens_cached,
            tokens_cache_write=usage.tokens_cache_write,
        )
        cut_usd, cut_in, cut_out = _cut_cost(self.model, self.cut, d)
        refused = usage.refused
        unreported = usage.counted_locally and (
            self.model.reasoning_effort is not None or refused is not None
        )
        if unreported:
            # no usage from a reasoning model: its thinking is billed as output and counted
            # nowhere here, so the call settles at its estimate, which covers it (it settled
            # at the visible reply alone: a fraction of what the provider bills); nor when
            # the server's usage could not be this call's (what it bills is not known)
            nano = max(nano, round(d.est_cost_usd * NANO))
        # (the tries cut short before this one are this call's cost too; summed in
        # nano-dollars, each of them exact there)
        actual = (nano + round(cut_usd * NANO)) / NANO
        self.unreported, self.cut_usd = unreported, cut_usd
        self.actual = max(actual, d.est_cost_usd) if self.expired else actual
        if not self.expired:
            try:
                totals = await router.ledger.settle(
                    self.reservation_id,
                    actual_usd=actual,
                    tokens_in=usage.tokens_in + cut_in,
                    tokens_out=usage.tokens_out + cut_out,
                    latency_ms=result.latency_ms,
                    tokens_cached=usage.tokens_cached,
                )
                if totals:  # (the usual settlement, within every cap, returns none)
                    self.crossed = crossed_by(totals)
                return
            except ReservationClosed as exc:
                if exc.status == "settled":
                    return  # (a close resumed after a cancel that came past the settlement)
                if exc.status != "expired":
                    raise
            self.expired = True
            self.actual = max(actual, d.est_cost_usd)
        if actual > d.est_cost_usd and not self.recorded:
            self.recorded = True  # (begun: it stands, cancelled or not)
            self.crossed = await _past_estimate(router, d, self.run, actual)

    async def _lines(
        self,
        masked: int,
        approver: str,
        provenance: Mapping[str, Any] | None,
        digest_of: Callable[[str], bytes],
    ) -> None:
        d, result, actual, expired = self.d, self.result, self.actual, self.expired
        assert d.target is not None
        past = expired and actual > d.est_cost_usd
        # past what was reserved for it (the retries' reservations covered their tries)
        over = actual > self.reserved
        await self.write(
            "call",
            to=d.target,
            reason_codes=d.reason_codes,
            values={
                **call_values(result, actual),
                "secrets_masked": masked,
                "provider": d.provider,
                # (an expired call that cost more was charged its estimate and the rest apart)
                **(
                    {"settled_at_estimate": True}
                    if self.unreported or (expired and not past)
                    else {}
                ),
                **({"reservation_expired": True} if expired else {}),
                # it cost more than was reserved for it: the caps were checked against less
                **(
                    {"over_estimate": True, "reserved_usd": round(self.reserved, 9)} if over else {}
                ),
                **_cut_values(self.cut, self.cut_usd),
                **_timed_out_values(self.timed),
            },
            provenance={
                **(
                    provenance
                    if provenance is not None
                    else provenance_of(d, self.request, digest_of)
                ),
                "approver": approver,
                "cost_usd": round(actual, 9),
            },
            detail=tokens_text(
                result.usage.tokens_in,
                result.usage.tokens_out,
                result.usage.tokens_cached,
                result.usage.tokens_cache_write,
            )
            + f", {dollars(actual)}"
            + cut_note(result)
            + _timed_out_note(self.timed),
        )


#: why a call that cost no more than its reservation carried the spend past a cap
_WITHIN = "was settled within its reservation, after calls that cost more than theirs"


async def _charge(
    router: Router,
    reservation_id: str,
    d: Decision,
    run: str | None,
    actual: float,
    *,
    release: bool = False,
    outcome: str | None = None,
    tokens_in: int = 0,
    tokens_out: int = 0,
    latency_ms: float = 0.0,
) -> list[Crossed]:
    """Settle (or ``release``) ``d``'s reservation at ``actual``; the caps that carried
    past (the caller says them). When another process had charged it by expiry meanwhile
    (at its full amount, the estimate), what it cost past that is a row of its own, so
    the ledger holds all of it (it was dropped on the cancelled and failed paths, and a
    failed step raised instead of moving on)."""
    try:
        if release:
            totals = await router.ledger.release(
                reservation_id,
                outcome or "failed",
                actual_usd=actual,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                latency_ms=latency_ms,
            )
        else:
            totals = await router.ledger.settle(
                reservation_id,
                actual_usd=actual,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                latency_ms=latency_ms,
                outcome=outcome or "ok",
            )
        return crossed_by(totals)
    except ReservationClosed as exc:
        if exc.status != "expired":
            raise
    assert d.target is not None and d.provider is not None
    if actual > d.est_cost_usd:
        return await _past_estimate(router, d, run, actual)
    return []


async def _past_estimate(
    router: Router, d: Decision, run: str | None, actual: float
) -> list[Crossed]:
    """What a call whose reservation another process charged by expiry (at its estimate)
    cost past that: a row of its own, so that the ledger holds all of it; the caps that
    row carried past."""
    assert d.target is not None and d.provider is not None
    totals = await router.ledger.record_call(
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
    return crossed_by(totals)


async def _say_crossed(
    d: Decision, write: Write, crossed: list[Crossed], cost: float, why: str
) -> None:
    """A ``budget`` line naming each cap ``d``'s charge (``cost``) carried past (GR-011
    held the reservations, not the bill), ``why`` it could: said by the one charge that
    crossed each cap (the ledger's totals of that charge say so), never again after it."""
    if not crossed:
        return
    assert d.target is not None
    await write("budget", **crossed_line(d.target, crossed, cost, why))


async def _bad_request(
    router: Router,
    d: Decision,
    exc: BackendError,
    write: Write,
    masked: int,
    cut: list[Usage],
    cut_usd: float,
    crossed: list[Crossed],
    timed: list[float],
) -> BadRequest:
    """The provider refused the request itself as invalid: its reservation was released
    (nothing generated), and here the step is said to have failed, with no cooldown, no
    host rest and no next step (which would be asked, reserved for and sent the same
    request); the route's failure to raise."""
    assert d.target is not None and d.provider is not None
    await write(
        "skip",
        to=d.target,
        reason_codes=["SKIP_FAILED", "ERR_BAD_REQUEST", "ROUTE_FAILED"],
        values={
            "error": exc.kind,
            "status": exc.status,
            "secrets_masked": masked,
            **_cut_values(cut, cut_usd),
            **_timed_out_values(timed),
        },
        detail=f"{d.target} refused the request as invalid ({exc}); not retried, not "
        f"marked down, no other model tried: the route fails (bad request from {d.provider})",
    )
    await _say_crossed(d, write, crossed, cut_usd, "failed after tries cut short, billed")
    return bad_request(d.target, d.provider, exc)


def _host_down(router: Router, target: str, cooldown_s: float) -> list[str]:
    """``target``'s host did not answer at all (a time-out before any reply): the other
    models it serves are marked down for the same cooldown, so that none is waited on
    again (the read timeout and the policy's retry, each in turn). Each is then skipped
    as unhealthy, its skip line saying why; none is shortened that rests longer already
    (a key refused for an hour), and nothing is sent anywhere by this. The ones marked."""
    endpoint = endpoint_of(router.policy, target)
    if endpoint is None:
        return []
    why = (
        f"its host {host_of(endpoint)} did not answer {target} (timed out before any "
        f"reply); down for {cooldown_s:g}s"
    )
    marked = []
    for other in served_alongside(router.policy, target):
        if router.health.is_up(other):
            router.health.mark_down(other, cooldown_s, why)
            marked.append(other)
    return marked


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


def _taken(ids: list[str]) -> list[str]:
    """``ids``'s items, taken out of it (whoever releases them owns them)."""
    taken, ids[:] = ids[:], []
    return taken


async def _release_more(router: Router, ids: list[str]) -> None:
    """The retries' reservations let go: each no longer renewed first, then each released
    (one expired meanwhile stands; a store that did not take one is said, and the rest go
    on: the first refusal left the others renewed for as long as the process lived)."""
    for rid in ids:
        router.in_flight.done(rid)
    for rid in ids:
        try:
            await router.ledger.release(rid, outcome="retry")
        except ReservationClosed:
            pass  # (expired meanwhile: it stands)
        except LedgerError as exc:
            log.warning("a retry's reservation %s was not released: %s", rid, exc)


def _timed_out_values(timed: list[float]) -> dict[str, Any]:
    """The call or skip line's account of the tries that timed out after the provider
    took them (each settled on a ledger row of its own, with its ``budget`` line)."""
    if not timed:
        return {}
    return {"tries_timed_out": len(timed), "timed_out_cost_usd": round(sum(timed), 9)}


def _timed_out_note(timed: list[float]) -> str:
    if not timed:
        return ""
    tries = "1 try" if len(timed) == 1 else f"{len(timed)} tries"
    return (
        f"; {tries} timed out after the provider took the request, settled on its own "
        f"({dollars(sum(timed))})"
    )


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
    reservation_id: str | None,
    d: Decision,
    write: Write,
    run: str | None,
    *,
    broken: StreamBroken | None = None,
    error: str | None = None,
    before: float = 0.0,
    delivered: Usage | None = None,
) -> None:
    """Settle a call that ended with no usage, and say why: cancelled, its stream
    ``broken`` after part of the reply was read, or an ``error`` (its type). The try in
    flight is settled at its estimate, or at what it ``delivered`` (its prompt and the
    reply counted so far, at the model's prices) when that was more: a server that went
    on past its cap and then broke was settled at an estimate of a few tokens for
    thousands delivered (an audit); past the reservation, the line says so, as a
    settlement's does, and a cap it carried past is said. ``delivered`` None: no try was
    in flight (one timed out, settled on its own, and its retry was not reserved yet).
    ``before``: what tries cut short before it cost, charged with it (also when another
    process's expiry charged the estimate meanwhile: the line says what became of the
    call, as the refusal had replaced the call's own error)."""
    assert d.target is not None
    cancelled = broken is None and error is None
    outcome = "cancelled" if cancelled else "failed"
    if reservation_id is None:
        return  # (nothing held: the tries that timed out were each settled and said)
    model = router.policy.model(d.target)
    if delivered is None:
        # no try in flight: only what the tries cut short cost, on one of their reservations
        crossed = await _charge(
            router, reservation_id, d, run, before, release=True, outcome=outcome
        )
        if before:
            await write(
                "budget",
                to=d.target,
                reason_codes=["CALL_CANCELLED" if cancelled else "CALL_ERROR"],
                values={"cut_short_cost_usd": round(before, 9)},
                detail=f"{d.target}: ended between tries; {dollars(before)} for tries cut "
                "short before it",
            )
            await _say_crossed(d, write, crossed, before, "was charged its tries cut short")
        return
    shown = cost_usd(model, delivered.tokens_in, delivered.tokens_out)
    at = max(d.est_cost_usd, shown)
    over = at > d.est_cost_usd
    crossed = await _charge(
        router,
        reservation_id,
        d,
        run,
        at + before,
        outcome=outcome,
        tokens_in=delivered.tokens_in,
        tokens_out=delivered.tokens_out,
    )
    if broken is not None:
        why, code = str(broken), "STREAM_BROKEN"
    elif error is not None:
        why, code = f"the call ended in an error ({error})", "CALL_ERROR"
    else:
        why, code = "the call was cancelled mid-way", "CALL_CANCELLED"
    if over:
        settled = (
            f"settled at what was delivered, {dollars(at)} ({delivered.tokens_out} tokens out "
            f"counted), more than the reserved {dollars(d.est_cost_usd)}"
        )
    else:
        settled = (
            f"settled at the reserved {dollars(d.est_cost_usd)} (the provider may bill what it "
            "generated)"
        )
    await write(
        "budget",
        to=d.target,
        reason_codes=[code, "SETTLED_AT_DELIVERED" if over else "SETTLED_AT_ESTIMATE"],
        values={
            # (the estimate to the nano, as the ledger charged it when it is not past it)
            "est_cost_usd": round(d.est_cost_usd, 9),
            "tokens_out": delivered.tokens_out,
            **({"cut_short_cost_usd": round(before, 9)} if before else {}),
            # past what was reserved for it: the caps were checked against less
            **(
                {
                    "cost_usd": round(at, 9),
                    "over_estimate": True,
                    "reserved_usd": round(d.est_cost_usd, 9),
                }
                if over
                else {}
            ),
        },
        detail=f"{d.target}: {why}; {settled}"
        + (f", and {dollars(before)} for tries cut short before it" if before else ""),
    )
    if over:
        why_crossed = "cost more than its reservation"
    else:
        why_crossed = "was settled at its estimate" + (" and its tries cut short" if before else "")
    await _say_crossed(d, write, crossed, at + before, why_crossed)
