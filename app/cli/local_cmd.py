"""``switchyard local serve|status|plan``: the local runtimes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from app.cli.common import (
    add_json_arg,
    add_policy_arg,
    console,
    policy_from,
    print_json,
    settings_from,
)
from app.errors import UsageError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "local", help="start, check and plan the local model runtimes (serve, status, plan)"
    )
    lsub = p.add_subparsers(dest="local_command", metavar="ACTION", required=True)

    serve = lsub.add_parser(
        "serve",
        help="start a role's model on vLLM (GPU) or llama.cpp's server, until Ctrl-C",
        description="Start a role's model on vLLM (GPU) or llama.cpp's server, until Ctrl-C. "
        "The server gets an allowlisted environment (no provider keys). Under local_only it "
        "starts offline, and a model that is neither a local path nor in the Hugging Face "
        "cache is refused (exit 2): fetch it first while local_only is off.",
    )
    serve.add_argument("--role", required=True, help="a local LLM role, e.g. implementer")
    serve.add_argument(
        "--runtime",
        choices=("auto", "vllm", "llamacpp_server"),
        default="auto",
        help="auto: vLLM when it is installed and a GPU is present, else llama.cpp's server",
    )
    serve.add_argument("--port", type=int, help="default: the port of the runtime's URL; 0: any")
    serve.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    serve.add_argument(
        "--allow-lan",
        action="store_true",
        help="listen on an address other than loopback: the model server has no "
        "authentication, so anyone who can reach the port can use it",
    )
    serve.add_argument(
        "--gguf", type=Path, metavar="FILE", help="the role's GGUF (llama.cpp); default: embedded"
    )
    serve.add_argument("--n-ctx", type=int, metavar="N", help="cap the context window")
    serve.add_argument("--gpu-gb", type=float, metavar="N", help="VRAM to plan for (vLLM)")
    serve.add_argument("--timeout", type=float, metavar="S", help="seconds to wait for health")
    serve.add_argument("--dry-run", action="store_true", help="print the command, start nothing")
    add_policy_arg(serve)
    serve.add_argument("--json", action="store_true", help="with --dry-run: print the plan as JSON")
    serve.set_defaults(handler=_serve)

    status = lsub.add_parser("status", help="probe each local runtime (1 s timeout each)")
    add_policy_arg(status)
    add_json_arg(status)
    status.set_defaults(handler=_status)

    plan = lsub.add_parser("plan", help="which local models fit on the GPU together")
    plan.add_argument("--gpu-gb", type=float, metavar="N", help="VRAM in GiB (default: policy)")
    plan.add_argument(
        "--context",
        action="append",
        default=[],
        metavar="MODEL=N",
        help="plan MODEL with a window of N tokens (repeatable)",
    )
    add_policy_arg(plan)
    add_json_arg(plan)
    plan.set_defaults(handler=_plan)


# ── serve ────────────────────────────────────────────────────────────────────────────────


def _serve(args: argparse.Namespace) -> int:
    from app.backends import launcher
    from app.backends.local_only import effective_local_only
    from app.backends.supervisor import supervise

    settings = settings_from(args)
    policy = policy_from(args, settings).policy
    # under local_only the model must already be here, and the server starts offline
    local_only = effective_local_only(policy, settings)
    if args.json and not args.dry_run:
        # a running server says how it goes as lines ("starting", "ready", "stopping"):
        # --json printed them as prose, which a JSON reader cannot take
        raise UsageError("--json goes with --dry-run: a running server reports in lines")
    if args.port is not None and not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: not a port number")
    _check_host(args.host, args.allow_lan)
    from app.hosts import is_loopback_name

    if not is_loopback_name(args.host):
        print(
            f"note: listening on {args.host} (--allow-lan): no authentication; anyone who "
            "reaches the port can use the model",
            file=sys.stderr,
        )
    if args.n_ctx is not None and args.n_ctx < 256:
        raise UsageError("--n-ctx must be at least 256")
    # `not 0 < x` refuses a NaN too (it was a ValueError traceback, and a "--timeout nan"
    # waited "within nans")
    if args.gpu_gb is not None and not 0 < args.gpu_gb <= 4096:
        raise UsageError(
            f"--gpu-gb {args.gpu_gb:g}: expected a size in GiB, above 0 and up to 4096"
        )
    if args.timeout is not None and not 0 < args.timeout <= 86400:
        raise UsageError(f"--timeout {args.timeout:g}: expected seconds, more than 0")
    spec = launcher.plan_serve(
        policy,
        settings,
        args.role,
        runtime=args.runtime,
        port=args.port,
        host=args.host,
        gguf=args.gguf,
        n_ctx=args.n_ctx,
        gpu_gb=args.gpu_gb,
        local_only=local_only,
    )
    if args.dry_run:
        if args.json:
            print_json(spec.model_dump())
        else:
            for note in spec.notes:
                print(f"note: {note}")
            print(" ".join(spec.argv))
        return 0
    _nobody_answers(spec.base_url)
    launcher.check_runnable(spec)
    timeout = args.timeout if args.timeout is not None else spec.timeout_s
    log_path = settings.data_dir / "logs" / f"serve-{spec.role}-{spec.runtime}.log"
    for note in spec.notes:
        print(f"note: {note}", file=sys.stderr)
    what = f"{spec.model} for role {spec.role} on {spec.runtime}"
    print(f"starting {what} at {spec.base_url} (log: {log_path})", flush=True)
    return supervise(
        spec.argv,
        spec.base_url,
        log_path=log_path,
        timeout_s=timeout,
        out=sys.stdout,
        env=launcher.serve_env(policy, local_only=local_only),
    )


def _check_host(host: str, allow_lan: bool) -> None:
    """A listen address this machine has, and loopback unless ``--allow-lan``: the
    servers (vLLM, llama.cpp's) take no key, and ``--host 0.0.0.0`` served the model to
    the whole network without a word, local_only or not."""
    from app.hosts import bind_error, is_loopback_name, valid_host

    if not host.strip() or not valid_host(host):
        raise UsageError(f"--host {host!r}: not a host name or an address")
    if not is_loopback_name(host) and not allow_lan:
        raise UsageError(
            f"--host {host}: the model server would listen beyond this machine with no "
            "authentication (anyone who reaches the port can use it); pass --allow-lan "
            "to do it anyway, behind a firewall"
        )
    problem = bind_error(host, 0)  # a name that resolves nowhere, an address not here
    if problem is not None:
        raise UsageError(f"--host {host}: cannot listen there: {problem}")


def _nobody_answers(base_url: str) -> None:
    """Another server already answers where this one would listen: the health wait would
    take its answer for ours (it said "ready" over a child that had failed to bind)."""
    from app.backends.probe import probe_endpoint

    if probe_endpoint("server", base_url).up:
        raise UsageError(
            f"a server already answers at {base_url}: stop it or choose another --port "
            "(see `switchyard local status`)"
        )


# ── status ───────────────────────────────────────────────────────────────────────────────


def _status(args: argparse.Namespace) -> int:
    from app.backends.local_status import local_status

    settings = settings_from(args)
    policy = policy_from(args, settings).policy
    status = local_status(policy, settings)
    if args.json:
        data = status.model_dump()
        for ep, raw in zip(status.endpoints, data["endpoints"], strict=True):
            raw["up"] = ep.up
        print_json(data)
        return 0

    from rich.table import Table

    out = console()
    eps = Table(title="Local runtimes", title_justify="left")
    for col in ("Runtime", "Endpoint", "State", "Latency", "Models / detail"):
        eps.add_column(col, overflow="fold")
    for ep in status.endpoints:
        colour = {"up": "green", "down": "red", "refused": "yellow", "error": "red"}[ep.state]
        latency = f"{ep.latency_ms:.0f} ms" if ep.latency_ms is not None else "—"
        eps.add_row(
            ep.runtime,
            ep.base_url,
            f"[{colour}]{ep.state}[/]",
            latency,
            ", ".join(ep.models) or ep.detail,
        )
    ip = status.inprocess
    eps.add_row(
        ip.runtime,
        "in-process",
        "[green]available[/]" if ip.available else "[red]unavailable[/]",
        "—",
        f"{ip.model}: {ip.detail}" + (f", window {ip.context_window}" if ip.context_window else ""),
    )
    out.print(eps)

    roles = Table(title="Local roles", title_justify="left")
    for col in ("Role", "Model", "Served by now", "Chain"):
        roles.add_column(col, overflow="fold")
    for r in status.roles:
        serving = r.serving or "[red]nothing[/]"
        if r.serving and r.serving != "llamacpp_inprocess" and not r.listed.get(r.serving):
            serving += " [dim](model not listed)[/]"
        roles.add_row(r.role, r.model, serving, " → ".join(r.chain))
    out.print(roles)
    return 0


# ── plan ─────────────────────────────────────────────────────────────────────────────────


def _parse_contexts(items: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        model, sep, value = item.partition("=")
        # isdigit() takes '²' and other digits int() refuses (a ValueError traceback)
        if not sep or not (value.isascii() and value.isdigit()) or int(value) < 256:
            raise UsageError(f"--context {item!r}: expected MODEL=N with N >= 256")
        out[model.strip()] = int(value)
    return out


def _plan(args: argparse.Namespace) -> int:
    from app.backends.vram import fit_plan

    policy = policy_from(args).policy
    if args.gpu_gb is not None and not 0 < args.gpu_gb <= 4096:
        raise UsageError(
            f"--gpu-gb {args.gpu_gb:g}: expected a size in GiB, above 0 and up to 4096"
        )
    contexts = _parse_contexts(args.context)
    unknown = sorted(set(contexts) - set(policy.models))
    if unknown:
        raise UsageError(f"--context: unknown model {', '.join(unknown)}")
    plan = fit_plan(policy, gpu_gb=args.gpu_gb, context_override=contexts)
    planned = {f.model for f in plan.models}
    for model, n in sorted(contexts.items()):
        # a cloud model or one no local role uses was ignored without a word; a window
        # past the catalog's had vLLM flags suggested that vLLM would refuse
        if model not in planned:
            raise UsageError(f"--context {model}: not a model this plan serves (a local role's)")
        window = policy.models[model].context_window
        if n > window:
            raise UsageError(f"--context {model}={n}: past the model's window ({window})")
    if args.json:
        print_json(plan.model_dump())
        return 0

    from rich.table import Table

    table = Table(
        title=(
            f"VRAM fit plan — {plan.gpu_gb:g} GiB GPU, vLLM may use "
            f"{plan.utilization_cap:.0%} ({plan.budget_gb:g} GiB)"
        ),
        title_justify="left",
    )
    numeric = ("Weights GiB", "KV GiB", "Need GiB", "Util")
    for col in ("Model", "Roles", "Quant", *numeric[:2], "Context", *numeric[2:], "Placement"):
        table.add_column(col, overflow="fold", justify="right" if col in numeric else "left")
    table.add_column("Note", overflow="fold", ratio=1)
    colours = {"resident": "green", "swap": "yellow", "too_large": "red", "unknown": "dim"}
    for m in plan.models:
        table.add_row(
            m.model,
            ", ".join(m.roles),
            m.quant or "—",
            f"{m.weights_gb:.1f}",
            f"{m.kv_gb:.1f}",
            str(m.context),
            f"{m.need_gb:.1f}",
            f"{m.gpu_memory_utilization:.2f}" if m.gpu_memory_utilization is not None else "—",
            f"[{colours[m.placement]}]{m.placement}[/]",
            m.note,
        )
    out = console()
    out.print(table)
    out.print(
        f"co-resident: {', '.join(plan.resident) or 'none'} "
        f"({plan.resident_gb:.1f} GiB, util {plan.resident_utilization:.2f}) · "
        f"swapped in on demand: {', '.join(plan.swap) or 'none'}"
    )
    return 0
