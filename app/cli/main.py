"""The ``switchyard`` command line. Each command group lives in its own module."""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from app import __version__
from app.errors import NoWorkingFolder, SwitchyardError, cwd_exists

# Each command and the module that registers it (``register(subparsers)``); a module
# imports its heavy things lazily. One command's module is all a run imports: the others
# bring config, policy and pydantic models a first frame does not need (~0.2 s). A test
# checks this table against what the modules register.
COMMANDS = {
    "policy": "app.cli.policy_cmd",
    "route": "app.cli.route_cmd",
    "audit": "app.cli.audit_cmd",
    "budget": "app.cli.budget_cmd",
    "local": "app.cli.local_cmd",
    "ask": "app.cli.ask_cmd",
    "run": "app.cli.run_cmd",
    "evidence": "app.cli.evidence_cmd",
    "merge": "app.cli.merge_cmd",
    "stage0": "app.cli.stage0_cmd",
    "memory": "app.cli.memory_cmd",
    "tui": "app.cli.tui_cmd",
    "demo": "app.cli.tui_cmd",
    "spec": "app.cli.spec_cmd",
    "tutor": "app.cli.tutor_cmd",
    "librarian": "app.cli.librarian_cmd",
    "acp": "app.cli.acp_cmd",
    "serve": "app.cli.serve_cmd",
}
COMMAND_MODULES = tuple(dict.fromkeys(COMMANDS.values()))

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse with one clear line and exit code 2 on usage errors (its own default)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        # the parser of the (sub)command parsed last: an argument it does not know is its
        # usage error, not the top level's (`merge X --bogus` printed `switchyard
        # [-h] [--version] COMMAND ...`)
        self.set_defaults(_parser=self)

    def error(self, message: str) -> None:  # type: ignore[override]
        from app.audit.masking import mask_text

        # masked as every one-line error is: argparse quotes the value it refused, and a
        # key pasted into the wrong flag (`--approve sk-…`) was printed whole (a CLI audit)
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: usage error: {mask_text(message)[0]}\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or only ``command``'s group when it is one of ours."""
    parser = _Parser(
        prog="switchyard",
        description="Local-first model router and terminal workbench for AI coding sessions.",
    )
    parser.add_argument("--version", action="version", version=f"switchyard {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    names = (COMMANDS[command],) if command in COMMANDS else COMMAND_MODULES
    for name in names:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # a command group not built yet
        module.register(sub)
    return parser


#: what a command ends with when its reader went away mid-output
BROKEN_PIPE = 141


#: the workbench's own flags, which `switchyard` alone takes as `switchyard tui` does
_WORKBENCH_FLAGS = ("--repo", "--local-only", "--policy", "--theme")


def _workbench_flags(argv: Sequence[str]) -> bool:
    """``argv`` starts with a flag of the workbench's and names no command."""
    first = argv[0].split("=", 1)[0]
    return first in _WORKBENCH_FLAGS and not any(a in COMMANDS for a in argv)


class _Output:
    """The standard output, as commands write to it, keeping the error a write met: a full
    disk (``> /dev/full``) or a closed output (``>&-``, where Python leaves ``sys.stdout``
    None) ended in a traceback, or printed nowhere and exited 0. Everything else is the
    real stream's."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.failed: OSError | None = None

    def write(self, text: str) -> int:
        if self.stream is None:
            self.failed = OSError(errno.EBADF, "it is closed")
            raise self.failed
        try:
            return int(self.stream.write(text))
        except OSError as exc:
            self.failed = exc
            raise

    def flush(self) -> None:
        if self.stream is None:
            return
        try:
            self.stream.flush()
        except OSError as exc:
            self.failed = exc
            raise

    def isatty(self) -> bool:
        return self.stream is not None and bool(self.stream.isatty())

    def __getattr__(self, name: str) -> Any:
        if self.stream is None:  # (Rich asks for attributes it may do without)
            raise AttributeError(name)
        return getattr(self.stream, name)


def main(argv: Sequence[str] | None = None) -> int:
    output = _Output(sys.stdout)
    sys.stdout = output
    try:
        try:
            code = _main(argv, output)
        except SystemExit as done:
            # argparse's usage error, --help or --version: what it printed goes out, and
            # its own code stands unless the output failed where it said all was well
            failed = _flush(output)
            if failed is None and output.failed is not None and not done.code:
                failed = _said(output.failed)  # argparse's print swallowed the error
            if failed is not None and not done.code:
                raise SystemExit(failed) from None
            raise
        # a file or a pipe holds a small output until Python's flush at exit, where a full
        # disk was "Exception ignored" and exit 120: it is written here, and said
        failed = _flush(output)
        return code if failed is None else failed
    finally:
        if sys.stdout is output:
            if output.failed is not None:
                _silence(output.stream)
            sys.stdout = output.stream if output.stream is not None else open(os.devnull, "w")  # noqa: SIM115


def _flush(output: _Output) -> int | None:
    """Write what the output holds; the exit code its failure calls for, or None."""
    if output.failed is not None:  # said already (or a caller's to say)
        return None
    try:
        output.flush()
    except OSError as exc:
        return _said(exc)
    return None


def _said(exc: OSError) -> int:
    """Say that the output failed (a reader gone is said by its code alone, 141)."""
    if isinstance(exc, BrokenPipeError):
        return BROKEN_PIPE
    print(f"switchyard: cannot write the standard output: {exc.strerror or exc}", file=sys.stderr)
    return 2


def _silence(stream: Any) -> None:
    """Point a failed output's descriptor at /dev/null, so that what its buffer still
    holds goes nowhere at exit (a second error, "Exception ignored", exit 120)."""
    try:
        fd = stream.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
    except (AttributeError, OSError, ValueError):
        return
    try:
        os.dup2(null, fd)
    except OSError:
        pass
    finally:
        os.close(null)


def _main(argv: Sequence[str] | None, output: _Output) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv and sys.stdin.isatty() and sys.stdout.isatty():
        argv = ["tui"]  # bare `switchyard` in a terminal opens the workbench on this repo
    elif argv and _workbench_flags(argv):
        argv = ["tui", *argv]  # `switchyard --repo X`: "invalid choice: 'X'" before
    parser = build_parser(argv[0] if argv else None)
    args, extra = parser.parse_known_args(argv)
    if extra:
        leaf: argparse.ArgumentParser = getattr(args, "_parser", parser)
        command = getattr(args, "command", None)
        before = argv[: argv.index(command)] if command in argv else []
        if any(token in before for token in extra):  # `switchyard --bogus merge X`
            leaf = parser
        leaf.error(f"unrecognized arguments: {' '.join(extra)}")
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0
    try:
        return handler(args)
    except SwitchyardError as exc:
        return _one_line(exc)
    except KeyboardInterrupt:
        print("switchyard: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`| head`): quiet, and 141 (128 + SIGPIPE) as a C filter
        # dies with; 0 masked a failing verdict (`spec lint bad.md | head` passed CI)
        return BROKEN_PIPE
    except FileNotFoundError:
        if cwd_exists():
            raise
        # `cd x; rmdir ../x; switchyard merge …`: whatever resolves "." fails, one line
        return _one_line(NoWorkingFolder())
    except OSError as exc:
        if exc is not output.failed:  # (an error a caller handled stays in .failed)
            raise
        return _said(exc)  # as audit export says it


def _one_line(exc: SwitchyardError) -> int:
    from app.audit.masking import mask_text

    # masked: a message quotes what it was given, and a key pasted where a variable's
    # name belongs (``api_key_env = "sk-…"``) was printed by every command that read it
    text = mask_text(str(exc))[0]
    for line in text.splitlines() or [type(exc).__name__]:
        print(f"switchyard: {line}", file=sys.stderr)
    return exc.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
