"""``switchyard serve``: the HTTP gateway (OpenAI Chat Completions and Responses,
Anthropic Messages) over the router, for Codex CLI, Claude Code, aider and Continue."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import sys
from typing import Any

from app.cli.common import add_policy_arg, add_session_args, policy_from, settings_from
from app.errors import UsageError
from app.hosts import is_loopback_name

TOKEN_ENV = "SWITCHYARD_GATEWAY_TOKEN"
#: the largest ``--max-body-mb``: a GiB is far past any agent's request (Claude Code's
#: long sessions are about 1 MB), and ``1e9`` (a petabyte) was accepted
MAX_BODY_MB = 1024
#: the shortest token a gateway bound off loopback takes: every machine that reaches the
#: address may guess it (a one-character token was accepted)
MIN_TOKEN_CHARS = 16
TOKEN_MAKER = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="the HTTP gateway: your coding agent's requests under the policy",
        description="Serve OpenAI Chat Completions, OpenAI Responses and Anthropic Messages "
        "on HOST:PORT. Every request is routed by the policy: the model id is a role "
        "(architect, implementer, librarian, tutor, auto, or an alias such as Claude "
        "Code's own names); escalations need approval and budget; everything is audited.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=4000, help="port (default 4000; 0: any free)")
    p.add_argument(
        "--token",
        help=f"a token every request must carry (Authorization: Bearer, or x-api-key); "
        f"required off loopback, {MIN_TOKEN_CHARS} characters or more there; also ${TOKEN_ENV}",
    )
    p.add_argument(
        "--max-body-mb",
        type=float,
        default=16.0,
        metavar="MB",
        help=f"request size limit (default 16, at most {MAX_BODY_MB})",
    )
    p.add_argument(
        "--tui",
        action="store_true",
        help="run inside the workbench: live traffic, and approvals by keypress",
    )
    add_session_args(p)
    add_policy_arg(p)
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: not a port number")
    max_body = body_limit(args.max_body_mb)
    token = args.token or os.environ.get(TOKEN_ENV) or None
    if not is_loopback_name(args.host):
        check_remote_token(args.host, token)
    settings = settings_from(args)
    policy = policy_from(args, settings).policy
    from app.gateway.app import GatewayConfig

    config = GatewayConfig(max_body_bytes=max_body, token=token)
    check_listen(args.host, args.port)
    if args.tui:
        from app.cli.tui_cmd import run_gateway_workbench

        return run_gateway_workbench(args, settings, policy, config)
    return _run(_headless(args, settings, policy, config))


def check_listen(host: str, port: int) -> None:
    """Refuse an address that cannot be listened on before a session opens: the bind
    failed after it, as uvicorn's own error and exit 3. Port 0 (any free port) is checked
    too: a host that does not resolve was exit 3 with it."""
    from app.hosts import bind_error

    why = bind_error(host, port)
    if why is not None:
        flag = f"--port {port}" if port else f"--host {host}"
        where = f"{host}:{port}" if port else host
        raise UsageError(f"{flag}: cannot listen on {where}: {why}")


def check_remote_token(host: str, token: str | None) -> None:
    """A gateway bound off loopback needs a token, and one no one guesses: at least
    :data:`MIN_TOKEN_CHARS` characters (its length is said, never the token)."""
    how = f"make one with: {TOKEN_MAKER}"
    if token is None:
        raise UsageError(
            f"--host {host}: binding off loopback needs a token (--token or ${TOKEN_ENV}); "
            f"every request must then carry it ({how})"
        )
    if len(token) < MIN_TOKEN_CHARS:
        had = f"{len(token)} character" + ("" if len(token) == 1 else "s")
        raise UsageError(
            f"--host {host}: the token (--token or ${TOKEN_ENV}) has {had}; off loopback "
            f"it needs {MIN_TOKEN_CHARS} or more, as anyone who reaches the address may "
            f"guess it ({how})"
        )


def body_limit(mb: float) -> int:
    """``--max-body-mb`` in bytes: a finite size of at least one byte and at most
    :data:`MAX_BODY_MB` (argparse's float() takes ``nan`` and ``inf``, ``1e-9`` would
    truncate to a limit of nothing, and ``1e9`` is a petabyte)."""
    if not math.isfinite(mb) or mb <= 0:
        raise UsageError(f"--max-body-mb {mb}: must be a finite number > 0")
    if mb > MAX_BODY_MB:
        raise UsageError(
            f"--max-body-mb {mb:g}: at most {MAX_BODY_MB} (MB; the default is 16, and an "
            "agent's requests are about 1)"
        )
    size = int(mb * 1024 * 1024)
    if size < 1:
        raise UsageError(f"--max-body-mb {mb}: under one byte")
    return size


def listening_line(host: str, port: int) -> str:
    from app.hosts import http_url

    url = http_url(host, port)
    return (
        f"switchyard serve: listening on {url} (OpenAI base URL {url}/v1; Anthropic base URL {url})"
    )


def session_line(session: str, cap_usd: float) -> str:
    """The session ``serve`` is, and what its cap covers: every request it serves, from
    every client, until it stops (a gateway left running days spent the cap on the first
    and served locally after, with nothing said at start: a long-life audit)."""
    from app.dollars import dollars

    return (
        f"switchyard serve: session {session}; its cap (session_usd {dollars(cap_usd)}) covers"
        " every request served until serve stops"
    )


def serving_terms(local_only: bool, mode: str, said: str) -> str:
    """What the server will do with an escalation, said before the first one comes: a
    server left to ask with no terminal denied every one ("no terminal") unannounced."""
    if local_only:
        return "switchyard serve: local_only is on: no request leaves this machine"
    # "off" in words: a server without the "on" line read as one whose state was unknown
    if mode == "ask" and not sys.stdin.isatty():
        return (
            "switchyard serve: local_only is off; approvals: ask, but stdin is not a terminal: "
            "every escalation is denied (use --tui to approve by keypress, or --approve allow)"
        )
    from app.cli.terminal_decider import in_background

    if mode == "ask" and in_background(sys.stdin):
        # (each prompt looks again: after fg, escalations are asked)
        return (
            "switchyard serve: local_only is off; approvals: ask, but this is a background "
            "job: escalations are denied while it is (fg to bring it to the foreground and "
            "approve here)"
        )
    # (a line is read, not a key: app/cli/terminal_decider.py says why)
    asked = "asked here, each answered with a letter and Enter"
    how = {"ask": asked, "allow": "allowed", "deny": "denied"}[mode]
    return f"switchyard serve: local_only is off: escalations are {how} ({said}), inside the budget"


def _run(coro: Any) -> int:
    try:
        import uvloop
    except ImportError:
        return int(asyncio.run(coro))
    return int(uvloop.run(coro))


async def _headless(args: argparse.Namespace, settings: Any, policy: Any, config: Any) -> int:
    from app.cli.terminal_decider import decider_for
    from app.config import approve_setting
    from app.gateway.server import serve
    from app.router.session import open_session

    def ready(host: str, port: int) -> None:
        print(listening_line(host, port), file=sys.stderr, flush=True)

    mode, said = approve_setting(settings, args.approve)
    async with open_session(
        settings, policy, decider=decider_for(mode, said), local_only=args.local_only
    ) as session:
        print(
            session_line(session.id, session.policy.budget.session_usd),
            file=sys.stderr,
            flush=True,
        )
        print(serving_terms(session.local_only, mode, said), file=sys.stderr, flush=True)
        stopped_by = await serve(
            session, host=args.host, port=args.port, config=config, on_ready=ready
        )
    if stopped_by is None:
        return 0
    # the session is closed, its stores with it: now exit as the signal says (130, 143)
    print(f"switchyard serve: stopped ({signal.Signals(stopped_by).name})", file=sys.stderr)
    return 128 + stopped_by
