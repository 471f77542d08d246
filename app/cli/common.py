"""Helpers shared by the command modules."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from app.config import Settings, load_settings, setting_source
from app.dollars import dollars
from app.errors import Terminated

if TYPE_CHECKING:  # the policy's models cost ~50 ms to import: not before the workbench draws
    from app.policy import LoadedPolicy

T = TypeVar("T")


def absolute(path: Path) -> Path:
    """``path`` made absolute (links resolved); a usage error when the current folder has
    been deleted, which every relative path (``.`` too) depends on."""
    from app.errors import NoWorkingFolder, cwd_exists

    try:
        return path.resolve()
    except FileNotFoundError:
        if cwd_exists():
            raise
        raise NoWorkingFolder() from None


def repo_top(path: Path) -> Path:
    """The top of the git work tree that holds ``path``, as ``run``, ``evidence`` and
    ``merge`` take it: from ``repo/tests`` Stage0 indexed tests/ alone and made a second
    ``.switchyard/`` there. Where git gives no top (not a repository, a bare one), the
    path as given: the engine's own check says what is wrong with it."""
    from app.workspace.git import NotAGitRepo, repo_root

    path = path.expanduser()
    try:
        return repo_root(path)
    except (NotAGitRepo, OSError):
        return path


def add_policy_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--policy",
        metavar="FILE",
        type=Path,
        help="policy file (default: $SWITCHYARD_POLICY, else the shipped model-policy.toml)",
    )


def add_session_args(
    p: argparse.ArgumentParser, *, with_approve: bool = True, when: str = ""
) -> None:
    """``--approve`` and ``--local-only``, the same on every command that opens a session.

    ``when`` qualifies both helps, e.g. "with --synth".
    """
    tail = f", {when}" if when else ""
    if with_approve:
        p.add_argument(
            "--approve",
            choices=("deny", "allow", "ask"),
            help=f"how escalations are approved (default: $SWITCHYARD_APPROVE or ask{tail})",
        )
    p.add_argument(
        "--local-only", action="store_true", help=f"forbid every cloud call (GR-009{tail})"
    )


def add_json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON (stable snake_case keys)")


def settings_from(args: argparse.Namespace) -> Settings:
    return load_settings(policy=getattr(args, "policy", None))


def policy_from(args: argparse.Namespace, settings: Settings | None = None) -> LoadedPolicy:
    from app.policy import load_policy

    settings = settings or settings_from(args)
    return load_policy(settings.policy, source=setting_source(settings, "policy"))


def money(usd: float | None) -> str:
    """Dollars as the CLI prints them (:func:`app.dollars.dollars`); "—" uncapped."""
    return "—" if usd is None else dollars(usd)


def stopper(task: Any, *, second: str, third: str) -> tuple[Callable[[int], None], list[int]]:
    """A signal handler that stops ``task`` the way a user means it, and the signals it
    took: the first cancels (the task settles and records what is in flight), a second
    says ``second`` and waits for that (cancelling again cut the settlement off: its line
    lost, the reservation held), a third says ``third`` and ends the process at once."""
    import os

    taken: list[int] = []

    def stop(signum: int) -> None:
        if len(taken) >= 2:  # a third: out now, the user insists
            print(f"switchyard: {third}", file=sys.stderr)
            sys.stderr.flush()
            os._exit(128 + signum)
        taken.append(signum)
        if len(taken) == 2:
            print(f"switchyard: {second}", file=sys.stderr)
            return
        task.cancel()

    return stop, taken


def _hand_over(loop: Any, sig: int, handler: Any) -> None:
    """``sig`` from the loop's handler to a plain one with no moment between: the loop's
    ``remove_signal_handler`` puts SIG_DFL back first, and a second SIGTERM landing there
    (in any thread: a mask blocks one) ended the process with no word. The plain handler
    goes in first; then the loop forgets its own without touching the signal, and lets go
    of its wakeup fd when it has no other (left to its close, a signal met the fd closed:
    "Exception ignored … Bad file descriptor")."""
    import signal

    signal.signal(sig, handler)
    handlers = getattr(loop, "_signal_handlers", None)
    if not isinstance(handlers, dict):  # (not CPython's unix loop: its own way, as before)
        loop.remove_signal_handler(sig)
        signal.signal(sig, handler)
        return
    handlers.pop(sig, None)
    if not handlers:
        signal.set_wakeup_fd(-1)


def run_stoppable(
    main: Coroutine[Any, Any, T],
    *,
    at_once: bool = False,
    second: str = "settling the call in flight; one moment (once more to stop at once)",
    third: str = "stopped before the call in flight was settled",
) -> T:
    """``asyncio.run(main)``, with a SIGTERM doing what Ctrl-C does: the task is cancelled,
    so that a model call in flight is settled and audited (CALL_CANCELLED) before the
    process ends (143); see :func:`stopper` for a second and a third. A SIGTERM killed
    ``ask`` mid-call with no line, its reservation held until it expired and then charged
    in full.

    ``at_once``: the signal is taken by a plain handler the moment it comes, as asyncio
    takes Ctrl-C, not when the loop next looks: a command whose loop blocks in a
    subprocess (``merge``: git merging, inside a commit point) took it only after the
    commit point, cancelled the recording of its outcome and ended with no word."""
    import asyncio
    import signal

    async def stoppable() -> T:
        loop = asyncio.get_running_loop()
        stop, taken = stopper(asyncio.current_task(), second=second, third=third)

        def plain(signum: int, _frame: object) -> None:
            stop(signum)
            with contextlib.suppress(RuntimeError):  # (closed by now: nothing to wake)
                loop.call_soon_threadsafe(lambda: None)  # (a loop asleep in select wakes)

        try:
            if at_once:
                signal.signal(signal.SIGTERM, plain)
            else:
                loop.add_signal_handler(signal.SIGTERM, stop, signal.SIGTERM)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            return await main
        try:
            return await main
        except asyncio.CancelledError:
            if taken:
                raise Terminated() from None
            raise
        finally:
            # the rest of the way out takes a signal the same way (a second waits, a third
            # ends at once): left to the loop's close, a second one met its wakeup fd
            # closed ("Exception ignored … Bad file descriptor"), or SIG_DFL after it
            if not at_once:
                _hand_over(loop, signal.SIGTERM, plain)

    return asyncio.run(stoppable())


def print_json(data: Any) -> None:
    """A command's ``--json`` result: one object, indented (docs/json.md names its fields)."""
    json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def print_json_line(data: Any) -> None:
    """One object of a JSONL stream (``audit tail --json``): canonical, on its own line,
    flushed (``--follow`` prints as lines come)."""
    from app.audit.canonical import canonical_json

    sys.stdout.write(canonical_json(data) + "\n")
    sys.stdout.flush()


def console() -> Any:
    """The console commands print to: text from outside is shown, never obeyed (an ESC
    in an audit detail reached the terminal; app/cli/safe_console.py). Lines are folded
    to a terminal's width, never in a pipe or a file (:func:`piped_console`)."""
    from app.cli.safe_console import piped_console

    return piped_console(highlight=False)


def an_id(text: str) -> str:
    """An argparse ``type`` for an id (a session, a run): not empty. ``--session ''`` was
    taken as no filter by some commands and as an id by others ("session " with none)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an id cannot be empty")
    return text


def whole_number(low: int, high: int | None = None, *, why: str = "") -> Callable[[str], int]:
    """An argparse ``type``: a whole number from ``low`` (to ``high``), or a usage error
    saying which (``why`` says where the bound comes from, e.g. " (ten years)")."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < low or (high is not None and value > high):
            span = f">= {low}" if high is None else f"{low} to {high:,}{why}"
            raise argparse.ArgumentTypeError(f"must be {span}, got {value}")
        return value

    return parse
