"""``switchyard merge RUN``: bring a run's branch into the current branch when the gate holds.

The human's confirmation is the interactive prompt, or ``--yes`` on the command line.
Without a terminal and without ``--yes`` there is no human, and the gate refuses.
Exit codes: 0 merged (or already merged), 1 refused or failed, 2 usage.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

from app.cli.common import add_json_arg, policy_from, print_json, run_stoppable, settings_from
from app.config import Settings
from app.errors import UsageError
from app.evidence.bundle import EvidenceError, read_manifest, resolve_run, runs_dir
from app.evidence.read import audit_seal
from app.evidence.seal import sealed_hash
from app.paths import ensure_dir
from app.policy.schema import Policy
from app.router.stores import database_url, open_audit, store_privacy
from app.shown import clean
from app.workspace.git import repo_root
from app.workspace.merge import (
    Confirm,
    MergeOutcome,
    MergePlan,
    merge_run,
)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "merge",
        help="merge a run's branch into the current branch, only when the gate holds",
        description=(
            "Merge the branch of RUN (a run id or a unique prefix) into the checked-out"
            " branch: only with green tests, a cloud Judge's approval for a High-Risk change,"
            " and a human's confirmation. All or nothing: a failed merge changes nothing."
        ),
    )
    p.add_argument("run", metavar="RUN", help="run id, or a unique prefix of one")
    p.add_argument("--repo", type=Path, metavar="PATH", help="the repository (default: here)")
    p.add_argument(
        "--yes",
        "-y",
        action="store_true",
        help="confirm the merge: counts as the human's approval",
    )
    p.add_argument(
        "--untested",
        action="store_true",
        help="with --yes: merge even when the branch moved on since the run, so the "
        "merged tree was never tested (GR-006), or when it lacks commits of the run's "
        "base, which the evidence's diff does not show",
    )
    add_json_arg(p)
    p.set_defaults(handler=_merge)


def _merge(args: argparse.Namespace) -> int:
    if args.untested and not args.yes:  # (a human asked sees the UNTESTED note instead)
        raise UsageError("--untested goes with --yes: it widens what --yes confirms")
    top = repo_root((args.repo or Path.cwd()).resolve())
    run_id = resolve_run(top, args.run).name  # unknown or ambiguous: exit 2 before anything
    settings = settings_from(args)
    # the catalogue says which verdicts are a cloud Judge's (a broken policy: exit 2 first)
    policy = policy_from(args, settings).policy
    ensure_dir(settings.data_dir)
    # a SIGTERM is a stop as Ctrl-C is: it ended the process while git merged in its own
    # session, and the merge landed with no outcome line (a user audit)
    outcome = run_stoppable(
        _merge_async(args, top, run_id, settings, policy),
        at_once=True,
        second="finishing the merge and its audit line; one moment (once more to stop at once)",
        third="stopped before the merge's outcome was recorded: see git status and git log",
    )
    _render(args, outcome)
    return 0 if outcome.ok else 1


async def _merge_async(
    args: argparse.Namespace, top: Path, run_id: str, settings: Settings, policy: Policy
) -> MergeOutcome:
    policy_version = None
    with contextlib.suppress(EvidenceError):
        policy_version = read_manifest(runs_dir(top) / run_id).policy_version
    team = database_url(settings) is not None
    seal = None if team else await audit_seal(settings.audit_db, run_id)
    confirm, approver = _confirmer(args)
    log = await open_audit(settings, policy_version=policy_version, **store_privacy(settings))
    async with log:
        if team:  # the run's seal line is in its session's chain of the team audit
            seal = sealed_hash(await log.run_lines(run_id), run_id)
        outcome = await merge_run(
            top,
            run_id,
            audit=log,
            confirm=confirm,
            approved=args.yes,
            # --yes was given before the plan was read: it confirms what the run tested,
            # and it merged a tree nobody tested when the branch had moved on (GR-006)
            untested_ok=args.untested or not args.yes,
            approver=approver,
            sealed_sha256=seal[0] if seal else None,
            policy=policy,
        )
    # (--yes on a tree the run never tested: the HUMAN reason says why it does not count)
    no_human = any(r.startswith("HUMAN") for r in outcome.reasons)
    if confirm is None and not args.yes and no_human:
        note = "no terminal to ask for a confirmation: pass --yes to confirm as the human"
        outcome = outcome.model_copy(update={"notes": [*outcome.notes, note]})
    return outcome


def _confirmer(args: argparse.Namespace) -> tuple[Confirm | None, str | None]:
    if args.yes:
        return None, "cli --yes --untested" if args.untested else "cli --yes"
    if not sys.stdin.isatty():
        return None, None

    async def ask(plan: MergePlan) -> bool:
        out = sys.stderr if args.json else sys.stdout
        # what the human confirms reads as it is: a model-written path or a verdict's
        # words cannot move the cursor or restyle the prompt (app/shown.py)
        print(clean(_describe(plan)), file=out)
        print("merge? [y/N] ", end="", file=out, flush=True)
        from app.cli.terminal_decider import terminal_line

        try:
            # the reader every prompt of the process shares, a daemon thread's: in the
            # default executor a stop at the prompt (SIGTERM) left the process waiting on
            # the read as asyncio.run shut its executor down (a review)
            answer = await terminal_line(sys.stdin)
        except (EOFError, OSError):
            return False
        return answer.strip().lower() in ("y", "yes")

    return ask, "cli prompt"


def _describe(plan: MergePlan) -> str:
    target = (plan.target_ref or "HEAD").removeprefix("refs/heads/")
    lines = [f"merge run {plan.run_id} into {target}?"]
    if plan.task:
        lines.append(f"  task      {plan.task}")
    lines.append(
        f"  branch    {plan.branch} @ {(plan.tip or '?')[:12]} → {target}"
        f" @ {(plan.before_head or '?')[:12]}"
    )
    more = len(plan.files) - 8
    shown = ", ".join(plan.files[:8]) + (f" and {more} more" if more > 0 else "")
    lines.append(f"  files     {shown or '—'}")
    if plan.facts is not None:
        lines.append(f"  risk      {'High-Risk' if plan.facts.high_risk else 'not High-Risk'}")
        for v in plan.facts.verdicts:
            local = " (local: advice only)" if v.is_local else ""
            lines.append(f"  verdict   {v.verdict} by {v.who}{local}")
    lines += [f"  note      {n}" for n in plan.notes]
    return "\n".join(lines)


def _render(args: argparse.Namespace, outcome: MergeOutcome) -> None:
    if args.json:
        print_json(outcome.model_dump(mode="json"))
        return
    target = (outcome.target_ref or "HEAD").removeprefix("refs/heads/")
    if outcome.merged:
        print(
            f"merged run {outcome.run_id} into {target}:"
            f" {(outcome.before_head or '')[:12]} → {(outcome.after_head or '')[:12]}"
        )
    elif outcome.already_merged:
        print(f"run {outcome.run_id} is already merged into {target}")
    else:
        print(f"merge refused: run {outcome.run_id} (nothing was changed)", file=sys.stderr)
        for reason in outcome.reasons:
            print(clean(f"  {reason}"), file=sys.stderr)
    for note in outcome.notes:
        print(clean(f"  note: {note}"), file=sys.stderr)


__all__ = ["register"]
