"""``switchyard evidence show|verify RUN``: what a run's bundle holds, and whether it is intact."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from app.cli.common import add_json_arg, money, policy_from, print_json, settings_from
from app.config import Settings
from app.counted import counted
from app.evidence.bundle import (
    MANIFEST,
    BundleReport,
    EvidenceError,
    Manifest,
    file_entry,
    resolve_run,
    verify_bundle,
)
from app.evidence.read import audit_seal, gate_facts, read_cost, read_sidecars
from app.router.ledger.records import BudgetSnapshot
from app.shown import clean
from app.workspace.git import NotAGitRepo, repo_root


def register(sub: Any) -> None:
    p = sub.add_parser("evidence", help="show or verify a run's evidence bundle")
    esub = p.add_subparsers(dest="evidence_command", metavar="ACTION", required=True)

    show = esub.add_parser(
        "show",
        help="files, status, verdicts, costs and gate status of a run",
        description="RUN is a run id or a unique prefix of one.",
    )
    _common(show)
    show.set_defaults(handler=_show)

    verify = esub.add_parser(
        "verify",
        help="check every file against the manifest (exit 0 ok, 1 tampered, 2 unknown run)",
        description="RUN is a run id or a unique prefix of one.",
    )
    _common(verify)
    verify.set_defaults(handler=_verify)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="run id, or a unique prefix of one")
    p.add_argument("--repo", type=Path, metavar="PATH", help="the repository (default: here)")
    add_json_arg(p)


def repo_from(args: argparse.Namespace) -> Path:
    """The repository's top level; outside git, the directory itself (bundles need no git)."""
    path: Path = (args.repo or Path.cwd()).resolve()
    try:
        return repo_root(path)
    except NotAGitRepo:
        if path.is_dir():
            return path
        raise


# ── verify ───────────────────────────────────────────────────────────────────────────────


async def _seal(settings: Settings, run_id: str) -> tuple[str, int] | None:
    """The manifest hash the audit sealed for ``run_id``: in this machine's chain, or in
    the team audit when the store is shared (the run's session chain)."""
    from app.evidence.seal import sealed_hash
    from app.router.stores import database_url, open_audit, store_privacy

    if database_url(settings) is None:
        return await audit_seal(settings.audit_db, run_id)
    async with await open_audit(settings, **store_privacy(settings)) as log:
        return sealed_hash(await log.run_lines(run_id), run_id)


def check(args: argparse.Namespace) -> tuple[BundleReport, dict[str, Any]]:
    """Verify the bundle and its seal in the audit chain. Returns the report and seal info."""
    path = resolve_run(repo_from(args), args.run)
    report = verify_bundle(path)
    seal: dict[str, Any] = {"sealed": None, "seq": None}
    if report.manifest is None and not (path / MANIFEST).exists():
        # no manifest: a run that never finished sealing, unless the audit log holds its
        # seal line, and then the manifest was deleted after (it said "not finalized")
        found = asyncio.run(_seal(settings_from(args), path.name))
        if found is not None:
            seal = {"sealed": False, "seq": found[1]}
            problem = (
                f"{MANIFEST} was deleted: the audit log sealed it at line {found[1]} "
                f"(sha256 {found[0][:12]}…)"
            )
            problems = [*report.problems, problem]
            report = report.model_copy(update={"ok": False, "problems": problems})
    if report.manifest is not None:
        found = asyncio.run(_seal(settings_from(args), path.name))
        if found is None:
            # a consistent bundle is easy to write; only a run writes its seal line
            problem = (
                f"the audit log holds no seal line for run {path.name}: nothing shows that"
                " a run here made this bundle"
            )
            problems = [*report.problems, problem]
            report = report.model_copy(update={"ok": False, "problems": problems})
        else:
            sealed_sha, seq = found
            actual = file_entry(path / MANIFEST).sha256
            seal = {"sealed": sealed_sha == actual, "seq": seq}
            if sealed_sha != actual:
                problem = (
                    f"{MANIFEST}: sha256 {actual[:12]}… is not the {sealed_sha[:12]}… sealed in"
                    f" the audit log (line {seq}): the bundle was rewritten"
                )
                problems = [*report.problems, problem]
                report = report.model_copy(update={"ok": False, "problems": problems})
    return report, seal


def _verify(args: argparse.Namespace) -> int:
    report, seal = check(args)
    if args.json:
        data = report.model_dump(exclude={"manifest"})
        data.update(seal_in_audit=seal["sealed"], seal_seq=seal["seq"])
        print_json(data)
        return 0 if report.ok else 1
    if report.ok:
        files = counted(report.files_checked, "file")
        sealed = f"sealed in the audit log (line {seal['seq']})"
        print(f"evidence ok: run {report.run_id}, {files}, {sealed}")
        return 0
    # nothing but the seal missing: the bundle is whole, and nothing vouches for it
    unsealed = seal["sealed"] is None and report.manifest is not None
    word = "UNSEALED" if unsealed and len(report.problems) == 1 else "TAMPERED"
    if (
        Path(report.path).is_dir()
        and not (Path(report.path) / MANIFEST).exists()
        and seal["seq"] is None
    ):
        # a run killed, or whose stores went away, before it sealed: nothing to check
        # the files against, which is not proof that anyone changed them
        word = "NOT FINALIZED"
    print(f"evidence {word}: run {report.run_id} ({report.path})", file=sys.stderr)
    for problem in report.problems:
        print(f"  {problem}", file=sys.stderr)
    return 1


# ── show ─────────────────────────────────────────────────────────────────────────────────


#: what ``evidence show --json`` reads from the manifest and the bundle's files
_READ_KEYS = (
    "task",
    "status",
    "reason",
    "created",
    "sealed_at",
    "base",
    "branch",
    "head",
    "policy_version",
    "local_only",
    "cost",
    "sidecars",
    "tests",
    "high_risk",
    "verdicts",
    "gate",
    "merged",
)


def summary(args: argparse.Namespace) -> dict[str, Any]:
    report, seal = check(args)
    path = Path(report.path)
    m = report.manifest
    data: dict[str, Any] = {
        "run_id": report.run_id,
        "path": report.path,
        "finalized": m is not None,
        "verify": {"ok": report.ok, "problems": report.problems, "sealed": seal["sealed"]},
        # every key, whatever could be read: null for what could not (the keys of an
        # unreadable manifest, or of a gate that could not be judged, were left out)
        **dict.fromkeys(_READ_KEYS),
    }
    if m is None:
        # a manifest.json that is there but unreadable was finalized, then edited
        data["finalized"] = (path / MANIFEST).is_file()
        from app.evidence.live import running

        # a run going on (here or in another terminal) is not a broken bundle
        live = not data["finalized"] and running(path)
        data["status"] = "manifest unreadable" if data["finalized"] else "running" if live else None
        data["files"] = [
            {"name": p.relative_to(path).as_posix(), "size": p.stat().st_size, "sha256": None}
            for p in sorted(path.rglob("*"))
            if p.is_file()
        ]
        return data
    data.update(
        task=m.task,
        status=m.status,
        reason=m.reason,
        created=m.created,
        sealed_at=m.finalized,
        base=m.base,
        branch=m.branch,
        head=m.head,
        policy_version=m.policy_version,
        local_only=m.local_only,
        files=[{"name": n, "size": e.size, "sha256": e.sha256} for n, e in m.files.items()],
        merged=_merged(args, m),
    )
    try:
        facts = gate_facts(path, m, policy_from(args).policy)
        data["cost"] = read_cost(path)
        data["sidecars"] = read_sidecars(path)
    except EvidenceError as exc:
        data["gate"] = {"ok": False, "reasons": [f"EVIDENCE: {exc}"], "notes": []}
        return data
    gate = facts.gate(human_approved=True)
    reasons = list(gate.reasons)
    if m.status != "merge_ready":
        why = f": {m.reason}" if m.reason else ""
        reasons.insert(0, f"STATUS: the run ended {m.status}{why}")
    if not report.ok:
        reasons.insert(0, "EVIDENCE: the bundle does not verify")
    last = facts.last_loop
    data.update(
        tests={
            "green": facts.tests_green,
            "last_loop": None if last is None else last.model_dump(exclude={"argv", "log"}),
        },
        high_risk=facts.high_risk,
        verdicts=[v.model_dump() for v in facts.verdicts],
        gate={
            "ok": not reasons,
            "assumes_human_approval": True,
            "reasons": reasons,
            "notes": [*facts.notes, *gate.notes],
        },
    )
    return data


def _merged(args: argparse.Namespace, manifest: Manifest) -> dict[str, Any] | None:
    """The run as merged into the branch checked out, as git says it (the sealed
    manifest keeps ``merge_ready`` for good; app/workspace/merged.py): None when not."""
    from app.workspace.merged import merged_into

    merged = merged_into(repo_from(args), manifest)
    if merged is None:
        return None
    return {
        "into": merged.into,
        "target_ref": merged.target_ref,
        "commit": merged.commit,
        "files": merged.files,
        "source": "git",
    }


def _show(args: argparse.Namespace) -> int:
    data = summary(args)
    if args.json:
        print_json(data)
        return 0
    out: list[str] = []
    status = data.get("status") or "not finalized"
    merged = data.get("merged")
    if merged is not None:
        # it never said the run was merged (a user audit)
        status += f", merged into {merged['into']} @ {_short(merged['commit'])}"
    out.append(f"run {data['run_id']}  {status}")
    if data.get("task"):
        out.append(f"  task      {data['task']}")
    if data.get("reason"):
        out.append(f"  reason    {data['reason']}")
    if data["finalized"] and data["created"] is not None:
        out.append(f"  created   {data['created']}   sealed {data['sealed_at']}")
        out.append(
            f"  branch    {data['branch'] or '—'}   base {_short(data['base'])}"
            f" → head {_short(data['head'])}"
        )
        out.append(
            f"  policy    {data['policy_version'] or '—'}"
            f"   local_only {'yes' if data['local_only'] else 'no'}"
        )
    v = data["verify"]
    word = "TAMPERED" if data["finalized"] else "NOT FINALIZED"
    out.append("  evidence  " + ("ok" if v["ok"] else f"{word}: " + "; ".join(v["problems"])))
    if data["tests"] is not None:
        last = data["tests"]["last_loop"]
        if last is None:
            out.append("  tests     no loop recorded")
        else:
            out.append(
                f"  tests     {'green' if data['tests']['green'] else 'not green'}: loop"
                f" {last['loop']} exit {last['exit_code']}"
                f"{' (timed out)' if last['timed_out'] else ''} under {last['runner']}"
            )
        out.append(f"  risk      {'High-Risk' if data['high_risk'] else 'not High-Risk'}")
        verdicts = data["verdicts"] or []
        if not verdicts:
            out.append("  verdicts  none")
        for i, rec in enumerate(verdicts):
            label = "verdicts" if i == 0 else ""
            cites = "citations resolve" if rec["citations_resolved"] else "citations DO NOT resolve"
            out.append(f"  {label:<9} {rec['verdict']} by {rec['model']} ({_where(rec)}); {cites}")
    for i, line in enumerate(data.get("sidecars") or []):
        out.append(f"  {'sidecars' if i == 0 else '':<9} {line}")
    if data.get("cost") is not None:
        out.append(f"  cost      {_cost(data['cost'])}")
    if merged is not None:
        files = ", ".join(merged["files"]) or "no file changes"
        out.append(
            f"  merged    into {merged['into']} @ {_short(merged['commit'])} ({files}): the"
            f" run's sealed commit is in {merged['into']} (git)"
        )
    if data["gate"] is not None:
        g = data["gate"]
        if g["ok"] and merged is not None:
            out.append("  gate      held; the run is merged: nothing is left to merge")
        elif g["ok"]:
            out.append("  gate      holds, given a human's confirmation at merge time")
        else:
            out.append("  gate      refuses:")
            out += [f"              {r}" for r in g["reasons"]]
        out += [f"  note      {n}" for n in g.get("notes", [])]
    out.append("  files")
    for f in data["files"]:
        digest = (f["sha256"] or "")[:12] or "—"
        out.append(f"    {f['size']:>10}  {digest:<12}  {f['name']}")
    print(clean("\n".join(out)))  # the task, reasons and names come from outside
    return 0


def _where(rec: dict[str, Any]) -> str:
    """A verdict's provider and where its model ran: "anthropic, cloud"; a local model's
    provider is "local" itself, said once ("qwen3-14b (local, local)" read as a typo)."""
    provider = str(rec["provider"])
    where = "local" if rec["local"] or provider == "local" else "cloud"
    return where if provider == where else f"{provider}, {where}"


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "—"


def _cost(cost: dict[str, Any]) -> str:
    """cost.json is the session's ledger snapshot when the run ended (a session can hold
    several runs): what the session spent against its cap, and on which providers."""
    try:
        snap = BudgetSnapshot.model_validate(cost)
    except ValueError:
        return "unreadable cost.json (not a ledger snapshot)"
    session = snap.per_session
    cap = f" of {money(session.cap_usd)}" if session.cap_usd is not None else ""
    text = (
        f"session {snap.session}: {money(session.spent_usd)}{cap} spent in "
        f"{counted(snap.calls, 'call')}"
    )
    if session.reserved_usd:
        text += f", {money(session.reserved_usd)} still reserved"
    paid = [f"{name} {money(usd)}" for name, usd in sorted(snap.by_provider.items()) if usd]
    return text + (f" ({', '.join(paid)})" if paid else " (all local: $0)")


__all__ = ["check", "register", "repo_from", "summary"]
