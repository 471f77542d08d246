"""The command table: each command's module, and a run importing only its own."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli.main import COMMAND_MODULES, COMMANDS, _Parser, build_parser

ROOT = Path(__file__).resolve().parents[2]


def test_the_table_names_what_each_module_registers() -> None:
    registered: dict[str, str] = {}
    for name in COMMAND_MODULES:
        parser = _Parser(prog="switchyard")
        sub = parser.add_subparsers(dest="command", parser_class=_Parser)
        importlib.import_module(name).register(sub)
        registered.update(dict.fromkeys(sub.choices, name))
    assert registered == COMMANDS


def test_the_whole_parser_has_every_command() -> None:
    parser = build_parser()
    choices = next(a.choices for a in parser._actions if a.dest == "command")
    assert set(choices) == set(COMMANDS)  # type: ignore[arg-type]


def test_a_command_imports_its_own_module_only() -> None:
    code = (
        "import json, sys; from app.cli.main import build_parser; build_parser('tui');"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('app.cli.'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert "app.cli.tui_cmd" in json.loads(done.stdout)
    assert not {"app.cli.policy_sim_cmd", "app.cli.serve_cmd", "app.cli.run_cmd"} & set(
        json.loads(done.stdout)
    )


def test_an_unknown_command_is_still_a_usage_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app", "frobnicate"], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 2
    assert "invalid choice: 'frobnicate'" in done.stderr


def test_an_unknown_argument_is_the_subcommand_s_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`merge X --bogus` printed the top level's usage (`switchyard [-h] [--version]
    COMMAND ...`), which names none of merge's own arguments."""
    from app.cli.main import main

    for argv, usage in (
        (["merge", "X", "--bogus"], "usage: switchyard merge "),
        (["local", "status", "--bogus"], "usage: switchyard local status "),
        (["policy", "check", "--bogus"], "usage: switchyard policy check "),
        (["--bogus"], "usage: switchyard [-h]"),
        # before the command's name it is the top level's argument, not merge's
        (["--bogus", "merge", "X"], "usage: switchyard [-h]"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(usage), err
        bad = "--bogus"
        assert f"usage error: unrecognized arguments: {bad}" in err


def test_every_command_s_help_names_only_its_subcommands() -> None:
    """The top level's help said `local: serve, probe and plan`; there is no probe."""
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    local = commands.choices["local"]  # type: ignore[index]
    subs = next(a for a in local._actions if a.dest == "local_command").choices
    helped = next(a.help for a in commands._choices_actions if a.dest == "local")
    assert "probe" not in helped and all(name in helped for name in subs)


def test_the_workbench_flags_work_on_switchyard_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`switchyard --repo X` said "invalid choice: 'X'": only a bare `switchyard` opened
    the workbench, and its flags needed `tui` (a user-audit). `demo --local-only` was
    refused, where only SWITCHYARD_LOCAL_ONLY=1 worked."""
    from app.cli.main import main

    missing = tmp_path / "nowhere"
    assert main(["--repo", str(missing)]) == 2
    assert f"--repo {missing}: no such directory" in capsys.readouterr().err
    parser = build_parser("demo")
    assert parser.parse_args(["demo", "--local-only"]).local_only is True
