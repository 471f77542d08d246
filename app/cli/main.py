"""The ``switchyard`` command line. Each command group lives in its own module."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from app import __version__
from app.errors import SwitchyardError

# Command modules, each with ``register(subparsers)``. They import heavy things lazily.
COMMAND_MODULES = (
    "app.cli.policy_cmd",
    "app.cli.route_cmd",
    "app.cli.audit_cmd",
    "app.cli.budget_cmd",
    "app.cli.local_cmd",
    "app.cli.ask_cmd",
    "app.cli.run_cmd",
    "app.cli.evidence_cmd",
    "app.cli.merge_cmd",
    "app.cli.stage0_cmd",
    "app.cli.memory_cmd",
    "app.cli.tui_cmd",
    "app.cli.spec_cmd",
    "app.cli.tutor_cmd",
    "app.cli.librarian_cmd",
    "app.cli.acp_cmd",
    "app.cli.serve_cmd",
)

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse with one clear line and exit code 2 on usage errors (its own default)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: usage error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="switchyard",
        description="Local-first model router and terminal workbench for AI coding sessions.",
    )
    parser.add_argument("--version", action="version", version=f"switchyard {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # a command group not built yet
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv and sys.stdin.isatty() and sys.stdout.isatty() and "tui" in _commands(parser):
        argv = ["tui"]  # bare `switchyard` in a terminal opens the workbench on this repo
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0
    try:
        return handler(args)
    except SwitchyardError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"switchyard: {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("switchyard: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def _commands(parser: argparse.ArgumentParser) -> set[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


if __name__ == "__main__":
    raise SystemExit(main())
