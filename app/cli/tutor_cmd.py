"""``switchyard tutor``: the maieutic coach (§1), headless.

With a QUESTION: one turn, printed questions first (the hint after, the answer held back
on a first turn unless ``--reveal``). Without one, in a terminal: a short conversation
that reads follow-up lines until the policy's turn cap, end of input or an empty line.
The conversation itself (memory, cap, held-back answer, audit) is
:class:`app.pipeline.tutor.TutorSession`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rich.markup import escape

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
    stopper,
)
from app.errors import SwitchyardError, Terminated, UsageError

if TYPE_CHECKING:
    from app.audit.types import AuditLine
    from app.pipeline.tutor import TutorReply, TutorSession

T = TypeVar("T")

ESCALATE = "/escalate"
REVEAL = "/reveal"
NO_ANSWER = "the tutor gave no answer this turn: it wants you to try"
#: audit kinds worth a line under a turn (the route and call lines are in `switchyard audit`)
SHOWN_KINDS = ("escalation", "approval", "denial", "skip", "runtime_fallback", "degradation")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "tutor",
        help="the tutor: a short coaching session that asks questions first",
        description="Ask the tutor role (a local coach) a QUESTION. It answers with "
        "questions first and a hint; the full answer of a first turn is held back until "
        "you reply (or --reveal). Without a QUESTION, in a terminal, follow-up lines go on "
        "the same conversation until the policy's turn cap (roles.tutor.max_turns), the end "
        f"of input or an empty line; '{REVEAL}' shows a held answer, '{ESCALATE} QUESTION' "
        "asks the cloud fallback for that turn. Exit 0 when answered, 1 when the tutor "
        "could not answer, 2 for usage errors.",
    )
    p.add_argument("question", nargs="?", help="what to learn about (omit: interactive)")
    p.add_argument(
        "--repo",
        type=Path,
        metavar="PATH",
        help="ground the tutor in this git repository (Stage0 picks a few relevant chunks)",
    )
    p.add_argument(
        "--escalate",
        action="store_true",
        help="the user's explicit request for the tutor's cloud fallback, with approval "
        "(interactive: for every turn)",
    )
    add_session_args(p)
    p.add_argument(
        "--reveal",
        action="store_true",
        help="print the answer even on a first turn (skips the questions-first hold)",
    )
    add_policy_arg(p)
    add_json_arg(p)
    p.set_defaults(handler=_tutor)


def _tutor(args: argparse.Namespace) -> int:
    question: str | None = args.question
    if question is not None and not question.strip():
        raise UsageError("the QUESTION is empty")
    if question is None:
        if args.json:
            raise UsageError("--json needs a QUESTION (the interactive mode is for a terminal)")
        if not sys.stdin.isatty():
            raise UsageError(
                "a QUESTION is required (without one the tutor is interactive, "
                "which needs a terminal on stdin)"
            )
    settings = settings_from(args)
    policy = policy_from(args, settings).policy
    if "tutor" not in policy.roles:
        raise UsageError(f"{settings.policy}: the policy has no tutor role")
    repo = _repo(args.repo)
    if question is not None:
        return run_stoppable(_one_turn(args, settings, policy, repo, question.strip()))
    return _interactive(args, settings, policy, repo)


def _repo(path: Path | None) -> Path | None:
    if path is None:
        return None
    from app.stage0.corpus import check_repo

    return check_repo(repo_top(path))  # NotAGitRepo: one line, exit 2


# ── one turn ─────────────────────────────────────────────────────────────────────────────


async def _one_turn(
    args: argparse.Namespace, settings: Any, policy: Any, repo: Path | None, question: str
) -> int:
    from app.cli.terminal_decider import decider_for
    from app.config import approve_setting
    from app.pipeline.tutor import TutorSession
    from app.router.session import open_session

    async with open_session(
        settings,
        policy,
        decider=decider_for(*approve_setting(settings, args.approve)),
        local_only=args.local_only,
    ) as session:
        tutor = TutorSession.for_session(session, repo=repo)
        failure: SwitchyardError | None = None
        reply: TutorReply | None = None
        try:
            reply = await tutor.ask(question, escalate=args.escalate)
        except SwitchyardError as exc:
            if not args.json:
                raise
            failure = exc
        if reply is not None and args.reveal:
            tutor.reveal()
            reply = tutor.last
        lines = await session.audit.lines(session=session.id)

    if args.json:
        data: dict[str, Any] = {
            "ok": failure is None,
            "error": str(failure) if failure is not None else None,
            "session": session.id,
            **_grounding(tutor),
            "audit": [line.model_dump(mode="json", by_alias=True) for line in lines],
        }
        if reply is not None:
            data.update(reply.to_json())
        print_json(data)
        return 0 if failure is None else 1
    assert reply is not None
    out = console()
    _print_grounding(out, tutor)
    _print_reply(out, reply, interactive=False)
    _print_audit(out, lines)
    return 0


# ── a conversation ───────────────────────────────────────────────────────────────────────


def _interactive(args: argparse.Namespace, settings: Any, policy: Any, repo: Path | None) -> int:
    """One event loop across turns; lines are read between them, with nothing running."""
    from app.cli.terminal_decider import decider_for
    from app.config import approve_setting
    from app.pipeline.tutor import TutorReplyInvalid, TutorSession, TutorTurnCapReached
    from app.router.service import RouteRefused
    from app.router.session import open_session

    out = console()
    with asyncio.Runner() as runner:
        turns = _Turns(runner)
        stack = AsyncExitStack()
        session = runner.run(
            stack.enter_async_context(
                open_session(
                    settings,
                    policy,
                    decider=decider_for(*approve_setting(settings, args.approve)),
                    local_only=args.local_only,
                )
            )
        )
        try:
            tutor = TutorSession.for_session(session, repo=repo)
            cap = f"up to {tutor.max_turns} turns" if tutor.max_turns else "no turn cap"
            out.print(
                f"[bold]tutor[/] · {cap} · questions first. An empty line or Ctrl-D ends; "
                f"{REVEAL} shows a held answer; {ESCALATE} QUESTION asks the cloud fallback "
                "(with approval)."
            )
            seen = 0
            while True:
                line = turns.run(_read_line(f"you ({_next_label(tutor)}) › "))
                if line is None or not line.strip():
                    break
                text = line.strip()
                if text == REVEAL:
                    _print_reveal(out, tutor)
                    continue
                escalate = args.escalate
                if text == ESCALATE or text.startswith(ESCALATE + " "):
                    text, escalate = text.removeprefix(ESCALATE).strip(), True
                    if not text:
                        out.print(f"{ESCALATE} needs a question after it")
                        continue
                try:
                    reply = turns.run(tutor.ask(text, escalate=escalate))
                except TutorTurnCapReached as exc:
                    out.print(f"[bold yellow]{escape(str(exc))}[/]")
                    break
                except (TutorReplyInvalid, RouteRefused) as exc:
                    out.print(f"[bold red]{escape(str(exc))}[/]")
                    continue
                if args.reveal:
                    tutor.reveal()
                    reply = tutor.last or reply
                if reply.n == 1:
                    _print_grounding(out, tutor)
                _print_reply(out, reply, interactive=True)
                lines = turns.run(session.audit.lines(session=session.id))
                _print_audit(out, lines[seen:])
                seen = len(lines)
                out.print()
                if tutor.capped:
                    out.print(
                        f"[bold yellow]that was the last of the {tutor.max_turns} turns the "
                        "policy allows (roles.tutor.max_turns: keep sessions short).[/] "
                        "Run `switchyard tutor` again for a new session."
                    )
                    break
        finally:
            runner.run(stack.aclose())  # (not cancelled by a signal: see _Turns)
    return 0


class _Turns:
    """Runs each step of the interactive loop with a SIGTERM doing what it does in one
    turn (:func:`app.cli.common.run_stoppable`): the step is cancelled, so a model call in
    flight is settled and audited (CALL_CANCELLED), the session closes, and the process
    ends 143. A SIGTERM killed the loop at once, the call unrecorded and its reservation
    held until it expired. A second signal waits for the close, a third ends at once."""

    def __init__(self, runner: asyncio.Runner) -> None:
        self.runner = runner
        self.task: asyncio.Task[Any] | None = None
        self.stop, self.taken = stopper(
            self,
            second="closing the session; one moment (once more to stop at once)",
            third="stopped before the session was closed",
        )
        with contextlib.suppress(NotImplementedError, RuntimeError):
            runner.get_loop().add_signal_handler(signal.SIGTERM, self.stop, signal.SIGTERM)

    def cancel(self) -> None:  # (the stopper's first signal)
        if self.task is not None:
            self.task.cancel()

    def run(self, step: Coroutine[Any, Any, T]) -> T:
        async def tracked() -> T:
            self.task = asyncio.current_task()
            try:
                if self.taken:  # a signal that came between two steps
                    raise asyncio.CancelledError
                return await step
            finally:
                self.task = None
                step.close()  # (never started when the signal came first)

        try:
            done = self.runner.run(tracked())
        except asyncio.CancelledError:
            if self.taken:
                raise Terminated() from None
            raise
        if self.taken:  # it came as the step ended: it stops the loop all the same
            raise Terminated()
        return done


async def _read_line(prompt: str) -> str | None:
    """The next line typed, through the terminal's one reader (the approval prompts'):
    with input() beside it, an approval prompt that had timed out kept its reader
    waiting, and that reader took the next question typed, which was lost."""
    from app.cli.terminal_decider import terminal_line

    sys.stdout.write(prompt)
    sys.stdout.flush()
    line = await terminal_line(sys.stdin)
    if not line:
        sys.stdout.write("\n")
        return None
    return line.rstrip("\n").removesuffix("\r")


def _next_label(tutor: TutorSession) -> str:
    n = tutor.turns_used + 1
    return f"turn {n}/{tutor.max_turns}" if tutor.max_turns else f"turn {n}"


# ── printing ─────────────────────────────────────────────────────────────────────────────


def _grounding(tutor: TutorSession) -> dict[str, Any]:
    g = tutor.grounding
    return {
        "grounded_in": g.sources if g is not None else [],
        "grounding_note": tutor.grounding_note,
    }


def _print_grounding(out: Any, tutor: TutorSession) -> None:
    if tutor.grounding is not None and tutor.grounding.sources:
        out.print(f"[dim]grounded in {escape(', '.join(tutor.grounding.sources))}[/]")
    elif tutor.grounding is not None:
        out.print("[dim]grounded in nothing: Stage0 found no chunk for the question[/]")
    if tutor.grounding_note:
        out.print(f"[yellow]note[/] {escape(tutor.grounding_note)}")


def _print_reply(out: Any, reply: TutorReply, *, interactive: bool) -> None:
    where = f" · {reply.model} ({reply.runtime})" if reply.model else ""
    out.print(f"[bold cyan]{reply.label}[/]{escape(where)}")
    if reply.escalate_requested:
        how = (
            f"answered by {reply.model}"
            if reply.escalated
            else f"it stayed local: {reply.stayed_local}"
            if reply.stayed_local
            else "it stayed local (local_only, denied, unavailable or over budget: see the "
            "audit lines)"
        )
        out.print(f"[magenta]escalation requested:[/] {escape(how)}")
    out.print("[bold]first, think about these:[/]")
    for n, item in enumerate(reply.questions, 1):
        out.print(f" {n}. {item}", markup=False)
    if reply.hint:
        out.print("[bold]hint:[/] ", end="")
        out.print(reply.hint, markup=False)
    if reply.answer_withheld:
        later = (
            f"reply to the questions first, or type {REVEAL}"
            if interactive
            else "think about the questions first (--reveal prints it)"
        )
        out.print(f"[dim]answer held back: {later}[/]")
    elif reply.answer:
        out.print("[bold]answer:[/] ", end="")
        out.print(reply.answer, markup=False)
    else:  # (--reveal printed the questions and nothing after them)
        out.print(f"[dim]{NO_ANSWER}[/]")


def _print_reveal(out: Any, tutor: TutorSession) -> None:
    answer = tutor.reveal()
    if answer is None:
        out.print("nothing to reveal yet: ask a question first")
    elif not answer:
        out.print(NO_ANSWER)
    else:
        out.print("[bold]answer:[/] ", end="")
        out.print(answer, markup=False)


def _print_audit(out: Any, lines: list[AuditLine]) -> None:
    audit_lines.print_brief(out, lines, kinds=SHOWN_KINDS, prefix="audit ", style="dim")
