"""``switchyard policy check|show`` (``diff`` and ``simulate``: :mod:`app.cli.policy_sim_cmd`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from app.cli import policy_sim_cmd
from app.cli.common import (
    add_json_arg,
    add_policy_arg,
    console,
    policy_from,
    print_json,
    settings_from,
)
from app.counted import counted
from app.errors import PolicyError
from app.policy import Policy, load_policy
from app.resources import default_policy_path


def register(sub: Any) -> None:
    p = sub.add_parser("policy", help="check, show, diff or simulate the routing policy")
    psub = p.add_subparsers(dest="policy_command", metavar="ACTION", required=True)

    check = psub.add_parser("check", help="validate a policy file (exit 0 ok, 2 errors)")
    check.add_argument("file", nargs="?", type=Path, help="policy file (default: the active one)")
    check.add_argument("--quiet", "-q", action="store_true", help="no warnings, only errors")
    add_json_arg(check)
    check.set_defaults(handler=_check)

    show = psub.add_parser("show", help="render the §1 routing table")
    add_policy_arg(show)
    add_json_arg(show)
    show.set_defaults(handler=_show)
    policy_sim_cmd.register(psub)


def _check(args: argparse.Namespace) -> int:
    if not args.json:
        loaded = load_policy(args.file) if args.file is not None else policy_from(args)
    else:
        # a linter's object is its findings: printed with the errors too (exit 2), so that
        # a CI step reads one format whether the file loads or not
        try:
            loaded = load_policy(args.file) if args.file is not None else policy_from(args)
        except PolicyError as exc:
            print_json({"ok": False, "path": _path_of(args), "errors": exc.problems})
            return PolicyError.exit_code
        p = loaded.policy
        print_json(
            {
                "ok": True,
                "path": str(loaded.path),
                "policy_version": p.version,
                "roles": len(p.roles),
                "models": len(p.models),
                "triggers": len(p.triggers),
                "errors": [],
                "warnings": [] if args.quiet else loaded.warnings,
            }
        )
        return 0
    if not args.quiet:
        for w in loaded.warnings:
            print(f"warning: {w}", file=sys.stderr)
    p = loaded.policy
    print(
        f"{loaded.path}: ok — policy {p.version}, {counted(len(p.roles), 'role')}, "
        f"{counted(len(p.models), 'model')}, {counted(len(p.triggers), 'trigger')}, "
        f"{counted(len(loaded.warnings), 'warning')}"
    )
    return 0


def _path_of(args: argparse.Namespace) -> str:
    """The policy file ``check`` was asked about (before it was read)."""
    if args.file is not None:
        return str(args.file)
    return str(settings_from(args).policy or default_policy_path())


def role_rows(p: Policy) -> list[dict[str, Any]]:
    rows = []
    for rid, role in p.roles.items():
        default = p.model(role.default) if role.default else None
        rows.append(
            {
                "role": rid,
                "title": role.title,
                "kind": role.kind,
                "default": p.resolve(role.default) if role.default else None,
                "default_display": default.display if default else None,
                "alternatives": [p.resolve(a) for a in role.alternatives],
                "provider": default.provider if default else None,
                "locality": role.locality,
                "runtimes": role.runtimes,
                "fallback": [p.resolve(m) for m in role.fallback],
                "local_stand_in": role.local_stand_in,
                "constraints": role.constraints,
                "triggers": [t.id for t in p.triggers_for(rid) if t.role == rid],
            }
        )
    return rows


def _show(args: argparse.Namespace) -> int:
    from app.backends.local_only import effective_local_only

    settings = settings_from(args)
    loaded = policy_from(args, settings)
    p = loaded.policy
    rows = role_rows(p)
    # what a session here runs under: SWITCHYARD_LOCAL_ONLY or the config can turn it on
    # (it showed the file's false while every command here ran local_only)
    local_only = effective_local_only(p, settings)
    if args.json:
        print_json(
            {
                "policy_version": p.version,
                "path": str(loaded.path),
                "local_only": local_only,
                "policy_local_only": p.privacy.local_only,
                "roles": rows,
                "budget": p.budget.model_dump(),
                "tiers": {k: v.models for k, v in p.tiers.items()},
            }
        )
        return 0
    from rich.table import Table

    table = Table(
        title=f"Model routing table — policy {p.version} ({loaded.path})",
        title_justify="left",
        show_lines=True,
    )
    for col in ("Role", "Default model", "Provider", "Local/Cloud", "Runtime", "Fallback"):
        table.add_column(col, overflow="fold")
    table.add_column("Constraints", overflow="fold", max_width=38)
    for r in rows:
        default = r["default"] or "deterministic"
        if r["alternatives"]:
            default += " / " + " / ".join(r["alternatives"])
        table.add_row(
            f"[bold]{r['title']}[/]\n[dim]{r['role']}[/]",
            default,
            r["provider"] or "—",
            r["locality"],
            "/".join(r["runtimes"]) or "—",
            " → ".join(r["fallback"]) or "—",
            r["constraints"],
        )
    out = console()
    out.print(table)
    b = p.budget
    said = str(local_only).lower()
    if local_only != p.privacy.local_only:
        said += " (on by the environment or the config; the policy file says false)"
    out.print(
        f"local_only = {said} · budget ${b.session_usd:.2f}/session, "
        f"${b.day_usd:.2f}/day · tiers: "
        + "; ".join(f"{k}: {', '.join(v.models)}" for k, v in p.tiers.items())
    )
    return 0
