"""``switchyard audit tail|verify|export|chains``: read, check and export the audit log.

On a machine's own SQLite file there is one chain. On the team store (docs/team.md) each
Switchyard instance writes a chain of its own: ``tail`` shows this user's lines (``--team``
everyone's, each with its user and host), ``verify`` checks every chain (or ``--chain``),
``export`` writes one chain (or one run's or session's lines: from the chain that holds
them, or the one ``--chain`` names), ``chains`` lists them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from rich.text import Text

from app.audit.base import AuditBase, unlike
from app.audit.canonical import VerifyReport
from app.audit.types import AuditLine
from app.audit.verify_result import ChainResult, VerifyResult
from app.cli import audit_lines
from app.cli.common import (
    add_json_arg,
    an_id,
    console,
    policy_from,
    print_json,
    print_json_line,
    settings_from,
    whole_number,
)
from app.config import Settings
from app.counted import counted
from app.errors import AuditTamperError, UsageError
from app.replacing import replacing
from app.shown import clean

if TYPE_CHECKING:
    from app.audit.pg_log import PgAuditLog


#: the most lines a tail shows (an -n past SQLite's integers was an OverflowError)
MAX_TAIL = 1_000_000


def register(sub: Any) -> None:
    p = sub.add_parser("audit", help="tail, verify or export the hash-chained audit log")
    asub = p.add_subparsers(dest="audit_command", metavar="ACTION", required=True)

    tail = asub.add_parser("tail", help="show the newest audit lines")
    tail.add_argument(
        "-n",
        type=whole_number(0, MAX_TAIL),
        default=20,
        metavar="N",
        help="how many lines (20; 0 with --follow: only new ones)",
    )
    tail.add_argument("--follow", "-f", action="store_true", help="keep printing new lines")
    tail.add_argument("--interval", type=float, default=0.5, help=argparse.SUPPRESS)
    _add_filters(tail)
    tail.add_argument("--team", action="store_true", help="everyone's lines (team store)")
    tail.add_argument("--user", metavar="U", help="this user's lines (team store)")
    tail.add_argument("--json", action="store_true", help="print one JSON object per line")
    tail.set_defaults(handler=_tail)

    verify = asub.add_parser("verify", help="check the hash chain(s) (exit 0 ok, 1 tampered)")
    verify.add_argument("--chain", metavar="C", help="only this chain (team store)")
    add_json_arg(verify)
    verify.set_defaults(handler=_verify)

    export = asub.add_parser("export", help="write the lines as JSONL")
    export.add_argument(
        "-o",
        "--output",
        type=_a_file,
        metavar="FILE",
        help="file (default stdout); a filter that matches nothing exports nothing and exits "
        "1 (a FILE is left as it was)",
    )
    _add_filters(export)
    export.set_defaults(handler=_export)

    chains = asub.add_parser("chains", help="list the team store's chains (who, where, lines)")
    add_json_arg(chains)
    chains.set_defaults(handler=_chains)


def _add_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--session", metavar="S", type=an_id, help="only this session's lines")
    p.add_argument("--run", metavar="R", type=an_id, help="only this run's lines")
    if p.prog.endswith("tail"):
        p.add_argument("--chain", metavar="C", help="one chain of the team store")
    elif p.prog.endswith("export"):
        p.add_argument(
            "--chain",
            metavar="C",
            help="one chain of the team store; without it, --session or --run exports the "
            "chain that holds those lines (lines in several chains are refused, naming "
            "each: export each with --chain C)",
        )


async def _open(args: argparse.Namespace, *, chain: str | None = None) -> AuditBase:
    from app.router.stores import database_url, open_audit, read_fallback
    from app.store.errors import StoreUnavailable

    settings = settings_from(args)
    if database_url(settings) is None:
        for flag in ("team", "user", "chain"):
            if getattr(args, flag, None):
                raise UsageError(
                    f"--{flag} reads the team store: set SWITCHYARD_DATABASE_URL "
                    "(this machine's audit log is one SQLite chain)"
                )
        return await open_audit(settings)
    local_only, named = _privacy(args, settings)
    try:
        return await open_audit(settings, local_only=local_only, named=named, chain=chain)
    except StoreUnavailable as exc:
        if any(getattr(args, flag, None) for flag in ("team", "user", "chain")):
            raise  # those read the team store alone
        return await open_audit(read_fallback(settings, exc))


def _privacy(args: argparse.Namespace, settings: Settings) -> tuple[bool, Any]:
    """local_only and the named local hosts: the database must pass them (GR-009)."""
    from app.backends.local_only import effective_local_only

    policy = policy_from(args, settings).policy
    return effective_local_only(policy, settings), policy.named_local_hosts()


# ── tail ─────────────────────────────────────────────────────────────────────────────────


def _tail(args: argparse.Namespace) -> int:
    if args.n == 0 and not args.follow:
        raise UsageError("-n 0 shows no line: it is for --follow (only the lines to come)")
    asyncio.run(_tail_async(args))
    return 0


async def _tail_async(args: argparse.Namespace) -> None:
    out = console()

    def show(line: AuditLine, who: dict[str, str] | None = None) -> None:
        if args.json:
            print_json_line({**(who or {}), **line.model_dump(by_alias=True)})
        else:
            text = audit_lines.full(line)
            if who:
                whom = clean(f"{who['user']}@{who['host']}", one_line=True)
                text = Text(f"{whom} ", style="bold") + text
            out.print(text, soft_wrap=True)

    log = await _open(args, chain=args.chain)
    try:
        if log.shared and args.chain is None:
            await _team_tail(args, cast("PgAuditLog", log), show)
            return
        head = await log.last_seq()
        lines = await log.tail(args.n, session=args.session, run=args.run)
        for line in lines:
            show(line)
        if not lines and args.n:
            if not args.follow and (named := await _found_nowhere(args, log)):
                raise _not_found(args, named)
            _none_matched(args)
        if args.follow:
            since = lines[-1].seq if lines else head
            async for line in log.follow(args.session, args.run, since, interval=args.interval):
                show(line)
    finally:
        await log.close()


async def _team_tail(args: argparse.Namespace, log: PgAuditLog, show: Any) -> None:
    user = None if args.team else (args.user or settings_from(args).user)
    kw: dict[str, Any] = {"user": user, "session": args.session, "run": args.run}
    # A follow keeps a place per chain (PgAuditLog.team_after), from each chain's head as
    # it is before the newest lines are read: what those do not show of it is older.
    seen = await log.team_heads() if args.follow else {}
    # -n 0: only what comes next
    batch = await log.team_tail(args.n, **kw) if args.n else []
    if not batch and args.n:
        if not args.follow and (named := await _found_nowhere(args, log)):
            raise _not_found(args, named)
        # this user's lines by default: say so, or an empty answer reads as an empty log
        _none_matched(args, user=user if not args.team and not args.user else None)
    while True:
        for t in batch:
            show(t.line, {"user": t.user, "host": t.host, "chain": t.chain})
            # a chain's lines are visible in seq order (one writer at a time, each line
            # committed before the next is written): its newest read is its place
            seen[t.chain] = max(seen.get(t.chain, 0), t.line.seq)
        if not args.follow:
            return
        await asyncio.sleep(args.interval)
        batch, read = await log.team_after(seen, 500, **kw)
        seen.update(read)  # past what the filters left out too


def _filtered(args: argparse.Namespace) -> bool:
    """An export's filter (a ``--chain`` names which log, as the file does: an empty one
    is an export of nothing, as an empty log's is)."""
    return args.session is not None or args.run is not None


async def _found_nowhere(args: argparse.Namespace, log: AuditBase) -> str | None:
    """The first ``--run R`` / ``--session S`` of ``args`` whose id has no line at all in
    the log (the team store's every chain, unless ``--chain`` names one), as typed; None
    when each has some (a filter can still match nothing: two ids never together, or
    another user's run on the team store)."""
    for key in ("run", "session"):
        value = getattr(args, key, None)
        if value is None:
            continue
        if log.shared and args.chain is None:
            found = bool(await cast("PgAuditLog", log).holding(**{key: value}))
        else:
            found = await log.first_of(**{key: value}) is not None
        if not found:
            return f"--{key} {value}"
    return None


def _not_found(args: argparse.Namespace, named: str) -> UsageError:
    """An id found nowhere in the log, for ``tail`` and ``export`` alike: one line, exit 2
    (an argument naming nothing, as ``evidence show`` and ``merge`` say of a run that is
    not there). ``tail --run nosuch`` ended 0 and ``export --run nosuch`` 1 (a user
    audit)."""
    from app.audit.masking import mask_text

    said = mask_text(named)[0]  # (a key pasted as an id is not said back)
    what = named.split(" ", 1)[0].removeprefix("--")
    text = f"{said}: no such {what} in the audit log (ids are matched whole)"
    output = getattr(args, "output", None)
    if output is not None:
        text += f"; {output} {'left as it was' if output.exists() else 'not written'}"
    return UsageError(text)


def _none_matched(args: argparse.Namespace, *, user: str | None = None) -> None:
    """A filter that matched nothing says so on stderr (it printed nothing at all, as an
    empty log does): ids are matched whole, so a cut one matches nothing. ``user``: the
    team store's default filter (this user's lines), which nobody typed."""
    named = [f"--{k} {v}" for k in ("session", "run", "user") if (v := getattr(args, k, None))]
    if named:
        from app.audit.masking import mask_text

        said = mask_text(" ".join(named))[0]  # (a key pasted as an id is not said back)
        print(f"switchyard: no audit line matched {said} (ids are matched whole)", file=sys.stderr)
    elif user is not None:
        print(
            f"switchyard: no audit line of user {user} on the team store (tail shows your "
            "own lines: --team shows everyone's, --user U one user's, and "
            "`switchyard audit chains` who wrote)",
            file=sys.stderr,
        )


# ── verify ───────────────────────────────────────────────────────────────────────────────


def _verify(args: argparse.Namespace) -> int:
    result = asyncio.run(_verify_async(args))
    if args.json:
        print_json(result.model_dump())  # one shape on both stores (docs/json.md)
    bad = [c for c in result.chains if not c.ok]
    if bad:
        first = bad[0]
        where = f" {first.chain} ({first.user}@{first.host})" if first.chain else ""
        more = f" ({len(bad)} chains fail)" if len(bad) > 1 else ""
        raise AuditTamperError(f"audit chain{where} does not verify: {first.problem}{more}")
    if not args.json:
        if result.store == "sqlite":
            head = (result.head_hash or "")[:12] or "—"
            print(f"audit chain ok: {counted(result.lines_checked, 'line')}, head {head}")
        else:
            chains, lines = counted(len(result.chains), "chain"), result.lines_checked
            print(f"team audit ok: {chains}, {counted(lines, 'line')}")
    return 0


async def _verify_async(args: argparse.Namespace) -> VerifyResult:
    log = await _open(args)
    try:
        if not log.shared:
            return VerifyResult.of([ChainResult.of(await log.verify())], shared=False)
        found = await cast("PgAuditLog", log).verify_chains(args.chain)
        if args.chain is not None and not found:
            raise UsageError(f"no audit chain {args.chain} (see `switchyard audit chains`)")
        chains = [ChainResult.of(r.report, r.chain, r.user, r.host) for r in found]
        return VerifyResult.of(chains, shared=True)
    finally:
        await log.close()


# ── export ───────────────────────────────────────────────────────────────────────────────


def _a_file(text: str) -> Path:
    """``-o``'s path: not empty (``-o ''`` was the current folder: "cannot write .")."""
    if not text.strip():
        raise argparse.ArgumentTypeError("a file path cannot be empty")
    return Path(text)


#: what SQLite and the spools keep beside a store's file
_BESIDE = ("", "-wal", "-shm", "-journal", "-spool")


def _not_a_store(output: Path, settings: Settings) -> None:
    """``-o`` naming one of Switchyard's own files (the audit log, its spool, the ledger,
    the memory) is refused: the export was renamed over the audit database itself, and
    every audit command after it said "database disk image is malformed" (a CLI audit)."""
    from app.memory.db import tfidf_index_path

    data = settings.data_dir
    stores = [settings.audit_db, settings.ledger_db, settings.memory_db]
    own = [s.with_name(s.name + beside) for s in stores for beside in _BESIDE]
    own.append(tfidf_index_path(settings.memory_db))
    target = output.resolve()
    for path in own:
        if target == path.resolve() or (
            output.exists() and path.exists() and os.path.samefile(output, path)
        ):
            raise UsageError(
                f"-o {output}: that is Switchyard's own {path.name} in {data}; "
                "export to a file of your own"
            )


def _export(args: argparse.Namespace) -> int:
    if args.output is not None:
        _not_a_store(args.output, settings_from(args))
    checked: list[VerifyReport] = []
    try:
        count = asyncio.run(_export_async(args, checked))
    except BrokenPipeError:
        raise  # the reader went away (`| head`): main() ends quietly, as a filter does
    except OSError as exc:
        where = args.output or "the standard output"
        raise UsageError(f"cannot write {where}: {exc.strerror or exc}") from None
    if count is None:  # a filter matched nothing: the file is as it was, or not there
        _none_matched(args)
        kept = "left as it was" if args.output.exists() else "not written"
        print(f"switchyard: {args.output} {kept}", file=sys.stderr)
        return 1
    if args.output is not None:
        print(f"exported {count} audit lines to {args.output}", file=sys.stderr)
    if not count:
        _none_matched(args)
        if _filtered(args):  # as with -o FILE: nothing exported is no export (an empty
            return 1  # log with no filter is an export of nothing, exit 0)
    if checked and not checked[0].ok:
        # exported as it is (it is the record), but never as if it held: the docs name
        # an export the outside anchor, and a tampered chain's exported with exit 0
        report = checked[0]
        where = f" at line {report.first_bad_seq}" if report.first_bad_seq else ""
        print(
            f"switchyard: the exported chain does not verify{where}: {report.problem}",
            file=sys.stderr,
        )
        return 1
    return 0


class _NothingMatched(Exception):
    """An export to a file whose filter matched no line: its temporary file is dropped."""


async def _export_async(args: argparse.Namespace, checked: list[VerifyReport]) -> int | None:
    """The lines exported; None when a ``--session``/``--run`` filter matched none and
    ``--output`` was not replaced (an existing export was emptied by a typo in an id).
    ``checked`` gets the chain's verification, made after the export."""
    log = await _open(args, chain=args.chain)
    if log.shared and args.chain is None:
        # a session's (or a run's) lines are found in the chain that holds them: read as
        # if that chain were named
        named = None
        try:
            args.chain = await _chain_holding(args, cast("PgAuditLog", log))
            if args.chain is None:
                named = await _found_nowhere(args, log)
        finally:
            await log.close()
        if named is not None:
            raise _not_found(args, named)
        if args.chain is None:  # no line matched: nothing exported
            return None if args.output is not None else 0
        log = await _open(args, chain=args.chain)
    try:
        filtered = _filtered(args)
        count: int | None
        if args.output is None:
            count = await log.export_jsonl(sys.stdout, session=args.session, run=args.run)
        else:
            try:
                with replacing(args.output) as target:
                    count = await log.export_jsonl(target, session=args.session, run=args.run)
                    if filtered and not count:
                        raise _NothingMatched
            except _NothingMatched:
                count = None
        if filtered and not count and (named := await _found_nowhere(args, log)):
            raise _not_found(args, named)
        if count is None:
            return None
        # the lines exported, verified from the first of them to the head: every one is
        # linked to it (the whole chain's verify was 23 s at 955k lines for a session's)
        some = bool(count) and _filtered(args)
        first = await log.first_of(session=args.session, run=args.run) if some else None
        # the columns that found the first line hold for every line before it: an edited
        # one would have left lines of the session out of the export, unseen
        bad = await log.first_unlike_before(first[0]) if first else None
        if bad is not None:
            checked.append(VerifyReport(ok=False, first_bad_seq=bad, problem=unlike(bad)))
        else:
            checked.append(await log.verify(from_seq=first[0] if first else 1))
        return count
    finally:
        await log.close()


async def _chain_holding(args: argparse.Namespace, log: PgAuditLog) -> str | None:
    """The team store's one chain holding the ``--session``/``--run`` lines to export;
    None when no chain holds any. A filter whose lines are in several chains (a run
    merged from another instance, a session id written by two) is refused naming each:
    an export is one chain's lines, verified as such (``verify_lines(chain=False)``),
    and lines of two chains in one file never would be."""
    if not _filtered(args):
        raise UsageError(
            "the team store holds a chain per instance: name one with --chain, or export "
            "a --session or --run (see `switchyard audit chains`)"
        )
    found = await log.holding(session=args.session, run=args.run)
    if len(found) <= 1:
        return found[0].chain if found else None
    from app.audit.masking import mask_text

    named = " ".join(f"--{k} {v}" for k in ("session", "run") if (v := getattr(args, k)))
    chains = ", ".join(
        f"{m.chain} ({clean(f'{m.user}@{m.host}', one_line=True)}, {counted(m.lines, 'line')})"
        for m in found
    )
    raise UsageError(
        f"the lines of {mask_text(named)[0]} are in {len(found)} chains of the team store: "
        f"{chains}; export each with --chain C"
    )


# ── chains ───────────────────────────────────────────────────────────────────────────────


def _chains(args: argparse.Namespace) -> int:
    rows = asyncio.run(_chains_async(args))
    if args.json:
        print_json({"chains": rows})
        return 0
    if not rows:
        print("no audit chain yet: the team store has no line", file=sys.stderr)
    for r in rows:
        started = f"started {r['started']}"
        whom = clean(f"{r['user']}@{r['host']}", one_line=True)  # names written by others
        print(f"{r['chain']}  {whom}  {started}  {counted(r['lines'], 'line')}")
    return 0


async def _chains_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    log = await _open(args)
    try:
        if not log.shared:
            raise UsageError("audit chains lists the team store's: set SWITCHYARD_DATABASE_URL")
        infos = await cast("PgAuditLog", log).chains()
    finally:
        await log.close()
    return [i.model_dump() for i in infos]
