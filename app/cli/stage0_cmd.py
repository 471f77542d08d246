"""``switchyard stage0 query|brief``: deterministic retrieval and the task brief.

Retrieval and the brief involve no LLM. ``brief --synth`` adds the opt-in Tier2
synthesis over the brief (role ``tier2``, citation-grounded, GR-008).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.cli.common import (
    add_json_arg,
    add_policy_arg,
    add_session_args,
    console,
    policy_from,
    print_json,
    repo_top,
    run_stoppable,
)
from app.cli.progress import StderrProgress
from app.counted import counted
from app.errors import UsageError
from app.shown import clean

if TYPE_CHECKING:
    from rich.table import Table

    from app.pipeline.tier2 import Tier2Result
    from app.policy.schema import Policy
    from app.stage0.brief import Brief
    from app.stage0.engine import Stage0
    from app.stage0.result import LaneExplain, QueryResult

#: Below this many files to scan (or contents to tokenize) no progress bar is shown.
PROGRESS_MIN = 300


def register(sub: Any) -> None:
    p = sub.add_parser(
        "stage0", help="deterministic retrieval and task briefs (no LLM unless brief --synth)"
    )
    ssub = p.add_subparsers(dest="stage0_command", metavar="ACTION", required=True)

    q = ssub.add_parser(
        "query",
        help="the chunks Stage0 would give a model for TEXT",
        description="TF-IDF relevance + MMR within the token budget, over the repository's "
        "git-visible files. The index is cached in REPO/.switchyard/stage0/.",
    )
    q.add_argument("text", metavar="TEXT", help="the query")
    _common(q)
    q.add_argument(
        "--k",
        type=int,
        metavar="N",
        help="picks of the chunks lane (default: policy top_k); the code lane adds up to "
        "--code-k code units the chunks lane did not take",
    )
    q.add_argument(
        "--code-k",
        type=int,
        metavar="N",
        help="picks of the code lane (default: policy code_top_k; 0: none, so --k bounds all)",
    )
    q.add_argument("--explain", action="store_true", help="why each candidate was picked/dropped")
    add_json_arg(q)
    q.set_defaults(handler=_query)

    b = ssub.add_parser(
        "brief",
        help="write TASK_BRIEF.md and brief.json for TASK",
        description="Constitution, spec, memories, code and docs picked for TASK, risks, "
        "approach and metadata. Nothing is generated; empty sections say so.",
    )
    b.add_argument("task", metavar="TASK", help="the task, in words")
    _common(b)
    b.add_argument("--out", type=Path, metavar="DIR", help="default: REPO/.switchyard/brief")
    b.add_argument("--spec", type=Path, metavar="FILE", help="spec file to snapshot")
    b.add_argument("--memory", action="append", default=[], metavar="TEXT", help="a memory")
    b.add_argument("--risk", action="append", default=[], metavar="TEXT", help="a risk bullet")
    b.add_argument(
        "--approach", action="append", default=[], metavar="TEXT", help="an approach bullet"
    )
    t = b.add_argument_group(
        "Tier2 synthesis",
        "With --synth, the brief's sources are summarized by role tier2 as claims that each "
        "cite a chunk id (GR-008), checked, retried once, else dropped: the brief stands on "
        "its own. Cloud only after approval; otherwise the local stand-in.",
    )
    t.add_argument(
        "--synth",
        action="store_true",
        help="opt in to Tier2 for this session and write synthesis.json beside brief.json",
    )
    add_session_args(t, when="with --synth")
    t.add_argument(
        "--session",
        metavar="ID",
        help="reuse a session id: its accepted synthesis of the same brief is cached",
    )
    add_json_arg(b)
    b.set_defaults(handler=_brief)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repo", type=Path, default=Path("."), metavar="PATH", help="default: .")
    p.add_argument("--budget", type=int, metavar="TOKENS", help="default: policy token_budget")
    p.add_argument(
        "--reader",
        metavar="MODEL",
        help="the model that will read the result: the budget shrinks to its context window",
    )
    add_policy_arg(p)


class _Progress(StderrProgress):
    """Stage0's indexing bar (see :class:`app.cli.progress.StderrProgress`)."""

    def __init__(self) -> None:
        super().__init__(
            "stage0", {"scan": "scanning files", "index": "tokenizing"}, minimum=PROGRESS_MIN
        )


def _engine(args: argparse.Namespace, progress: _Progress | None) -> tuple[Stage0, Policy]:
    from app.stage0.engine import Stage0

    policy = policy_from(args).policy
    if args.budget is not None and args.budget < 0:
        raise UsageError("--budget: must be 0 or more")
    return Stage0(repo_top(args.repo), policy, progress=progress), policy


def _reader_window(policy: Policy, reader: str | None) -> int | None:
    if reader is None:
        return None
    model_id = policy.resolve(reader)
    if model_id not in policy.models:
        raise UsageError(f"--reader {reader}: unknown model")
    return policy.models[model_id].context_window or None


def _with_engine(args: argparse.Namespace) -> tuple[Stage0, Policy, _Progress | None]:
    progress = _Progress() if sys.stderr.isatty() else None
    try:
        engine, policy = _engine(args, progress)
        try:
            engine.refresh()
        except BaseException:
            engine.close()
            raise
    finally:
        if progress is not None:
            progress.close()
    engine.progress = None
    return engine, policy, progress


def _query(args: argparse.Namespace) -> int:
    if not args.text.strip():  # (it ranked nothing and exited 0, as a query that matched)
        raise UsageError("TEXT is empty: say what to look for")
    if args.k is not None and args.k < 1:
        raise UsageError("--k: must be 1 or more")
    if args.code_k is not None and args.code_k < 0:
        raise UsageError("--code-k: must be 0 or more")
    engine, policy, _ = _with_engine(args)
    with engine:
        result = engine.query(
            args.text,
            k=args.k,
            code_k=args.code_k,
            budget_tokens=args.budget,
            explain=args.explain,
            context_window=_reader_window(policy, args.reader),
        )
    if args.json:
        print_json(result.model_dump(mode="json"))
        return 0
    _render_query(result)
    return 0


def _render_query(result: QueryResult) -> None:
    from rich.markup import escape
    from rich.table import Table

    out = console()
    c, p = result.corpus, result.params
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(c.skipped.items())) or "none"
    out.print(
        f"corpus {c.hash}: {counted(c.files, 'file')}, {counted(c.chunks, 'chunk')}, "
        f"{counted(c.code_units, 'code unit')} "
        f"(skipped: {skipped})"
    )
    table = Table(box=None, pad_edge=False)
    for col in ("#", "lane", "location", "symbol", "relevance", "mmr", "tokens"):
        table.add_column(
            col, justify="right" if col in {"#", "relevance", "mmr", "tokens"} else "left"
        )
    for i, ch in enumerate(result.selected, start=1):
        # a path or a symbol is any text ("[red]x.py"): shown, never read as markup, and
        # on one line (a file name with a newline split its row in two)
        table.add_row(
            str(i),
            ch.lane,
            escape(clean(ch.location, one_line=True)),
            escape(clean(ch.symbol or "", one_line=True)),
            f"{ch.relevance:.3f}",
            f"{ch.mmr:.3f}",
            str(ch.tokens),
        )
    if result.selected:
        out.print(table)
    else:
        out.print(_nothing_picked(result))
    out.print(
        f"budget: {result.budget_used}/{p.budget_tokens} tokens · λ {p.mmr_lambda} · "
        f"prefilter {p.prefilter} · top_k {p.top_k} · code_top_k {p.code_top_k} · {p.weighting}"
    )
    for lane in result.explain or []:
        if lane.entries:  # with nothing to rank, the lane's line below says why
            out.print(_explain_table(lane))
        taken = f", {lane.already_picked} picked by the chunks lane" if lane.already_picked else ""
        out.print(
            f"{lane.lane}: {lane.matched} matched, {lane.candidates} candidates, "
            f"{lane.below_prefilter} below the prefilter{taken}, {lane.used}/{lane.budget} tokens"
        )


def _nothing_picked(result: QueryResult) -> str:
    """Why a query picked nothing: no chunk matches, or none fits the budget."""
    n = result.matched
    if not n:
        return "no chunk matches the query"
    verb = "matches" if n == 1 else "match"
    return (
        f"{counted(n, 'chunk')} {verb} the query, but none fits the budget of "
        f"{result.params.budget_tokens} tokens"
    )


def _explain_table(lane: LaneExplain) -> Table:
    from rich.markup import escape
    from rich.table import Table

    ex = Table(title=f"explain: {lane.lane} lane", box=None, pad_edge=False)
    for col in ("rank", "status", "rel", "red", "mmr", "location", "matched terms", "why"):
        ex.add_column(col)
    for e in lane.entries:
        terms = " ".join(f"{t.term}:{t.weight:.2f}" for t in e.matched_terms[:3])
        ex.add_row(
            str(e.rank),
            e.status,
            f"{e.relevance:.3f}",
            f"{e.redundancy:.3f}",
            "" if e.mmr is None else f"{e.mmr:.3f}",
            escape(clean(f"{e.path}:{e.start}-{e.end}", one_line=True)),
            escape(terms),
            escape(e.reason),
        )
    return ex


def _check_synth_args(args: argparse.Namespace) -> None:
    if not args.synth:
        for flag, given in (
            ("--approve", args.approve is not None),
            ("--local-only", args.local_only),
            ("--session", args.session is not None),
        ):
            if given:
                raise UsageError(f"{flag}: only with --synth")
        return
    if args.session is not None:
        from app.pipeline.tier2 import SAFE_SESSION_ID

        if not SAFE_SESSION_ID.match(args.session):
            raise UsageError(
                f"--session {args.session!r}: use 1-64 letters, digits, '.', '_' or '-'"
            )


def _brief(args: argparse.Namespace) -> int:
    from app.paths import repo_state_dir
    from app.stage0.brief import BRIEF_JSON, BRIEF_MD, BriefOutError, out_dir_problem

    if not args.task.strip():  # (it wrote a brief of an empty task)
        raise UsageError("TASK is empty: say what the task is")
    if args.spec is not None and not args.spec.is_file():
        # as `run --spec` says it (a folder was "no such file" here, a CLI audit)
        why = "is a directory, not a spec file" if args.spec.is_dir() else "no such spec file"
        raise UsageError(f"--spec {args.spec}: {why}")
    if args.out is not None:  # before the index is built: a bad folder fails fast
        problem = out_dir_problem(args.out)
        if problem is not None:
            raise UsageError(f"--out {args.out}: {problem}")
    _check_synth_args(args)
    engine, policy, _ = _with_engine(args)
    with engine:
        out_dir = args.out if args.out is not None else repo_state_dir(engine.repo, "brief")
        try:
            brief = engine.brief(
                args.task,
                out_dir,
                spec=args.spec,
                memories=args.memory,
                risks=args.risk,
                approach=args.approach,
                budget_tokens=args.budget,
                context_window=_reader_window(policy, args.reader),
            )
        except BriefOutError as exc:
            if args.out is None:
                raise
            raise UsageError(f"--out {exc}") from None
    md, js = out_dir / BRIEF_MD, out_dir / BRIEF_JSON
    repo = engine.repo
    synth: Tier2Result | None = None
    synth_path: Path | None = None
    if args.synth:
        synth = run_stoppable(_synthesize(args, policy, brief, repo))
    if synth is not None and synth.synthesis is not None:
        from app.pipeline.tier2 import write_synthesis

        synth_path = write_synthesis(synth, out_dir)
    else:
        from app.pipeline.tier2 import SYNTHESIS_JSON

        # a synthesis.json left from an earlier brief would pass for this brief's
        (out_dir / SYNTHESIS_JSON).unlink(missing_ok=True)
    if args.json:
        data: dict[str, Any] = {
            "brief_md": str(md),
            "brief_json": str(js),
            "chunk_ids": brief.metadata.chunk_ids,
            "corpus_hash": brief.metadata.corpus_hash,
            "budget_used": brief.metadata.budget_used,
        }
        if synth is not None:
            data["synthesis"] = _synth_json(synth, synth_path)
        print_json(data)
        return 0
    out = console()
    out.print(f"wrote {md}", markup=False)  # a path is any name, "[x]" too
    out.print(f"wrote {js}", markup=False)
    out.print(
        f"{len(brief.code)} code chunks, {len(brief.docs)} doc chunks, "
        f"{brief.metadata.budget_used}/{brief.metadata.params.budget_tokens} tokens "
        f"(+{brief.metadata.reserved_tokens} for constitution, spec and bullets)"
    )
    if synth is not None:
        _render_synth(out, synth, synth_path)
    return 0


async def _synthesize(
    args: argparse.Namespace, policy: Policy, brief: Brief, repo: Path
) -> Tier2Result:
    from app.cli.common import settings_from
    from app.cli.terminal_decider import decider_for
    from app.config import approve_setting
    from app.paths import repo_state_dir
    from app.pipeline.tier2 import synthesize
    from app.router.session import open_session

    settings = settings_from(args)
    async with open_session(
        settings,
        policy,
        decider=decider_for(*approve_setting(settings, args.approve)),
        local_only=args.local_only,
        session_id=args.session,
    ) as session:
        return await synthesize(
            session,
            brief,
            opt_in=True,
            cache_dir=repo_state_dir(repo, "tier2"),
        )


def _synth_json(synth: Tier2Result, path: Path | None) -> dict[str, Any]:
    syn = synth.synthesis
    return {
        "status": synth.status,
        "accepted": syn is not None,
        "synthesis_json": str(path) if path is not None else None,
        "session": synth.session,
        "brief_sha": synth.brief_sha,
        "model": synth.model,
        "runtime": synth.runtime,
        "escalated": synth.escalated,
        "cached": synth.cached,
        "attempts": synth.attempts,
        "claims": len(syn.claims) if syn is not None else 0,
        "contradictions": len(syn.contradictions) if syn is not None else 0,
        "contradictions_detected": synth.contradictions_detected,
        "problems": synth.problems,
        "reason": synth.reason,
    }


def _render_synth(out: Any, synth: Tier2Result, path: Path | None) -> None:
    from rich.markup import escape

    syn = synth.synthesis
    if syn is None:
        out.print(f"tier2: dropped (the brief stands on its own): {escape(synth.reason)}")
        return
    where = "cloud" if synth.escalated else "local"
    how = "cached, no call" if synth.cached else f"attempt {synth.attempts}"
    out.print(f"wrote {path}", markup=False)
    out.print(
        f"tier2: {len(syn.claims)} claims, {len(syn.contradictions)} contradictions · "
        f"{escape(synth.model or '')} ({where}) · {how} · session {escape(synth.session)}"
    )
