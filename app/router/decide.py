"""``decide(policy, role, signals, state) -> Decision``: pure, total, deterministic (GR-004).

No clock, no randomness, no I/O: everything the decision depends on is an argument.
The rules it applies are written down at the top of policy/model-policy.toml:

* no trigger → the role stays local, walking the runtime chain (a runtime fallback);
* a trigger (or the user's request) → an escalation down the role's cloud chain, starting
  at the trigger's target; each step that cannot serve is skipped with its reason;
* local_only → no cloud step is ever chosen (GR-009);
* a health failure alone never yields a cloud target.
"""

from __future__ import annotations

from typing import NamedTuple

from app.dollars import dollars
from app.policy.schema import Model, Policy, Role, Trigger
from app.router.cost import cost_usd
from app.router.types import Decision, LocalTarget, Reason, RouterState, Signals, Skip

#: Prompt size assumed when the caller gives no context_estimate (route explain).
DEFAULT_PROMPT_TOKENS = 2000

_OPS = {"lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def _fmt(x: float, beside: float | None = None) -> str:
    """Short (six digits), yet never rounded onto the threshold it is ``beside``:
    ``0.7499999`` read "0.75 < 0.75" in route explain and the escalation's audit line (a
    user audit); then as many digits as tell them apart."""
    shown = f"{x:g}"
    if beside is None or x == beside:
        return shown
    other = f"{beside:g}"
    digits = 6
    while shown == other and digits < 17:
        digits += 1
        shown = f"{x:.{digits}g}"
    return shown


def evaluate_trigger(trigger: Trigger, signals: Signals) -> Reason | None:
    """The reason when ``trigger`` fires on ``signals``, else None."""
    value = getattr(signals, trigger.signal, None)
    if value is None:
        return None
    if trigger.op == "is_true":
        if value is True:
            return Reason(
                code=trigger.reason,
                trigger=trigger.id,
                signal=trigger.signal,
                op="is_true",
                value=True,
                text=f"{trigger.signal} == true",
            )
        return None
    if isinstance(value, bool) or trigger.threshold is None:
        return None
    t, op = trigger.threshold, trigger.op
    if not (
        value < t
        if op == "lt"
        else value <= t
        if op == "le"
        else value > t
        if op == "gt"
        else op == "ge" and value >= t
    ):
        return None
    grounds = signals.grounds
    basis = (
        next((why for name, why in grounds if name == trigger.signal), None) if grounds else None
    )
    x = float(value)
    if basis:
        two = f"{x:.2f}"
        shown = f"{two if two != f'{t:.2f}' or x == t else _fmt(x, t)} ({basis})"
    else:
        shown = _fmt(x, t)
    return Reason(
        code=trigger.reason,
        trigger=trigger.id,
        signal=trigger.signal,
        op=trigger.op,
        value=float(value),
        threshold=t,
        text=f"{trigger.signal} {shown} {_OPS[trigger.op]} {_fmt(t)}",
    )


class _Runtime(NamedTuple):
    """One step of a local role's runtime walk, as the policy has it."""

    runtime: str
    model: str
    health_key: str
    #: the catalog's window (the state's, learnt from the server, wins); _UNKNOWN for a
    #: model the catalog lacks (a policy not made by the loader), looked up when reached
    window: int


_UNKNOWN = -1


def repriced(policy: Policy, d: Decision, tokens_in: int, tokens_out: int) -> Decision:
    """``d`` for another request to its target (a structured repair: the rejected reply
    and the schema's complaint added, the output cap maybe raised), estimated as decide()
    estimates a cloud step: that request's prompt and output cap, and the thinking a
    reasoning model is billed for. The first request's estimate reserved too little for
    it (a repair settled at twice that, past the day's cap: an audit)."""
    assert d.target is not None
    model = policy.model(d.target)
    thinking = policy.generation.reasoning_tokens(model.reasoning_effort)
    est = cost_usd(model, tokens_in or DEFAULT_PROMPT_TOKENS, tokens_out + thinking)
    return d.model_copy(
        update={"est_tokens_in": tokens_in, "est_tokens_out": tokens_out, "est_cost_usd": est}
    )


class _Step(NamedTuple):
    """One step of a cloud chain from an entry, as the policy has it."""

    model_id: str
    #: None for a model the catalog lacks (a policy not made by the loader)
    model: Model | None
    #: its place in the role's chain (0 for an entry outside it)
    chain_step: int
    window: int
    #: the reasoning tokens its effort is billed for (as output)
    thinking: int
    #: escalation-only for other roles: skipped when it would be entered first
    other_roles_only: bool


class _Views:
    """What decide() works out from a policy alone, per role, the first time it is asked
    (a policy is frozen: a new one, a reload or a copy, is another object; the router asks
    for one role many times): its triggers, its chain, its runtime walk, the cloud steps
    from each entry, and the local targets made (frozen, so shared)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.triggers: dict[str, tuple[Trigger, ...]] = {}
        self.chains: dict[str, tuple[str, ...]] = {}
        self.walks: dict[str, tuple[str | None, tuple[_Runtime, ...]]] = {}
        self.steps: dict[tuple[str, str], tuple[_Step, ...]] = {}
        self.targets: dict[tuple[str, str, int, str | None], LocalTarget] = {}


#: the views of the last few policies seen, by identity (a view holds its policy, so an
#: id here is never a dead policy's): a simulation decides each request under two
#: policies in turn, and a reload or a test's copy brings others
_recent: dict[int, _Views] = {}
_KEPT = 4


def _view(policy: Policy) -> _Views:
    views = _recent.get(id(policy))
    if views is None:
        if len(_recent) >= _KEPT:
            _recent.clear()
        views = _recent[id(policy)] = _Views(policy)
    return views


def _triggers(policy: Policy, role: str) -> tuple[Trigger, ...]:
    by_role = _view(policy).triggers
    found = by_role.get(role)
    if found is None:
        found = by_role[role] = tuple(policy.triggers_for(role))
    return found


def _chain(policy: Policy, role: str) -> list[str]:
    by_role = _view(policy).chains
    found = by_role.get(role)
    if found is None:
        found = by_role[role] = tuple(policy.chain(role))
    return list(found)


def _walk(policy: Policy, role: Role, role_id: str) -> tuple[str | None, tuple[_Runtime, ...]]:
    """The model a local role wants, and the runtime chain's steps for it."""
    walks = _view(policy).walks
    found = walks.get(role_id)
    if found is None:
        wanted = _local_model(role)
        steps: list[_Runtime] = []
        if wanted is not None:
            wanted = policy.resolve(wanted)
            for runtime_id in policy.local_chain.order:
                runtime = policy.runtimes[runtime_id]
                model_id = policy.resolve(runtime.model) if runtime.model else wanted
                known = policy.models.get(policy.resolve(model_id))  # (policy.model()'s)
                window = known.context_window if known is not None else _UNKNOWN
                steps.append(_Runtime(runtime_id, model_id, f"runtime:{runtime_id}", window))
        found = walks[role_id] = (wanted, tuple(steps))
    return found


def _steps(policy: Policy, role: str, entry: str, chain: list[str]) -> tuple[_Step, ...]:
    """The cloud steps from ``entry`` down ``role``'s chain (``entry`` first when it is not
    in the chain)."""
    key = (role, entry)
    by_entry = _view(policy).steps
    found = by_entry.get(key)
    if found is None:
        ids = chain[chain.index(entry) :] if entry in chain else [entry, *chain]
        made = []
        for model_id in ids:
            step_no = chain.index(model_id) if model_id in chain else 0
            model = policy.models.get(policy.resolve(model_id))
            if model is None:  # (looked up again when reached: a KeyError names it)
                made.append(_Step(model_id, None, step_no, _UNKNOWN, 0, False))
                continue
            made.append(
                _Step(
                    model_id,
                    model,
                    step_no,
                    model.context_window,
                    policy.generation.reasoning_tokens(model.reasoning_effort),
                    model.escalation_only and role not in model.escalation_only_roles,
                )
            )
        found = by_entry[key] = tuple(made)
    return found


def _target(policy: Policy, model: str, runtime: str, window: int, sub: str | None) -> LocalTarget:
    """The local target (frozen: one object serves every decision that names it)."""
    targets = _view(policy).targets
    key = (model, runtime, window, sub)
    found = targets.get(key)
    if found is None:
        if len(targets) >= 256:  # (windows learnt from servers could vary without end)
            targets.clear()
        found = targets[key] = LocalTarget(
            model=model, runtime=runtime, context_window=window, substituted_for=sub
        )
    return found


def fired_triggers(policy: Policy, role: str, signals: Signals) -> list[tuple[Trigger, Reason]]:
    out = []
    for trig in _triggers(policy, role):
        reason = evaluate_trigger(trig, signals)
        if reason is not None:
            out.append((trig, reason))
    return out


def _window(policy: Policy, state: RouterState, model_id: str) -> int:
    return state.context_windows.get(model_id, policy.model(model_id).context_window)


def _local_model(role: Role) -> str | None:
    return role.default if role.locality == "local" else role.local_stand_in


def local_target(
    policy: Policy, role_id: str, state: RouterState, tokens_in: int
) -> tuple[LocalTarget | None, list[Skip]]:
    """Walk the runtime chain (vLLM → llama.cpp server → in-process) for a local role."""
    role = policy.roles[role_id]
    wanted, walk = _walk(policy, role, role_id)
    skips: list[Skip] = []
    if wanted is None:
        return None, skips
    if role.kind == "embedding":
        # sentence-transformers in-process; a missing default falls back to the shipped one
        for model_id in (wanted, policy.resolve(policy.embeddings.local_fallback)):
            if state.health.get(model_id, True):
                sub = None if model_id == wanted else f"{wanted} on sentence-transformers"
                window = _window(policy, state, model_id)
                return LocalTarget(
                    model=model_id,
                    runtime="sentence_transformers",
                    context_window=window,
                    substituted_for=sub,
                ), skips
            skips.append(Skip(model=model_id, runtime="sentence_transformers", reason="unhealthy"))
        return None, skips
    health, windows = state.health, state.context_windows
    for runtime_id, model_id, health_key, catalog_window in walk:
        if not health.get(health_key, True):
            skips.append(Skip(model=model_id, runtime=runtime_id, reason="unhealthy"))
            continue
        if health and health.get(f"{health_key}:{model_id}") is False:
            skips.append(Skip(model=model_id, runtime=runtime_id, reason="not_served"))
            continue
        if catalog_window == _UNKNOWN:
            window = _window(policy, state, model_id)  # (a KeyError names it, as ever)
        else:
            window = windows.get(model_id, catalog_window)
        needed = tokens_in + min(role.max_output_tokens, max(window // 4, 1))
        if needed > window:
            skips.append(
                Skip(
                    model=model_id,
                    runtime=runtime_id,
                    reason="context_too_small",
                    detail=f"needs ~{needed} tokens, window {window}",
                )
            )
            continue
        sub = None
        if skips:
            first = skips[0]
            sub = f"{first.model} on {first.runtime}"
        return _target(policy, model_id, runtime_id, window, sub), skips
    # Nothing local fits the prompt: never a reason to leave the machine. The first healthy
    # runtime is tried (the estimate may be high); a prompt over its window then fails as
    # too long (RouteFailed.too_long). ``run`` condenses its brief to fit before routing.
    for skip in skips:
        if skip.reason == "context_too_small":
            sub = None if skip is skips[0] else f"{skips[0].model} on {skips[0].runtime}"
            window = _window(policy, state, skip.model)
            return LocalTarget(
                model=skip.model,
                runtime=skip.runtime,
                context_window=window,
                substituted_for=sub,
                condense=True,
            ), [s for s in skips if s is not skip]
    return None, skips


def decide(
    policy: Policy,
    role: str,
    signals: Signals,
    state: RouterState,
    *,
    fired: list[tuple[Trigger, Reason]] | None = None,
) -> Decision:
    """Which model serves ``role`` now, and why. Total: every input yields a Decision.

    ``fired``: ``fired_triggers(policy, role, signals)`` when the caller has it already
    (the router reads it to know whether to read the budgets): not evaluated twice.
    """
    version = policy.version
    if role not in policy.roles:
        return Decision(
            role=role,
            action="refuse",
            policy_version=version,
            refusal_code="UNKNOWN_ROLE",
            notes=[f"unknown role {role!r}; known: {', '.join(policy.roles)}"],
        )
    spec = policy.roles[role]
    if spec.kind == "vision":
        return Decision(
            role=role,
            action="refuse",
            policy_version=version,
            refusal_code="CV_NOT_LLM_ROLE",
            notes=["CV/Camera is not an LLM role: it is scheduled separately (§1)"],
        )
    if spec.kind == "retrieval":
        return Decision(
            role=role,
            action="refuse",
            policy_version=version,
            refusal_code="STAGE0_DETERMINISTIC",
            notes=["Stage0 retrieval is deterministic (TF-IDF + MMR): no model is routed"],
        )

    tokens_in = signals.context_estimate if signals.context_estimate is not None else 0
    cost_tokens_in = tokens_in or DEFAULT_PROMPT_TOKENS
    tokens_out = signals.output_tokens or spec.max_output_tokens
    schema = signals.schema_tokens  # (a cloud model's alone: a local one has a grammar)
    local, local_skips = local_target(policy, role, state, tokens_in)
    if fired is None:
        fired = fired_triggers(policy, role, signals)
    reasons = [r for _, r in fired]
    notes: list[str] = []
    chain = _chain(policy, role)

    def stay_local(extra_skips: list[Skip], more_notes: list[str]) -> Decision:
        skips = local_skips + extra_skips
        if local is None:
            sidecar = spec.sidecar
            return Decision(
                role=role,
                action="refuse",
                policy_version=version,
                reasons=reasons,
                chain=chain,
                skipped=skips,
                refusal_code="SIDECAR_NOT_REACHED" if sidecar else "NO_LOCAL_RUNTIME",
                est_tokens_in=tokens_in,
                notes=[
                    *notes,
                    f"{spec.title}: "
                    + (
                        "no cloud step could serve (denied, unavailable, over budget or "
                        "local_only), so there is none; it is advice, nothing waits on it"
                        if fired
                        else "no trigger fired; it is escalation-only, so there is none"
                    ),
                ]
                if sidecar
                else [*notes, *more_notes, "no local runtime can serve this request"],
            )
        step = (
            policy.local_chain.order.index(local.runtime)
            if local.runtime in (policy.local_chain.order)
            else 0
        )
        return Decision(
            role=role,
            action="local",
            policy_version=version,
            target=local.model,
            provider="local",
            runtime=local.runtime,
            reasons=reasons,
            est_tokens_in=tokens_in,
            est_tokens_out=tokens_out,
            chain=chain,
            chain_step=step,
            skipped=skips,
            local=local,
            notes=[*notes, *more_notes, *_advisory(spec, role, bool(fired))],
        )

    if not fired:
        return stay_local([], [])

    if not chain:
        return stay_local([], ["the role has no escalation chain"])

    first_trigger = fired[0][0]
    entry = policy.resolve(first_trigger.target) if first_trigger.target else chain[0]
    if spec.prefer_speed:
        variant = policy.model(entry).speed_variant
        entry = policy.resolve(variant) if variant else entry
    steps = _steps(policy, role, entry, chain)

    if state.local_only:
        blocked = [
            Skip(model=step.model_id, runtime="cloud", reason="local_only", detail="GR-009")
            for step in steps
        ]
        return stay_local(
            blocked,
            [
                "GR-009: local_only forbids every cloud call; the trigger is recorded and the "
                "role stays local"
            ],
        )

    skips: list[Skip] = []
    for index, (model_id, known, step_no, catalog_window, thinking, other_roles_only) in enumerate(
        steps
    ):
        model = known if known is not None else policy.model(model_id)  # (a KeyError)
        if model_id in state.denied:
            skips.append(Skip(model=model_id, runtime="cloud", reason="denied"))
            continue
        if other_roles_only and index == 0:
            skips.append(
                Skip(
                    model=model_id,
                    runtime="cloud",
                    reason="escalation_only",
                    detail=f"escalation-only for {', '.join(model.escalation_only_roles)}",
                )
            )
            continue
        if model_id in state.unavailable:
            skips.append(
                Skip(
                    model=model_id,
                    runtime="cloud",
                    reason="unavailable",
                    detail=state.unavailable[model_id],
                )
            )
            continue
        if not state.health.get(model_id, True):
            skips.append(Skip(model=model_id, runtime="cloud", reason="unhealthy"))
            continue
        if model_id in state.failed:
            skips.append(
                Skip(
                    model=model_id, runtime="cloud", reason="failed", detail=state.failed[model_id]
                )
            )
            continue
        window = state.context_windows.get(model_id, catalog_window)
        if tokens_in + schema + tokens_out > window:
            skips.append(
                Skip(
                    model=model_id,
                    runtime="cloud",
                    reason="context_too_small",
                    detail=f"needs ~{tokens_in + schema + tokens_out} tokens, window {window}",
                )
            )
            continue
        # a reasoning model's thinking is billed as output: the reservation covers it
        est = cost_usd(model, cost_tokens_in + schema, tokens_out + thinking)
        left = state.budget_left(model.provider)
        if est > left:
            skips.append(
                Skip(
                    model=model_id,
                    runtime="cloud",
                    reason="budget",
                    detail=f"estimated {dollars(est)} > {dollars(left)} left",
                )
            )
            continue
        if tokens_in == 0:
            notes.append(f"cost assumes a {DEFAULT_PROMPT_TOKENS}-token prompt")
        return Decision(
            role=role,
            action="escalate",
            policy_version=version,
            target=model_id,
            provider=model.provider,
            runtime="cloud",
            reasons=reasons,
            needs_approval=model_id not in state.approved,
            est_tokens_in=tokens_in,
            est_tokens_out=tokens_out,
            est_cost_usd=est,
            chain=chain,
            chain_step=step_no,
            skipped=local_skips + skips,
            local=local,
            notes=notes,
        )
    return stay_local(
        skips, ["every cloud step was skipped: the escalation is unavailable, staying local"]
    )


def _advisory(spec: Role, role: str, fired: bool) -> list[str]:
    """A cloud role served locally, whether no trigger fired or every cloud step was
    blocked: its local stand-in only advises, and a local Judge's verdict never merges."""
    if spec.locality != "cloud" or spec.sidecar:
        return []
    why = (
        "every cloud step was blocked"
        if fired
        else "cloud only on its trigger or the user's request"
    )
    merge = " (a local verdict can never approve a merge, GR-003)" if role == "judge" else ""
    return [f"{spec.title}: {why}; served by the local stand-in, whose output is advisory{merge}"]
