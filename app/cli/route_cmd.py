"""``switchyard route explain``: the decision for a role, without calling any model."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import uuid
from typing import Any, get_args

from pydantic import ValidationError

from app.backends.local_only import effective_local_only
from app.cli.common import (
    add_json_arg,
    add_policy_arg,
    add_session_args,
    an_id,
    console,
    policy_from,
    print_json,
    settings_from,
)
from app.config import Settings
from app.dollars import dollars
from app.errors import UsageError
from app.policy.schema import Policy
from app.router.decide import DEFAULT_PROMPT_TOKENS, decide
from app.router.types import Decision, RouterState, Signals

_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n"}


def register(sub: Any) -> None:
    p = sub.add_parser("route", help="explain routing decisions")
    rsub = p.add_subparsers(dest="route_command", metavar="ACTION", required=True)
    ex = rsub.add_parser(
        "explain",
        help="print the decision for a role without calling any model",
        description="Evaluate the policy for ROLE with the given signals. Nothing is sent.",
    )
    ex.add_argument("--role", required=True, help="role id, e.g. architect, implementer")
    ex.add_argument(
        "--signal",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a §3 signal, e.g. confidence=0.74, failed_loops=2, context_estimate=120000",
    )
    add_session_args(ex, with_approve=False)
    ex.add_argument(
        "--approved",
        action="append",
        default=[],
        metavar="MODEL",
        help="treat MODEL as already approved for the session",
    )
    ex.add_argument(
        "--session",
        metavar="S",
        type=an_id,
        help="the session whose spend counts against its cap (default: a new session)",
    )
    ex.add_argument(
        "--budget-left",
        type=_usd,
        metavar="USD",
        help="assume this much is left under every cap (default: the caps less the "
        "ledger's spend and reservations, as a request would see them)",
    )
    ex.add_argument(
        "--with-keys",
        action="store_true",
        help="skip cloud models whose API key is not set, as a real request would",
    )
    ex.add_argument(
        "--probe",
        action="store_true",
        help="ask the local runtimes which are up (as `local status` does), so the local "
        "target is the one a request would get now",
    )
    add_policy_arg(ex)
    add_json_arg(ex)
    ex.set_defaults(handler=_explain)


def _usd(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite amount >= 0, got {text}")
    return value


def parse_signals(pairs: list[str]) -> Signals:
    # grounds explain a signal's value (a grounded confidence's checks): not a signal
    fields = {k: f for k, f in Signals.model_fields.items() if k != "grounds"}
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--signal {pair!r}: expected KEY=VALUE")
        if key not in fields:
            raise UsageError(f"--signal {key}: unknown signal (known: {', '.join(sorted(fields))})")
        if key in values:  # the last one won, unsaid
            raise UsageError(f"--signal {key}: given twice; give each signal once")
        kinds = set(get_args(fields[key].annotation)) or {fields[key].annotation}
        text = raw.strip().lower()
        try:
            if not text.isascii():  # int() and float() read "０.５" (full-width) as 0.5
                raise ValueError("expected ASCII digits")
            if bool in kinds:
                if text not in _TRUE | _FALSE:
                    raise ValueError("expected true or false")
                values[key] = text in _TRUE
            elif int in kinds:
                try:
                    values[key] = int(text)
                except ValueError:
                    raise ValueError("expected a whole number") from None
            else:
                try:
                    values[key] = float(text)
                except ValueError:
                    raise ValueError("expected a number") from None
        except ValueError as exc:
            raise UsageError(f"--signal {key}={raw}: {exc}") from None
    try:
        return Signals(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise UsageError(f"--signal {key}={values.get(key)}: {first['msg']}") from None


def missing_keys(policy: Policy) -> dict[str, str]:
    """Cloud models whose provider's key variable is not set (names only, never values)."""
    out = {}
    for mid, model in policy.models.items():
        prov = policy.providers[model.provider]
        if model.provider != "local" and prov.api_key_env and not os.environ.get(prov.api_key_env):
            out[mid] = f"no key: {prov.api_key_env} not set"
    return out


def _explain(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    loaded = policy_from(args, settings)
    policy = loaded.policy
    if args.role not in policy.roles:
        raise UsageError(f"--role {args.role}: unknown role (known: {', '.join(policy.roles)})")
    signals = parse_signals(args.signal)
    for m in args.approved:
        if policy.resolve(m) not in policy.models:
            raise UsageError(f"--approved {m}: unknown model")
    keys = missing_keys(policy)
    local_only = effective_local_only(policy, settings, args.local_only)
    providers = [name for name in policy.providers if name != "local"]
    if args.budget_left is not None:
        left = dict.fromkeys(providers, args.budget_left)
    else:
        left = asyncio.run(_ledger_left(settings, policy, local_only, args.session, providers))
    health: dict[str, bool] = {}
    windows: dict[str, int] = {}
    endpoints: dict[str, Any] = {}
    if args.probe:
        from app.backends.local_status import chain_health, inprocess_status, probe_local_chain

        # the settings carry --local-only: under it a remote runtime is refused, unprobed
        probing = settings.model_copy(update={"local_only": local_only})
        endpoints = probe_local_chain(policy, probing)
        health, windows = chain_health(policy, endpoints, inprocess_status(policy))
    state = RouterState(
        local_only=local_only,
        provider_left_usd=left,
        approved=frozenset(policy.resolve(m) for m in args.approved),
        unavailable=keys if args.with_keys else {},
        health=health,
        context_windows=windows,
    )
    decision = decide(policy, args.role, signals, state)
    unlisted = _unlisted(policy, decision, endpoints)
    if unlisted:
        decision = decision.model_copy(update={"notes": [*decision.notes, unlisted]})
    reasoning = _reasoning_tokens(policy, decision)
    if args.json:
        data = decision.model_dump(mode="json")
        data["reason_codes"] = decision.reason_codes
        data["est_reasoning_tokens"] = reasoning
        data["local_only"] = state.local_only
        data["runtimes_probed"] = args.probe
        data["budget_left_usd"] = left
        data["budget_from"] = "ledger" if args.budget_left is None else "--budget-left"
        # the text's "note no key" (a script could not tell the target would be skipped)
        data["target_key_missing"] = (
            keys.get(d_target) if (d_target := decision.target) and not args.with_keys else None
        )
        print_json(data)
    else:
        render(
            decision,
            state,
            keys if not args.with_keys else {},
            probed=args.probe,
            reasoning=reasoning,
        )
        _render_budget(left, args)
    return 0


async def _ledger_left(
    settings: Settings, policy: Policy, local_only: bool, session: str | None, providers: list[str]
) -> dict[str, float]:
    """What a request of ``session`` would see left per provider now (GR-011): the
    session, day and provider-day caps less the ledger's spend and live reservations, the
    read the router makes before each decision. A new session has spent nothing.

    Explaining writes nothing: with no ledger file yet nothing was spent anywhere, and
    the file is not made for the question."""
    from app.router.ledger.caps import Caps, Sums
    from app.router.stores import database_url, open_ledger

    if database_url(settings) is None and not settings.ledger_db.exists():
        return Caps.of(policy.budget).left_usd(Sums(), providers)
    async with await open_ledger(
        settings, policy.budget, local_only=local_only, named=policy.named_local_hosts()
    ) as ledger:
        return await ledger.left_usd_many(session or f"explain-{uuid.uuid4().hex}", providers)


def _render_budget(left: dict[str, float], args: argparse.Namespace) -> None:
    if not left:
        return
    session = f"session {args.session}" if args.session else "a new session"
    where = (
        "--budget-left" if args.budget_left is not None else f"the caps less the ledger, {session}"
    )
    amounts = ", ".join(f"{p} ${v:,.2f}" for p, v in sorted(left.items()))
    console().print(f"  [dim]budget    left: {amounts} ({where})[/]")


def _tokens_in(d: Decision) -> str:
    """The prompt the estimate priced: the request's, or the one decide() assumed."""
    return str(d.est_tokens_in) if d.est_tokens_in else f"{DEFAULT_PROMPT_TOKENS} assumed"


def _reasoning_tokens(policy: Policy, d: Decision) -> int:
    """The thinking the target is billed for as output (decide() prices it with the
    reply's tokens): 0 for a model that does not reason, or no target."""
    model = policy.models.get(policy.resolve(d.target)) if d.target else None
    return policy.generation.reasoning_tokens(model.reasoning_effort) if model else 0


def _unlisted(policy: Policy, d: Decision, endpoints: dict[str, Any]) -> str | None:
    """A runtime that answers but does not list the model: the router still picks it (it
    is up) and falls back when the call is refused, so say so before anyone is surprised."""
    if d.local is None or d.local.runtime not in endpoints:
        return None
    model = policy.models[d.local.model]
    served = endpoints[d.local.runtime].models
    if model.served_name in served or d.local.model in served:
        return None
    return (
        f"{d.local.runtime} is up but does not list {model.served_name}: a request falls "
        "back to the next runtime of the chain when the call is refused"
    )


def render(
    d: Decision,
    state: RouterState,
    key_notes: dict[str, str],
    *,
    probed: bool = True,
    reasoning: int = 0,
) -> None:
    from rich.markup import escape

    out = console()
    # a policy file's names are any text: never markup
    target, provider, runtime = (escape(str(x)) for x in (d.target, d.provider, d.runtime))
    head = {
        "escalate": f"[bold yellow]ESCALATE[/] → [bold]{target}[/] ({provider}, cloud)",
        "local": f"[bold green]LOCAL[/] → [bold]{target}[/] on {runtime}",
        "refuse": f"[bold red]REFUSED[/] ({d.refusal_code})",
    }[d.action]
    if d.action == "escalate":
        head += " [yellow]· approval required[/]" if d.needs_approval else " · pre-approved"
    out.print(f"[bold]{escape(d.role)}[/]: {head}   [dim]policy {d.policy_version}[/]")
    if state.local_only:
        out.print("  [magenta]local_only is ON (GR-009): no cloud model can be chosen[/]")
    if d.reasons:
        out.print("  [bold]triggers[/]")
        for r in d.reasons:
            out.print(f"    {r.code:<34} {escape(r.text)}   [dim]({escape(r.trigger)})[/]")
    else:
        out.print("  triggers: none fired")
    if d.chain:
        chain = " → ".join(
            f"[bold]{escape(m)}[/]" if d.action == "escalate" and m == d.target else escape(m)
            for m in d.chain
        )
        out.print(f"  chain     {chain}")
    if d.action == "escalate":
        out.print(
            f"  cost      est {dollars(d.est_cost_usd)} "
            f"({_tokens_in(d)} in / {d.est_tokens_out} out"
            f"{f' + {reasoning} reasoning' if reasoning else ''})"
        )
        if d.target in key_notes:
            note = escape(key_notes[d.target])
            out.print(
                f"  [yellow]note[/]      {note}: at call time this step is skipped "
                "as unavailable and the next one is tried"
            )
    if d.local is not None:
        label = "if denied" if d.action == "escalate" else "serves"
        sub = f" [yellow](runtime fallback from {d.local.substituted_for})[/]"
        out.print(
            f"  local     {d.local.model} on {d.local.runtime} ({label}, window "
            f"{d.local.context_window}){sub if d.local.substituted_for else ''}"
        )
        if not probed and d.local.runtime != "sentence_transformers":
            out.print(
                "  [dim]          the runtimes were not asked: the chain's first is named "
                "(--probe asks which are up)[/]"
            )
        if d.local.condense:
            out.print(
                "  [cyan]note[/]      the prompt exceeds every local window, so the first "
                "healthy one is tried: a pipeline run (`run`, the editor agent's pipeline "
                "mode) has the Librarian condense its brief to fit (map, then reduce); a "
                "gateway or `ask` request this long fails as too long (the gateway says "
                "'prompt is too long', so the client compacts)"
            )
    for s in d.skipped:
        # a runtime's probe can answer with any words: never markup
        skipped = escape(f"{s.model} @ {s.runtime}: {s.reason} {s.detail}")
        out.print(f"  [dim]skipped   {skipped}[/]")
    for n in d.notes:
        out.print(f"  [cyan]note[/]      {escape(n)}")
