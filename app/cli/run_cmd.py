"""``switchyard run``: the whole pipeline, headless, with progress on the terminal."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

from app.cli import audit_lines
from app.cli.common import (
    absolute,
    add_json_arg,
    add_policy_arg,
    add_session_args,
    console,
    policy_from,
    print_json,
    settings_from,
    stopper,
)
from app.errors import UsageError

#: second_opinion asks the §2 sidecar for advice on the change before the Judge
ROLES_THAT_ESCALATE = (
    "architect",
    "implementer",
    "librarian",
    "tutor",
    "judge",
    "ace",
    "second_opinion",
)
#: audit kinds printed as the run goes (the routes and calls are in `switchyard audit`)
SHOWN_KINDS = (
    "escalation",
    "approval",
    "denial",
    "skip",
    "runtime_fallback",
    "degradation",
    "budget_stop",
    "refusal",
    "verdict",
)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run the pipeline on a task: Stage0 → Architect → Implementer → Judge",
        description="Plan, implement in a git worktree, test in a sandbox, judge, and record "
        "the evidence bundle. Exit 0 when a merge-ready result exists, 1 when the run ended "
        "without one (the reason is printed), 2 for usage errors.",
    )
    p.add_argument("task", nargs="?", help="what to do, e.g. 'make the failing parser test pass'")
    p.add_argument(
        "--demo",
        action="store_true",
        help="run on a fresh copy of the shipped example repository (examples/parser-bug)",
    )
    p.add_argument("--repo", type=Path, help="the git repository (default .; not with --demo)")
    p.add_argument("--spec", type=Path, metavar="FILE", help="a spec with a §8 overrides block")
    p.add_argument(
        "--escalate",
        action="append",
        default=[],
        choices=ROLES_THAT_ESCALATE,
        metavar="ROLE",
        help="the user's explicit escalation request for ROLE (§3); repeatable",
    )
    p.add_argument(
        "--synth",
        action="store_true",
        help="opt this session in to the Tier2 synthesis of the brief (cloud after approval; "
        "also SWITCHYARD_TIER2=true or the spec's 'Stage0 Tier2 (NotebookLM): YES')",
    )
    p.add_argument(
        "--full-sweep",
        action="store_true",
        help="the Librarian sweeps the whole repository for the brief (its §3 full_sweep "
        "trigger: Kimi after approval); also the spec's 'Librarian full sweep: YES'",
    )
    add_session_args(p)
    p.add_argument("--test-command", metavar="CMD", help="the project's test command")
    p.add_argument(
        "--allow-unsandboxed",
        action="store_true",
        help="where neither bwrap nor user namespaces (`unshare`) work, run the test command "
        "with no sandbox (network on, writes unconfined; audited) instead of stopping; refused "
        "under local_only (GR-010; also [sandbox] allow_unsandboxed in the policy)",
    )
    add_policy_arg(p)
    add_json_arg(p)
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    # Every argument is checked before anything is written: --demo recreates its repository
    # (the last demo run's bundle with it), so it comes last of all.
    if args.demo and args.repo is not None:
        raise UsageError("--demo runs on a fresh copy of the example repository: drop --repo")
    if args.demo and args.task is None:
        from app.pipeline.demo import DEMO_TASK

        args.task = DEMO_TASK
    if not (args.task or "").strip():  # blank is no task: the pipeline would plan nothing
        raise UsageError("a TASK is required (or --demo)")
    if args.test_command is not None:
        _check_test_command(args.test_command)
    repo = None if args.demo else _git_repo(args.repo if args.repo is not None else Path("."))
    if repo is not None:
        from app.workspace.testcmd import load_repo_config

        # the repository's own settings, read before anything starts: a mistake in them
        # is a usage error naming the line (the run started, and stopped on it, exit 1)
        load_repo_config(repo)
    settings = settings_from(args)
    loaded = policy_from(args, settings)
    policy = loaded.policy
    overrides = None
    if args.spec is not None:
        from app.backends.local_only import effective_local_only

        session_local_only = effective_local_only(policy, settings, args.local_only)
        overrides = _spec_overrides(args.spec, loaded, session_local_only)
    if overrides is not None:
        policy = overrides.apply(policy)
    if repo is None:
        from app.paths import ensure_dir
        from app.pipeline.demo import prepare_demo_repo

        repo = prepare_demo_repo(ensure_dir(settings.data_dir / "demo"))
    return asyncio.run(_pipeline(args, settings, policy, repo, overrides))


def _git_repo(given: Path) -> Path:
    """The top of the git work tree ``--repo`` names, or a usage error saying why not."""
    path = absolute(given)
    if not path.exists():
        raise UsageError(f"--repo {given}: no such folder")
    if not path.is_dir():
        raise UsageError(f"--repo {given}: not a folder")
    from app.workspace.git import NotAGitRepo, current_branch, repo_root, rev_parse

    if (path / ".git").exists():
        top = path
    else:
        try:
            top = repo_root(path)
        except NotAGitRepo:
            raise UsageError(f"--repo {given}: not a git repository") from None
    if rev_parse(top, "HEAD") is None and current_branch(top) is not None:
        # HEAD names a branch with no commit (an unborn one); any other failure (git
        # refusing the folder's owner, a broken .git) is the run's to report as it is.
        # (the run started, stopped on it and sealed a bundle: exit 1 for bad input)
        raise UsageError(
            f"--repo {given}: the repository has no commit yet: a run branches from one "
            "(commit, and start again)"
        )
    return top


def _check_test_command(command: str) -> None:
    """``--test-command`` as the run will split it: an empty or unbalanced one, or one
    whose program is found nowhere, is a usage error here, not a run stopped (and sealed)
    once it has started."""
    from app.errors import ConfigError
    from app.workspace.testcmd import on_the_path, split_command

    try:
        argv = split_command(command, "--test-command")
    except ConfigError as exc:  # (empty, or shlex's "No closing quotation")
        raise UsageError(f"{exc}") from None
    program = argv[0]
    # The argv is executed as it is, no shell in between (app.workspace.sandbox): a bare
    # name found nowhere on the PATH the sandbox passes on can never start, nor can a
    # shell's own words ("cd x && …", "FOO=1 pytest") unless a program of that name is
    # there. A name with a "/" is left to the run's preflight (testloop.py): a relative
    # one is looked up in the worktree, which must hold it in its last commit.
    if "/" in program or on_the_path(program):
        return
    raise UsageError(f"--test-command: {program} is not found on PATH" + _shell_hint(argv))


#: a shell's own words, which name no program: said when the test command's first is one
_SHELL_WORDS = frozenset({"cd", "export", "source", ".", "set", "unset", "eval", "ulimit"})
_SHELL_OPERATORS = frozenset({"&&", "||", ";", "|", ">", "<", ">>", "2>&1"})


def _shell_hint(argv: list[str]) -> str:
    """Why a test command written for a shell cannot start ("" for any other)."""
    first = argv[0]
    assignment = "=" in first and first.split("=", 1)[0].isidentifier()
    if assignment or first in _SHELL_WORDS or _SHELL_OPERATORS.intersection(argv):
        return " (it runs as a program with its arguments, not through a shell: sh -c '...')"
    return ""


def _spec_overrides(path: Path, loaded: Any, session_local_only: bool) -> Any:
    """Lint the spec first (§8): whatever it rejects stops the run before any model call,
    exit 2 with FILE:LINE; whatever it accepts is applied. ``session_local_only``: the run
    is local_only whatever the spec says (the flag, the environment, the config)."""
    from app.policy.spec import read_spec
    from app.policy.spec_lint import lint_block
    from app.policy.spec_overrides import spec_overrides

    block = read_spec(path)
    report = lint_block(block, loaded, spec_dir=path.parent, session_local_only=session_local_only)
    if report.errors:
        raise UsageError(
            f"{path}: the spec's §8 block is not compliant; nothing was run\n"
            + "\n".join(str(p) for p in report.errors)
        )
    for warning in report.warnings:  # (accepted, and said: an override can turn a trigger off)
        print(f"switchyard: {warning}", file=sys.stderr)
    try:
        overrides = spec_overrides(block, loaded.policy)
    except ValueError as exc:  # the lint reports every item it cannot read: never here
        raise UsageError(f"{exc}; nothing was run") from None
    if not overrides.exercised("implementer"):
        line = next(
            (e.line for e in block.section("roles") if "implementer" in e.key), block.start_line
        )
        raise UsageError(
            f"{path}:{line}: roles.Implementer/Rust Ace: the spec marks it NO, and "
            "`switchyard run` implements a change: use a spec that exercises the Implementer"
        )
    return overrides


async def _pipeline(
    args: argparse.Namespace, settings: Any, policy: Any, repo: Path, overrides: Any
) -> int:
    from app.bus import Bus
    from app.cli.terminal_decider import decider_for
    from app.config import approve_setting
    from app.pipeline.control import RunControl
    from app.pipeline.runner import RunOptions, run_pipeline
    from app.router.session import open_session

    bus = Bus()
    local_only = args.local_only or bool(overrides and overrides.local_only)
    options = RunOptions(
        repo=repo,
        spec=args.spec,
        escalate=frozenset(args.escalate),
        test_command=args.test_command,
        allow_unsandboxed=args.allow_unsandboxed,
        overrides=overrides,
        tier2=args.synth or settings.tier2 or bool(overrides and overrides.tier2),
        full_sweep=args.full_sweep or bool(overrides and overrides.full_sweep),
    )
    async with open_session(
        settings,
        policy,
        # the progress printer is no UI that answers: `ask` prompts on the terminal
        decider=decider_for(*approve_setting(settings, args.approve)),
        bus=bus,
        local_only=local_only,
    ) as session:
        printer = asyncio.create_task(_progress(bus, quiet=args.json))
        await asyncio.sleep(0)
        control = RunControl()
        work = asyncio.create_task(run_pipeline(session, args.task, options, control))
        # SIGTERM stops the run like Ctrl-C: the evidence bundle is still sealed
        loop = asyncio.get_running_loop()
        # a second Ctrl-C raised KeyboardInterrupt inside the shielded sealing: the bundle
        # was left unsealed, the worktree and branch behind, and the line below said it
        # was sealed. A second signal now waits for the sealing; a third ends the process
        # at once, saying the evidence may be unsealed.
        stop, stopped_by = stopper(
            work,
            second="sealing the run's evidence; one moment (once more to stop at once, unsealed)",
            third="stopped before the evidence was sealed",
        )

        def terminated(signum: int) -> None:
            # a SIGTERM is not the user's Ctrl-C: the run was recorded "cancelled by the
            # user" either way (a CLI audit; the ACP agent already told them apart)
            if not stopped_by:
                control.cancel_reason = "cancelled: the process was terminated (SIGTERM)"
            stop(signum)

        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, terminated, signal.SIGTERM)
            loop.add_signal_handler(signal.SIGINT, stop, signal.SIGINT)
        try:
            outcome = await work
        except asyncio.CancelledError:
            said = (
                "its evidence bundle was sealed"
                if control.ended is not None
                else "its evidence may be unsealed (switchyard evidence verify says)"
            )
            print(f"switchyard: run stopped; {said}", file=sys.stderr)
            if args.json and control.ended is not None:  # a script still learns which run
                print_json(_result(control.ended, session.id))
            # as a process killed by the signal would end: 130 for Ctrl-C, 143 for SIGTERM
            return 128 + (stopped_by[0] if stopped_by else signal.SIGINT)
        except Exception:
            # an internal error: its line (main's) says what broke; the object says which
            # run and where its sealed bundle is
            if args.json and control.ended is not None:
                print_json(_result(control.ended, session.id))
            raise
        finally:
            await asyncio.sleep(0.05)
            printer.cancel()
    if args.json:
        print_json(_result(outcome, session.id))
    else:
        print_outcome(outcome, repo, console())
    return 0 if outcome.outcome == "merge_ready" else 1


def _result(outcome: Any, session: str) -> dict[str, Any]:
    """``run --json``'s object (docs/json.md), however the run ended."""
    return {
        "run_id": outcome.run_id,
        "outcome": outcome.outcome,
        "reason": outcome.reason,
        "bundle": str(outcome.bundle) if outcome.bundle else None,
        "tests_green": outcome.tests_green,
        "high_risk": outcome.high_risk,
        "gate": outcome.gate.model_dump() if outcome.gate else None,
        "session": session,
    }


def print_outcome(outcome: Any, repo: Path, out: Any) -> None:
    """The run's last lines. Each is one line whatever the width (a terminal wraps it): at
    80 columns the evidence path was broken in two, and could not be pasted."""
    colour = "green" if outcome.outcome == "merge_ready" else "red"
    # the reason carries a model's or a test's words, the paths any name: not markup
    out.print(f"[bold {colour}]{outcome.outcome}[/] ", end="")
    out.print(f"run {outcome.run_id}: {outcome.reason}", markup=False, soft_wrap=True)
    out.print(f"evidence: {outcome.bundle}", markup=False, soft_wrap=True)
    if outcome.outcome == "merge_ready":
        # quoted as a shell reads it: a path with spaces pasted as printed failed
        merge = f"merge with: switchyard merge {outcome.run_id} --repo {shlex.quote(str(repo))}"
        out.print(merge, markup=False, soft_wrap=True)


async def _progress(bus: Any, *, quiet: bool) -> None:
    """Print the run as it happens (stderr when --json keeps stdout for the result)."""
    from rich.markup import escape

    from app.audit.types import AuditLine
    from app.bus import AuditAppended, Notice, StageChanged, TestLoopFinished
    from app.cli.safe_console import piped_console

    out = piped_console(stderr=quiet, highlight=False)
    sub = bus.subscribe(maxsize=4096, kinds=(StageChanged, Notice, TestLoopFinished, AuditAppended))
    async for event in sub:
        if isinstance(event, StageChanged):
            # a model's words (code, ``list[str]``) are text, never Rich markup
            where = f" · {event.model} @ {event.runtime}" if event.model else ""
            text = escape(f"{event.status}{where} {event.detail}")
            out.print(f"[cyan]{event.stage:<11}[/] {text}")
        elif isinstance(event, TestLoopFinished):
            mark = "[green]PASS[/]" if event.passed else "[red]FAIL[/]"
            how = f"exit {event.exit_code}, {event.runner}"
            out.print(f"[cyan]tests[/]       loop {event.loop} {mark} ({how})")
        elif isinstance(event, Notice):
            out.print(f"[yellow]note[/]        {escape(event.text)}")
        elif isinstance(event, AuditAppended) and event.line.get("kind") in SHOWN_KINDS:
            line = AuditLine.model_validate(event.line)
            audit_lines.print_brief(out, [line], prefix="audit ")
    sys.stdout.flush()
