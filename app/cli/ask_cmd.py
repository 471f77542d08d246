"""``switchyard ask``: one routed request to whatever serves the role."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from app.backends.jsonschema_lint import schema_problem
from app.cli import audit_lines
from app.cli.common import (
    add_json_arg,
    add_policy_arg,
    add_session_args,
    console,
    policy_from,
    print_json,
    run_stoppable,
    settings_from,
)
from app.cli.route_cmd import parse_signals
from app.counted import counted
from app.dollars import dollars
from app.errors import AuditTamperError, AuditUnreadable, SwitchyardError, UsageError

DEFAULT_SYSTEM = "You are a concise, accurate assistant for a software developer."


def register(sub: Any) -> None:
    p = sub.add_parser(
        "ask",
        help="one routed request, streamed to the terminal",
        description="Route PROMPT for ROLE through the policy, stream the answer, then print "
        "the model, tokens, cost and the audit lines the request produced.",
    )
    p.add_argument("prompt", help="the request text")
    p.add_argument("--role", required=True, help="role id, e.g. tutor, architect, implementer")
    p.add_argument("--signal", action="append", default=[], metavar="KEY=VALUE")
    add_session_args(p)
    p.add_argument("--schema", type=Path, metavar="FILE", help="JSON schema the answer must fit")
    p.add_argument("--max-tokens", type=int, default=256, metavar="N")
    p.add_argument("--system", default=DEFAULT_SYSTEM, help="system prompt")
    add_policy_arg(p)
    add_json_arg(p)
    p.set_defaults(handler=_ask)


def _load_schema(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--schema {path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"--schema {path}: is a directory") from None
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"--schema {path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--schema {path}: cannot read: {exc}") from None
    except RecursionError:
        raise UsageError(f"--schema {path}: nested too deeply to be a schema") from None
    if not isinstance(data, dict) or data.get("type") not in ("object", None):
        raise UsageError(f"--schema {path}: expected a JSON schema object with type 'object'")
    try:
        problem = schema_problem(data)
    except RecursionError:
        raise UsageError(f"--schema {path}: nested too deeply to be a schema") from None
    if problem:
        raise UsageError(f"--schema {path}: {problem}")
    return data


def _ask(args: argparse.Namespace) -> int:
    if not args.prompt.strip():  # nothing to ask: no model is called for it
        raise UsageError("the PROMPT is empty")
    if args.max_tokens <= 0:
        raise UsageError("--max-tokens must be > 0")
    settings = settings_from(args)
    policy = policy_from(args, settings).policy
    if args.role not in policy.roles:
        raise UsageError(f"--role {args.role}: unknown role (known: {', '.join(policy.roles)})")
    if policy.roles[args.role].kind != "llm":
        chat = ", ".join(r for r, spec in policy.roles.items() if spec.kind == "llm")
        raise UsageError(
            f"--role {args.role}: a role of kind {policy.roles[args.role].kind} answers no chat "
            f"request (chat roles: {chat})"
        )
    signals = parse_signals(args.signal)
    schema = _load_schema(args.schema) if args.schema else None
    open_line: list[bool] = [False]  # the streamed reply's last line is not ended
    try:
        return run_stoppable(_run(args, settings, policy, signals, schema, open_line))
    except SwitchyardError:
        # an error after part of the reply (the team ledger gone mid-call) starts on a
        # line of its own, not glued to the reply's last word
        if open_line[0]:
            sys.stdout.write("\n")
            sys.stdout.flush()
        raise


async def _run(
    args: argparse.Namespace,
    settings: Any,
    policy: Any,
    signals: Any,
    schema: Any,
    open_line: list[bool],
) -> int:
    from app.backends.base import ChatRequest, Delta, Message
    from app.backends.schema_notes import json_only_instruction
    from app.cli.terminal_decider import decider_for
    from app.config import approve_setting
    from app.router.session import open_session
    from app.shown import clean

    out = console()
    # The schema spelt for every model (a local server may not decode to it: an older
    # vLLM, Ollama, a review), in the words a cloud backend's own note has: it sees them
    # there and adds none (it was sent the schema twice: a user audit)
    system = args.system
    if schema is not None:
        system += "\n\n" + json_only_instruction(schema)
    messages = [Message(role="system", content=system)]
    messages.append(Message(role="user", content=args.prompt))
    request = ChatRequest(messages=messages, max_tokens=args.max_tokens, json_schema=schema)
    streamed = not args.json and schema is None
    # The reply goes out as it is to a pipe (it is the command's output); on a terminal
    # its control characters are shown, not obeyed (an ESC in a reply: app/shown.py).
    on_terminal = sys.stdout.isatty()

    def shown(text: str) -> str:
        return clean(text) if on_terminal else text

    async def on_delta(delta: Delta) -> None:
        if streamed and delta.text:
            sys.stdout.write(shown(delta.text))
            sys.stdout.flush()
            open_line[0] = not delta.text.endswith("\n")

    async with open_session(
        settings,
        policy,
        decider=decider_for(*approve_setting(settings, args.approve)),
        local_only=args.local_only,
    ) as session:
        from app.router.service import RouteFailed, RouteRefused
        from app.router.structured import complete_structured, schema_parser

        failure: str | None = None
        result = None
        earlier = None  # a rejected first reply, when a repair followed (GR-012)
        parsed: Any = None
        try:
            if schema is None:
                result = await session.router.complete(
                    args.role, request, signals, on_delta=on_delta
                )
            else:
                # GR-012's one owner validates the reply and makes the one repair
                answer = await complete_structured(
                    session.router, args.role, request, schema_parser(schema), signals
                )
                result, parsed, failure = answer.result, answer.value, answer.error
                earlier = answer.earlier
                if failure is not None and answer.rejected:
                    failure = (
                        f"no answer fits the schema after {counted(answer.calls, 'generation')} "
                        f"(one repair, GR-012): {'; '.join(answer.problems[-1:])}"
                    )
        except (RouteRefused, RouteFailed) as exc:
            failure = str(exc)
        try:
            lines = await session.audit.lines(session=session.id)
        except (AuditTamperError, AuditUnreadable):
            raise  # a broken chain is no store's passing trouble: it still fails
        except SwitchyardError as exc:  # a full disk, the team database gone meanwhile
            # shown, not the answer: the call's lines stand in the spool (each was written
            # before its step), and reading them back folds them, which a full disk
            # refuses; a paid answer was lost to that, and exit 1 said it had failed
            print(f"switchyard: this request's audit lines cannot be shown: {exc}", file=sys.stderr)
            lines = []

    if streamed and result is not None:
        sys.stdout.write("\n")
    # a repaired answer was two paid calls: both are counted, as the ledger counts them
    paid = [r for r in (earlier, result) if r is not None]
    tokens_in = sum(r.tokens_in for r in paid)
    tokens_out = sum(r.tokens_out for r in paid)
    cost = sum(r.cost_usd for r in paid)

    if args.json:
        data: dict[str, Any] = {
            "session": session.id,
            "role": args.role,
            "ok": failure is None,
            "error": failure,
            "audit": [line.model_dump(mode="json", by_alias=True) for line in lines],
        }
        if result is not None:
            data.update(
                model=result.model,
                runtime=result.runtime,
                provider=result.provider,
                escalated=result.escalated,
                text=result.text,
                json=parsed,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                generations=len(paid),
                usage_counted_locally=result.usage_counted_locally,
                cost_usd=round(cost, 9),  # nano-dollars, as the ledger holds it
                latency_ms=round(result.latency_ms, 1),
                finish_reason=result.finish_reason,
            )
        print_json(data)
        return 0 if failure is None else 1

    if result is not None and schema is not None:
        sys.stdout.write(shown(result.text) + "\n")
    out.print()
    if result is not None:
        locally = " (counted locally)" if result.usage_counted_locally else ""
        out.print(
            f"[bold]model[/] {result.model} · {result.runtime} · [bold]tokens[/] "
            f"{tokens_in} in / {tokens_out} out{locally} · [bold]cost[/] "
            f"{dollars(cost)} · {result.latency_ms / 1000:.1f}s"
            + (f" · {len(paid)} generations (one repair)" if len(paid) > 1 else "")
        )
    out.print(f"[bold]audit[/] (session {session.id})")
    audit_lines.print_brief(out, lines)
    if failure is not None:
        out.print("[bold red]stopped:[/] ", end="")
        out.print(str(failure), markup=False)
        return 1
    assert result is not None
    if not result.escalated and result.decision.reasons:
        codes = ", ".join(result.decision.reason_codes)
        out.print(
            f"[bold]final:[/] {codes} fired, but no cloud step could serve; "
            f"answered locally by {result.model}"
        )
    return 0
