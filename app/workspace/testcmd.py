"""Which command builds and tests the project (GR-006: its exit code is the truth).

In order: a command given by the caller, then ``test_command`` in the repo's
``.switchyard/config.toml``, then detection over the tree for the common layouts:
pytest, cargo test, go test, npm test, make test. The result says why it was chosen.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.errors import ConfigError, SwitchyardError
from app.paths import STATE_DIR_NAME, state_path
from app.toml_errors import file_toml_error

CONFIG_FILE = "config.toml"
#: What ``npm init`` writes when there are no tests: not a test command.
NPM_PLACEHOLDER = 'echo "Error: no test specified" && exit 1'
_MAKEFILES = ("GNUmakefile", "makefile", "Makefile")
# A rule line naming `test` among its targets: "test:", "test ::", "unit test: deps".
# Not a variable assignment ("test := x").
_MAKE_TEST = re.compile(r"^(?:[^\s:=#][^:=#]*?\s+)?test(?:\s+[^:=#]*)?\s*::?(?!=)", re.M)
_PY_TEST_FILE = re.compile(r"^(test_.*|.*_test)\.py$")
_TEST_DIRS = ("tests", "test")


class NoTestCommand(SwitchyardError):
    """No build/test command is configured and none could be detected."""


class RepoConfig(BaseModel):
    """``REPO/.switchyard/config.toml``: per-repo settings. An unknown key is refused: a
    typo (``test_comand``) was ignored, and the run detected another command."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    test_command: str | list[str] | None = None
    test_timeout_s: float | None = Field(default=None, gt=0)
    #: at most 16 TiB: the limit is passed in bytes to prlimit, which refused a value past
    #: 64 bits ("failed to parse AS limit"), and every test loop failed on it (a CLI audit)
    test_memory_mb: int | None = Field(default=None, gt=0, le=1 << 24)

    @field_validator("test_command")
    @classmethod
    def _a_command(cls, value: str | list[str] | None) -> str | list[str] | None:
        # checked as the file is read (its line named, exit 2, before a run starts): an
        # unbalanced quote was a traceback from inside the run, and an empty command a
        # run stopped with no line (a CLI audit)
        if value is not None:
            split_command(value, "", error=ValueError)
        return value


class TestCommand(BaseModel):
    __test__: ClassVar[bool] = False  # not a pytest test class

    model_config = ConfigDict(frozen=True, extra="forbid")

    argv: list[str]
    why: str
    source: Literal["parameter", "config", "detected"]


def load_repo_config(repo: Path) -> RepoConfig:
    # the file picks the test command: never read through a link a repository planted
    path = state_path(Path(repo), CONFIG_FILE)
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except FileNotFoundError:
        return RepoConfig()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file_toml_error(path, str(exc))) from None
    try:
        return RepoConfig.model_validate(data)
    except ValidationError as exc:
        from app.policy.lines import key_lines, line_for

        err = exc.errors()[0]
        parts = tuple(str(p) for p in err["loc"])
        known = ", ".join(RepoConfig.model_fields)
        msg = f"unknown key (known: {known})" if err["type"] == "extra_forbidden" else err["msg"]
        if err["type"] == "value_error":  # (a validator's own words, without pydantic's prefix)
            msg = str(err["ctx"]["error"])
        elif parts[:1] == ("test_command",):
            # a value of neither type failed each branch of the union, and the first
            # branch's error leaked its name ("test_command.str: Input should be a valid
            # string", of [1, 2]): what the key accepts is said instead
            parts = parts[:1]
            got = repr(data.get("test_command"))
            got = got if len(got) <= 60 else got[:59] + "…"
            msg = f"expected a string or a list of strings (got {got})"
        loc = ".".join(parts)
        line = line_for(key_lines(text), parts)
        where = f"{path}:{line}" if line else str(path)
        raise ConfigError(f"{where}: {loc}: {msg}") from None


def split_command(
    cmd: str | Sequence[str], where: str, *, error: type[Exception] = ConfigError
) -> list[str]:
    """``cmd`` as argv (a string split as a POSIX shell would); ``error`` says why (after
    ``where``, when given) when it cannot be split or is empty."""
    at = f"{where}: " if where else ""
    try:
        argv = shlex.split(cmd) if isinstance(cmd, str) else [str(a) for a in cmd]
    except ValueError as exc:
        raise error(f"{at}cannot be split as a shell command ({exc})") from None
    if not argv or not argv[0]:
        raise error(f"{at}the test command is empty")
    return argv


def detect_test_command(
    root: Path,
    *,
    repo: Path | None = None,
    configured: str | Sequence[str] | None = None,
    python: str | None = None,
) -> TestCommand:
    """The command to run in ``root`` (a worktree); ``repo`` holds the config (default root).

    ``python`` is the interpreter for pytest; by default the repo's own ``.venv`` or
    ``venv``, else this interpreter when it has pytest, else ``python3`` on PATH.
    """
    root = Path(root)
    repo = Path(repo) if repo is not None else root
    if configured is not None:
        argv = split_command(configured, "the given test command")
        return TestCommand(argv=argv, why="given by the caller", source="parameter")
    cfg = load_repo_config(repo)
    if cfg.test_command is not None:
        where = str(repo / STATE_DIR_NAME / CONFIG_FILE)
        argv = split_command(cfg.test_command, where)
        return TestCommand(argv=argv, why=f"test_command in {where}", source="config")

    found = [hit for probe in _PROBES if (hit := probe(root, repo, python)) is not None]
    if not found:
        raise NoTestCommand(
            f"no test command for {root}: found no pytest tests or config, Cargo.toml,"
            f" go.mod, package.json test script or Makefile test target; set test_command in"
            f" {repo / STATE_DIR_NAME / CONFIG_FILE}"
        )
    argv, why = found[0]
    if len(found) > 1:
        why += " (also found: " + "; ".join(w for _, w in found[1:]) + ")"
    return TestCommand(argv=argv, why=why, source="detected")


def cannot_start(command: TestCommand, cwd: Path) -> str | None:
    """Why ``command`` could not start in ``cwd`` (its program is nowhere: not on the
    PATH the sandbox passes on, not at the path it names), or None. A run whose test
    command could not start failed every loop, spent its model calls and escalations on
    it and ended "4 failed loops" (a user audit); only what is surely missing is named
    (a program that exists but fails is the tests' own verdict)."""
    import os

    program = command.argv[0]
    if "/" in program:
        path = Path(program) if Path(program).is_absolute() else cwd / program
        if path.is_file() and os.access(path, os.X_OK):
            if Path(program).is_absolute() or _committed(cwd, program):
                return None
            # the run's worktree is the last commit: an untracked program (a git-ignored
            # .venv's python, a local script) is not there, and every loop failed on it
            # (a user audit)
            what = (
                "is not in the repository's last commit (the run works on a worktree of "
                "it): name it by its absolute path"
            )
        else:
            what = "is not there" if not path.exists() else "is not an executable file"
    elif on_the_path(program):
        return None
    else:
        what = "is not on the PATH"
    return (
        f"the test command cannot start: {program} {what} ({command.why}); nothing was "
        "asked of any model"
    )


def on_the_path(program: str) -> bool:
    """Whether ``program`` (a bare name) is found on the PATH a test command runs with:
    this process's, which the sandbox passes on (:func:`app.subprocess_env.command_env`),
    where the command's argv is executed as it is, no shell in between."""
    import os

    from app.subprocess_env import DEFAULT_PATH

    return shutil.which(program, path=os.environ.get("PATH") or DEFAULT_PATH) is not None


def _committed(repo: Path, rel: str) -> bool:
    """Whether ``rel`` (a path in ``repo``) is a file of its last commit."""
    from app.workspace.git import run_git

    spec = f"HEAD:{Path(rel).as_posix().removeprefix('./')}"
    try:
        return run_git(repo, "cat-file", "-e", spec, check=False).returncode == 0
    except (OSError, SwitchyardError):
        return True  # (not known: left to the loop, as before)


# ── probes: (argv, why) or None ──────────────────────────────────────────────────────────

Hit = tuple[list[str], str] | None


def _pytest(root: Path, repo: Path, python: str | None) -> Hit:
    reason = _pytest_marker(root)
    if reason is None:
        return None
    interp, which = _python_for(repo, python)
    return [interp, "-m", "pytest"], f"pytest: {reason}; {which}"


def _pytest_marker(root: Path) -> str | None:
    for name in ("pytest.ini", ".pytest.ini"):
        if (root / name).is_file():
            return f"{name} found"
    pyproject = _toml(root / "pyproject.toml")
    if isinstance(pyproject.get("tool"), dict) and "pytest" in pyproject["tool"]:
        return "pyproject.toml has [tool.pytest.ini_options]"
    for name, section in (("setup.cfg", "[tool:pytest]"), ("tox.ini", "[pytest]")):
        if section in _text(root / name):
            return f"{name} has {section}"
    if (root / "conftest.py").is_file():
        return "conftest.py found"
    # a small project keeps test_x.py beside x.py: pytest collects it from the top
    top = sorted(p.name for p in root.glob("*.py") if _PY_TEST_FILE.match(p.name))
    if top:
        return f"{top[0]} at the top is a Python test file"
    for d in _TEST_DIRS:
        if (root / d).is_dir() and _has_python_tests(root / d):
            return f"{d}/ holds Python test files"
    return None


def _has_python_tests(folder: Path) -> bool:
    # Bounded walk: a test tree is shallow, and a huge vendored tree must not stall us.
    for seen, path in enumerate(folder.rglob("*.py")):
        if _PY_TEST_FILE.match(path.name):
            return True
        if seen > 2000:
            break
    return False


def _python_for(repo: Path, python: str | None) -> tuple[str, str]:
    if python:
        return python, f"Python {python} as given"
    for venv in (".venv", "venv"):
        candidate = repo / venv / "bin" / "python"
        if candidate.exists():
            return str(candidate), f"the repo's {venv}"
    if importlib.util.find_spec("pytest") is not None:
        return sys.executable, "Switchyard's Python (it has pytest)"
    return shutil.which("python3") or "python3", "python3 on PATH"


def _cargo(root: Path, repo: Path, python: str | None) -> Hit:
    if (root / "Cargo.toml").is_file():
        return ["cargo", "test"], "cargo test: Cargo.toml found"
    return None


def _go(root: Path, repo: Path, python: str | None) -> Hit:
    if (root / "go.mod").is_file():
        return ["go", "test", "./..."], "go test: go.mod found"
    return None


def _npm(root: Path, repo: Path, python: str | None) -> Hit:
    try:
        pkg = json.loads(_text(root / "package.json") or "{}")
    except ValueError:
        return None
    scripts = pkg.get("scripts") if isinstance(pkg, dict) else None
    test = scripts.get("test") if isinstance(scripts, dict) else None
    if not isinstance(test, str) or not test.strip() or test.strip() == NPM_PLACEHOLDER:
        return None
    return ["npm", "test"], "npm test: package.json has scripts.test"


def _make(root: Path, repo: Path, python: str | None) -> Hit:
    for name in _MAKEFILES:
        if _MAKE_TEST.search(_text(root / name)):
            return ["make", "test"], f"make test: {name} has a test target"
    return None


_PROBES = (_pytest, _cargo, _go, _npm, _make)


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(_text(path))
    except tomllib.TOMLDecodeError:
        return {}


__all__ = [
    "NoTestCommand",
    "RepoConfig",
    "TestCommand",
    "detect_test_command",
    "load_repo_config",
    "split_command",
]
