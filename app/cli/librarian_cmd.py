"""``switchyard librarian``: condense what Stage0 finds for a question to a token budget."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.audit.masking import mask_text
from app.cli import audit_lines
from app.cli.common import (
    add_json_arg,
    add_policy_arg,
    add_session_args,
    console,
    policy_from,
    print_json,
    repo_top,
    run_stoppable,
    settings_from,
)
from app.counted import counted
from app.errors import UsageError

if TYPE_CHECKING:
    from app.audit.types import AuditLine
    from app.config import Settings
    from app.pipeline.librarian import Condensed
    from app.policy.schema import Policy

#: tokens of condensed context when --budget is not given
DEFAULT_BUDGET = 2000
#: below this a budget cannot hold a single cited point
MIN_BUDGET = 64
#: audit kinds worth showing after the result (the map/reduce calls are in `audit tail`)
SHOWN_KINDS = (
    "escalation",
    "approval",
    "denial",
    "skip",
    "refusal",
    "budget_stop",
    "degradation",
    "condense",
)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "librarian",
        help="condense what Stage0 finds for QUESTION to a token budget (map, then reduce)",
        description="Gather the chunks Stage0 picks for QUESTION (or, with --full-sweep, every "
        "chunk of the repository), then condense them with the Librarian: locally, in groups "
        "that fit the local model's window, then merged; Kimi only on the policy's triggers "
        "(a full sweep, > 100k tokens, contradictions) and with your approval. Every point "
        "keeps the path:lines ids it comes from. Exit 0 with a result, 1 when no model could "
        "condense or nothing was found, 2 for usage errors.",
    )
    p.add_argument("question", metavar="QUESTION", help="what the condensed context is for")
    p.add_argument("--repo", type=Path, default=Path("."), metavar="PATH", help="default: .")
    p.add_argument(
        "--full-sweep",
        action="store_true",
        help="every chunk of the corpus, not Stage0's selection (fires the full-sweep trigger)",
    )
    p.add_argument(
        "--budget",
        type=int,
        default=DEFAULT_BUDGET,
        metavar="TOKENS",
        help=f"tokens of condensed context (default {DEFAULT_BUDGET})",
    )
    add_session_args(p)
    add_policy_arg(p)
    add_json_arg(p)
    p.set_defaults(handler=_librarian)


def _librarian(args: argparse.Namespace) -> int:
    # masked as Stage0's corpus is: what it echoes, matches and sends holds no secret
    question = mask_text(args.question.strip())[0]
    if not question:
        raise UsageError("QUESTION must not be empty")
    if args.budget < MIN_BUDGET:
        raise UsageError(f"--budget {args.budget}: must be at least {MIN_BUDGET} tokens")
    settings = settings_from(args)
    policy = policy_from(args, settings).policy
    if "librarian" not in policy.roles:
        raise UsageError("the policy has no [roles.librarian]")

    sources = gather(repo_top(args.repo), policy, question, full_sweep=args.full_sweep)
    return run_stoppable(_run(args, settings, policy, question, sources))


def gather(repo: Path, policy: Policy, question: str, *, full_sweep: bool) -> list[tuple[str, str]]:
    """``(path:start-end, text)`` sources: Stage0's selection for ``question``, or every
    chunk of the corpus in path order (``full_sweep``)."""
    from app.pipeline.librarian.sweep import sweep_sources
    from app.stage0.engine import Stage0

    if full_sweep:
        return sweep_sources(repo, policy)
    with Stage0(repo, policy) as engine:
        engine.refresh()
        return [(c.location, c.text) for c in engine.query(question).selected]


async def _run(
    args: argparse.Namespace,
    settings: Settings,
    policy: Policy,
    question: str,
    sources: list[tuple[str, str]],
) -> int:
    from app.cli.terminal_decider import decider_for
    from app.config import approve_setting
    from app.pipeline.librarian import condense
    from app.router.session import open_session

    if not sources:
        message = "Stage0 found nothing for the question" + (
            "" if args.full_sweep else " (try --full-sweep)"
        )
        if args.json:
            print_json({"ok": False, "error": message, "question": question, "sources": 0})
        else:
            out = console()
            out.print("[bold red]nothing to condense:[/] ", end="")
            out.print(message, markup=False)
        return 1
    async with open_session(
        settings,
        policy,
        decider=decider_for(*approve_setting(settings, args.approve)),
        local_only=args.local_only,
    ) as session:
        result = await condense(
            session.router,
            question,
            sources,
            args.budget,
            full_sweep=args.full_sweep,
        )
        lines = await session.audit.lines(session=session.id)
    # condensing was needed and no model wrote a note: what is left is excerpts cut to
    # fit, which --help calls exit 1 ("no model could condense"); it said ok
    failed = "LIBRARIAN_ROUTE_FAILED" in result.reason_codes or (
        result.condensed and not result.models
    )
    if args.json:
        data = result.model_dump(mode="json")
        data.update(
            ok=not failed,
            session=session.id,
            question=question,
            full_sweep=args.full_sweep,
            sources=len(sources),
            source_ids=[sid for sid, _ in sources],
            audit=[line.model_dump(mode="json", by_alias=True) for line in lines],
        )
        print_json(data)
        return 1 if failed else 0
    _render(result, len(sources), session.id, lines)
    return 1 if failed else 0


def _render(result: Condensed, n_sources: int, session: str, lines: list[AuditLine]) -> None:
    from rich.markup import escape

    out = console()
    out.print(result.text, markup=False, highlight=False)
    out.print()
    if not result.condensed:
        out.print(
            f"[bold]unchanged:[/] {counted(n_sources, 'source')}, ~{result.tokens_in} tokens "
            f"fit the budget of {result.budget}; no model was called"
        )
        return
    conf = "" if result.confidence is None else f" · confidence {result.confidence:.2f}"
    by = escape(", ".join(result.models) or "no model")  # ids from a policy file: not markup
    out.print(
        f"[bold]condensed[/] {counted(n_sources, 'source')} ~{result.tokens_in} → "
        f"~{result.tokens_out} tokens (budget {result.budget}) · "
        f"{counted(result.groups, 'group')}, "
        f"{counted(result.map_calls, 'map call')}, "
        f"{counted(result.reduce_rounds, 'reduce round')}, {counted(result.calls, 'call')} "
        f"· by {by}" + (" [magenta](escalated)[/]" if result.escalated else "") + conf
    )
    for note in result.notes:
        out.print(f"[yellow]note[/] {escape(note)}")
    out.print(f"[bold]audit[/] (session {session})")
    audit_lines.print_brief(out, lines, kinds=SHOWN_KINDS)
    if not result.models:
        out.print(
            "[bold red]not condensed:[/] no model wrote a note; the text above is the "
            "sources' excerpts, cut to fit the budget"
        )
