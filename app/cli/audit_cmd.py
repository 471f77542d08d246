"""``switchyard audit tail|verify|export``: read, check and export the audit chain."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from app.audit.canonical import VerifyReport, canonical_json
from app.audit.log import AuditLog, AuditLogOpener
from app.audit.types import AuditLine
from app.cli import audit_lines
from app.cli.common import add_json_arg, console, print_json, settings_from
from app.errors import AuditTamperError, UsageError
from app.paths import ensure_dir


def register(sub: Any) -> None:
    p = sub.add_parser("audit", help="show, verify or export the hash-chained audit log")
    asub = p.add_subparsers(dest="audit_command", metavar="ACTION", required=True)

    tail = asub.add_parser("tail", help="show the newest audit lines")
    tail.add_argument("-n", type=int, default=20, metavar="N", help="how many lines (20)")
    tail.add_argument("--follow", "-f", action="store_true", help="keep printing new lines")
    tail.add_argument("--interval", type=float, default=0.5, help=argparse.SUPPRESS)
    _add_filters(tail)
    tail.add_argument("--json", action="store_true", help="print one JSON object per line")
    tail.set_defaults(handler=_tail)

    verify = asub.add_parser("verify", help="check the hash chain (exit 0 ok, 1 tampered)")
    add_json_arg(verify)
    verify.set_defaults(handler=_verify)

    export = asub.add_parser("export", help="write the lines as JSONL")
    export.add_argument("-o", "--output", type=Path, metavar="FILE", help="file (default stdout)")
    _add_filters(export)
    export.set_defaults(handler=_export)


def _add_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--session", metavar="S", help="only this session's lines")
    p.add_argument("--run", metavar="R", help="only this run's lines")


def _open(args: argparse.Namespace) -> AuditLogOpener:
    settings = settings_from(args)
    ensure_dir(settings.data_dir)
    return AuditLog.open(settings.audit_db)


# ── tail ─────────────────────────────────────────────────────────────────────────────────


def _tail(args: argparse.Namespace) -> int:
    asyncio.run(_tail_async(args))
    return 0


async def _tail_async(args: argparse.Namespace) -> None:
    out = console()

    def show(line: AuditLine) -> None:
        if args.json:
            sys.stdout.write(canonical_json(line.model_dump(by_alias=True)) + "\n")
            sys.stdout.flush()
        else:
            out.print(audit_lines.full(line), soft_wrap=True)

    async with _open(args) as log:
        head = await log.last_seq()
        lines = await log.tail(args.n, session=args.session, run=args.run)
        for line in lines:
            show(line)
        if args.follow:
            since = lines[-1].seq if lines else head
            async for line in log.follow(args.session, args.run, since, interval=args.interval):
                show(line)


# ── verify ───────────────────────────────────────────────────────────────────────────────


def _verify(args: argparse.Namespace) -> int:
    report = asyncio.run(_verify_async(args))
    if args.json:
        print_json(report.model_dump())
    if not report.ok:
        raise AuditTamperError(f"audit chain does not verify: {report.problem}")
    if not args.json:
        head = (report.head_hash or "")[:12] or "—"
        print(f"audit chain ok: {report.lines_checked} lines, head {head}")
    return 0


async def _verify_async(args: argparse.Namespace) -> VerifyReport:
    async with _open(args) as log:
        report: VerifyReport = await log.verify()
    return report


# ── export ───────────────────────────────────────────────────────────────────────────────


def _export(args: argparse.Namespace) -> int:
    try:
        count = asyncio.run(_export_async(args))
    except OSError as exc:
        raise UsageError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    if args.output is not None:
        print(f"exported {count} audit lines to {args.output}", file=sys.stderr)
    return 0


async def _export_async(args: argparse.Namespace) -> int:
    async with _open(args) as log:
        target = args.output if args.output is not None else sys.stdout
        count: int = await log.export_jsonl(target, session=args.session, run=args.run)
    return count
