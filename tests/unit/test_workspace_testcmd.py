"""Which build/test command a project gets: the detection table and the precedence."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from app.errors import ConfigError
from app.workspace.testcmd import (
    NPM_PLACEHOLDER,
    NoTestCommand,
    detect_test_command,
    load_repo_config,
)

PY = "/usr/bin/python-for-tests"

# layout → (argv, a phrase of the reason)
TABLE: list[tuple[str, dict[str, str], list[str], str]] = [
    ("pytest.ini", {"pytest.ini": "[pytest]\n"}, [PY, "-m", "pytest"], "pytest.ini found"),
    (
        "pyproject",
        {"pyproject.toml": "[tool.pytest.ini_options]\naddopts = '-q'\n"},
        [PY, "-m", "pytest"],
        "[tool.pytest.ini_options]",
    ),
    ("setup.cfg", {"setup.cfg": "[tool:pytest]\n"}, [PY, "-m", "pytest"], "setup.cfg"),
    ("tox.ini", {"tox.ini": "[tox]\n[pytest]\n"}, [PY, "-m", "pytest"], "tox.ini"),
    ("conftest", {"conftest.py": ""}, [PY, "-m", "pytest"], "conftest.py"),
    (
        "tests dir",
        {"src/m.py": "", "tests/unit/test_m.py": "def test(): pass\n"},
        [PY, "-m", "pytest"],
        "tests/ holds Python test files",
    ),
    (
        "a test file at the top",
        {"calc.py": "", "test_calc.py": "def test(): pass\n"},
        [PY, "-m", "pytest"],
        "test_calc.py at the top is a Python test file",
    ),
    ("cargo", {"Cargo.toml": "[package]\nname='x'\n"}, ["cargo", "test"], "Cargo.toml"),
    ("go", {"go.mod": "module x\n"}, ["go", "test", "./..."], "go.mod"),
    (
        "npm",
        {"package.json": json.dumps({"scripts": {"test": "jest"}})},
        ["npm", "test"],
        "scripts.test",
    ),
    ("make", {"Makefile": "all:\n\ttrue\ntest: all\n\t./run\n"}, ["make", "test"], "Makefile"),
    ("make, two targets", {"makefile": "check test:\n\t./run\n"}, ["make", "test"], "makefile"),
    ("make ::", {"GNUmakefile": "test::\n\t./run\n"}, ["make", "test"], "GNUmakefile"),
]


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


@pytest.mark.parametrize(("label", "files", "argv", "why"), TABLE, ids=[t[0] for t in TABLE])
def test_detection_table(
    tmp_path: Path, label: str, files: dict[str, str], argv: list[str], why: str
) -> None:
    cmd = detect_test_command(_tree(tmp_path, files), python=PY)
    assert cmd.argv == argv and cmd.source == "detected"
    assert why in cmd.why


@pytest.mark.parametrize(
    "files",
    [
        {},
        {"README.md": "hi"},
        {"package.json": json.dumps({"scripts": {"test": NPM_PLACEHOLDER}})},
        {"package.json": "{not json"},
        {"Makefile": "TEST := 1\ntest:=2\nall:\n\ttrue\n"},
        {"tests/data.txt": "", "tests/helper.py": ""},
        {"calc.py": "", "testing.py": ""},
        {"pyproject.toml": "[project]\nname='x'\n"},
    ],
)
def test_nothing_detected_says_what_to_set(tmp_path: Path, files: dict[str, str]) -> None:
    with pytest.raises(NoTestCommand, match="set test_command in"):
        detect_test_command(_tree(tmp_path, files), python=PY)


def test_language_markers_win_over_make_and_the_others_are_named(tmp_path: Path) -> None:
    _tree(tmp_path, {"Cargo.toml": "", "Makefile": "test:\n\tcargo test\n"})
    cmd = detect_test_command(tmp_path)
    assert cmd.argv == ["cargo", "test"]
    assert "also found: make test" in cmd.why


def test_configured_command_wins(tmp_path: Path) -> None:
    worktree = _tree(tmp_path / "wt", {"Cargo.toml": ""})
    config = 'test_command = "tox -e py311 -- -x"\n'
    repo = _tree(tmp_path / "repo", {".switchyard/config.toml": config})
    cmd = detect_test_command(worktree, repo=repo)
    assert cmd.argv == ["tox", "-e", "py311", "--", "-x"] and cmd.source == "config"
    assert "config.toml" in cmd.why
    given = detect_test_command(worktree, repo=repo, configured=["make", "check"])
    assert given.argv == ["make", "check"] and given.source == "parameter"
    as_text = detect_test_command(worktree, repo=repo, configured="pytest -k 'a b'")
    assert as_text.argv == ["pytest", "-k", "a b"]


def test_config_as_a_list_and_limits(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        {
            ".switchyard/config.toml": (
                'test_command = ["npm", "run", "test:ci"]\ntest_timeout_s = 90\n'
                "test_memory_mb = 2048\n"
            )
        },
    )
    cfg = load_repo_config(tmp_path)
    assert (cfg.test_command, cfg.test_timeout_s, cfg.test_memory_mb) == (
        ["npm", "run", "test:ci"],
        90,
        2048,
    )
    assert detect_test_command(tmp_path).argv == ["npm", "run", "test:ci"]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("test_command = \n", "toml syntax"),
        ('test_command = ""\n', "empty"),
        ("test_command = 3\n", "test_command"),
        ("test_timeout_s = -1\n", "test_timeout_s"),
        ("test_comand = 'make test'\n", "config.toml:1: test_comand: unknown key"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, match: str) -> None:
    _tree(tmp_path, {".switchyard/config.toml": text, "Cargo.toml": ""})
    with pytest.raises(ConfigError, match=match) as info:
        detect_test_command(tmp_path)
    assert info.value.exit_code == 2


def test_python_choice(tmp_path: Path) -> None:
    worktree = _tree(tmp_path / "wt", {"pytest.ini": ""})
    repo = tmp_path / "repo"
    venv_python = _tree(repo, {".venv/bin/python": ""}) / ".venv" / "bin" / "python"
    cmd = detect_test_command(worktree, repo=repo)
    assert cmd.argv[0] == str(venv_python) and "the repo's .venv" in cmd.why
    # No repo venv: this interpreter, which has pytest (the dev install does).
    other = detect_test_command(worktree, repo=tmp_path / "elsewhere")
    assert other.argv[0] == sys.executable
