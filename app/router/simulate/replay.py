"""One request replayed under one policy: decide() on the recorded inputs, walking the
request the way the router did.

The world is the recorded one. Where the router met a denial, a failed cloud call or a
local runtime going down, the replay meets the same when its walk reaches that model or
runtime (a denial of the whole chain denies the same models at once). A model the
request never tried is assumed to answer, and its approval, when one is needed, to be
granted: the replay counts the approvals it would have asked. The budget is the
policy's own simulated ledger (:mod:`.ledger`), never the one recorded.

Speed (a replay covers every request under two policies, and a decide() costs about
20 µs): a first decision the log holds for the very state and policy replayed is read
from its line (:meth:`Replayer._as_recorded`), and so is one whose role another policy
reads exactly as the recorded one does (:func:`~app.router.simulate.picks.role_view`;
triggers and prices aside where no trigger fires). Otherwise decide() runs with no budget first; a
budget can only skip cloud steps, so that answer stands unless it escalates to a model
whose estimate exceeds what is left, and only then does decide() run with the budgets.
"""

from __future__ import annotations

from app.policy.fingerprint import fingerprint
from app.policy.schema import Policy
from app.router.cost import cost_usd
from app.router.decide import decide, fired_triggers
from app.router.ledger.money import NANO
from app.router.simulate.indexed import IndexedPolicy
from app.router.simulate.ledger import SimLedger
from app.router.simulate.picks import Blocked, Outcome, Pick, pick_of, role_view
from app.router.simulate.world import World, walk_state

#: as many decisions as the router makes for one request at most
MAX_STEPS = 16


class Replayer:
    """Replays requests, in order, under one policy with its own simulated ledger."""

    def __init__(
        self,
        policy: Policy,
        *,
        trust_record: bool = True,
        reference: Replayer | None = None,
        user: str | None = None,
    ) -> None:
        """``reference``: the replayer of the policy the log is compared with; a role this
        policy reads as that one does decides as the record says, where that one does.
        ``user``: on the team store, whose chain is replayed (:class:`SimLedger`)."""
        self.policy = IndexedPolicy.of(policy)
        clouds = [p for p in policy.providers if p != "local"]
        self.ledger = SimLedger(policy.budget, clouds, user=user)
        self.reference = reference
        #: decisions made under this very policy are read from their lines, not re-made
        self._fingerprint = fingerprint(policy) if trust_record and reference is None else None
        self._trust: dict[str, tuple[str | None, bool]] = {}
        self._same_triggers: dict[str, bool] = {}

    def trust(self, role: str) -> tuple[str | None, bool]:
        """Whose recorded decisions for ``role`` this policy would make the same: (the
        fingerprint of the policy they were made under, or None; True when only those
        where no trigger fires, then or now: :meth:`quiet`). Its own; the reference's
        when it reads for the role all the reference reads (or all but the triggers and
        the prices)."""
        found = self._trust.get(role)
        if found is None:
            ref = self.reference or self
            fp = ref._fingerprint
            if ref is self or role_view(self.policy, role) == role_view(ref.policy, role):
                found = (fp, False)
            elif role_view(self.policy, role, quiet=True) == role_view(
                ref.policy, role, quiet=True
            ):
                found = (fp, True)
                same = self.policy.triggers_for(role) == ref.policy.triggers_for(role)
                self._same_triggers[role] = same
            else:
                found = (None, False)
            self._trust[role] = found
        return found

    def quiet(self, w: World) -> bool:
        """No trigger fired for the first decision, and none fires under this policy
        (where its triggers are the recorded ones, they would not: no need to ask)."""
        if w.fired:
            return False
        role = w.req.role
        if self._same_triggers.get(role, False):
            return True
        found = w.quiet_under.get(id(self))
        if found is None:
            found = w.quiet_under[id(self)] = not fired_triggers(self.policy, role, w.signals)
        return found

    def _as_recorded(self, w: World, local_only: bool) -> Pick | None:
        """The first decision's recorded answer, when decide() is bound to give it again
        (GR-004): a policy that decides as the recorded one (:meth:`trust`), the recorded
        state, and the budget the router read equal to what this ledger leaves. Otherwise
        None: decide() runs."""
        first = w.first
        if not w.single or local_only != first.local_only or first.policy is None:
            return None
        fp, only_quiet = self.trust(w.req.role)
        if first.policy != fp or (only_quiet and not self.quiet(w)):
            return None
        if first.left is not None and self.ledger.left_usd(w.req.session, w.req.day) != first.left:
            return None
        return w.recorded_pick(self.policy)

    def replay(self, w: World, local_only: bool) -> Outcome:
        req = w.req
        first_down = w.first_down
        denied: frozenset[str] = frozenset()
        failed: dict[str, str] = {}
        down = first_down
        asks = 0
        blocked: list[Blocked] = []
        recorded = self._as_recorded(w, local_only)
        for _ in range(MAX_STEPS):
            if recorded is not None:
                pick, recorded = recorded, None
            else:
                pick = self._decide(w, local_only, denied, failed, down, first_down)
            if pick.budget_skips:
                blocked += [
                    Blocked(m, p, self.ledger.binding_cap(req.session, req.day, p))
                    for m, p in pick.budget_skips
                ]
            action = pick.action
            if action == "refuse":
                return Outcome("refused", asks=asks, reasons=pick.reasons, blocked=blocked)
            if action == "escalate":
                model = str(pick.target)
                asks += pick.needs_approval and model not in req.unasked
                # A model that failed was approved first; a "deny all" after it lists it
                # among the denied too. A cap's stop at the reservation is the replay's
                # own ledger's to decide.
                why = w.failed.get(model)
                if why is not None:
                    if not why.startswith("budget:"):
                        failed = {**failed, model: why}
                        down = down | ({model} & w.new_down)
                        continue
                elif model in w.denied:
                    denied = denied | w.groups.get(model, frozenset({model}))
                    continue
                if model not in w.served and w.last_kind == "escalation" and w.last_to == model:
                    return Outcome("failed", model, asks=asks, blocked=blocked)
                out = self._cloud(w, model, pick)
                out.asks, out.blocked = asks, blocked
                return out
            target = pick.where
            if w.failed or w.new_down:
                runtime_key = f"runtime:{pick.runtime}"
                if runtime_key in w.failed:
                    failed = {**failed, runtime_key: w.failed[runtime_key]}
                    continue
                if runtime_key in w.new_down and runtime_key not in down:
                    down = down | {runtime_key}
                    continue
            if target not in w.served and w.last_kind != "escalation" and w.last_to == target:
                return Outcome("failed", target, asks=asks, blocked=blocked)
            return Outcome(
                "local", target, "local", asks=asks, reasons=pick.reasons, blocked=blocked
            )
        return Outcome("failed", asks=asks, blocked=blocked)

    def _decide(
        self,
        w: World,
        local_only: bool,
        denied: frozenset[str],
        failed: dict[str, str],
        down: frozenset[str],
        first_down: frozenset[str],
    ) -> Pick:
        """decide() at this point of the walk, without the budget, then checked against
        this policy's ledger."""
        if not denied and not failed and down is first_down:
            state = w.state(local_only)
        else:
            state = walk_state(w.first, local_only, {}, denied, failed, down)
        pick = pick_of(decide(self.policy, w.req.role, w.signals, state), self.policy)
        if pick.action == "escalate":
            pick = self._with_budget(w, pick, local_only, denied, failed, down)
        return pick

    def _with_budget(
        self,
        w: World,
        pick: Pick,
        local_only: bool,
        denied: frozenset[str],
        failed: dict[str, str],
        down: frozenset[str],
    ) -> Pick:
        """The budget-free pick, unless the ledger cannot cover its estimate: then decide()
        again, with what the ledger leaves for every provider (as the router reads it)."""
        assert pick.provider is not None
        req = w.req
        left = self.ledger.left_usd(req.session, req.day, [pick.provider])[pick.provider]
        if pick.est_cost_usd <= left:
            return pick
        budgets = self.ledger.left_usd(req.session, req.day)
        state = walk_state(w.first, local_only, budgets, denied, failed, down)
        return pick_of(decide(self.policy, req.role, w.signals, state), self.policy)

    def _cloud(self, w: World, model: str, pick: Pick) -> Outcome:
        """Served by ``model``: priced by this policy on the request's recorded tokens."""
        spec = self.policy.model(model)
        tokens, estimated = w.tokens()
        # nothing served in the record: decide()'s own estimate
        cost = (
            cost_usd(
                spec,
                tokens.tokens_in,
                tokens.tokens_out,
                tokens_cached=tokens.tokens_cached,
                tokens_cache_write=tokens.tokens_cache_write,
            )
            if tokens is not None
            else pick.est_cost_usd
        )
        amount = round(cost * NANO)
        self.ledger.settle(w.req.session, w.req.day, spec.provider, amount)
        return Outcome(
            "cloud",
            model,
            spec.provider,
            cost_nusd=amount,
            estimated=estimated,
            reasons=pick.reasons,
        )
