"""Start-up: the app and its command import no heavy stack, and the CLI wiring works."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.cli.main import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "llama_cpp", "sentence_transformers", "sklearn")


def test_the_app_imports_no_heavy_library() -> None:
    code = (
        "import json, sys\n"
        "import app.cli.tui_cmd, app.tui.app, app.tui.screens.evidence, app.tui.screens.tutor\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert json.loads(done.stdout) == []


def test_the_first_frame_waits_for_nothing_it_does_not_draw() -> None:
    """The real `switchyard tui`, headless, up to its first frame: no heavy library, and
    neither the policy's models (~50 ms of pydantic schema building, imported by the CLI's
    common helpers until the first frame paid for them) nor the router."""
    from tests.tui.bench_first_frame import one_run

    result = one_run(ROOT)
    assert result["heavy"] == [] and result["deferred"] == []


def test_tui_and_demo_are_commands() -> None:
    parser = build_parser()
    args = parser.parse_args(["tui", "--theme", "switchyard-light", "--repo", ".", "fix it"])
    assert (args.theme, args.repo, args.task) == ("switchyard-light", Path("."), "fix it")
    args = parser.parse_args(["demo", "--theme", "switchyard-high-contrast"])
    assert args.theme == "switchyard-high-contrast"


def test_an_unknown_theme_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = gc.get_threshold()
    rc = main(["tui", "--repo", str(tmp_path), "--theme", "neon"])
    assert rc == 2
    # the collector held for start-up (app/heap.py) is put back on the way out
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    err = capsys.readouterr().err
    assert "unknown theme 'neon'" in err and "switchyard-dark" in err


def test_a_missing_repo_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tui", "--repo", "/no/such/dir"]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_a_folder_that_is_not_a_repository_opens_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It opened silently; a task then stopped (no git) and left a stopped bundle there."""
    import app.cli.tui_cmd as tui_cmd

    seen: dict[str, object] = {}
    monkeypatch.setattr(tui_cmd, "run_tui", lambda args, **kw: seen.update(kw) or 0)
    assert main(["tui", "--repo", str(tmp_path)]) == 0
    assert seen["repo"] == tmp_path.resolve()
    assert f"{tmp_path.resolve()} is not a git repository" in str(seen["notice"])
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    _first_commit(tmp_path)
    (tmp_path / "sub").mkdir()
    assert main(["tui", "--repo", str(tmp_path / "sub")]) == 0
    assert seen["repo"] == tmp_path.resolve() and seen["notice"] is None
    # a mistake in the repository's own config is said on the first screen, with its line
    (tmp_path / ".switchyard").mkdir()
    (tmp_path / ".switchyard" / "config.toml").write_text("test_comand = 'make'\n")
    assert main(["tui", "--repo", str(tmp_path)]) == 0
    assert "config.toml:1: test_comand: unknown key" in str(seen["notice"])


def _first_commit(repo: Path) -> None:
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "first"], check=True)


def test_a_repository_with_no_commit_yet_opens_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder that is no repository was warned of; one with no commit yet was not, and
    a task stopped on it only once started ("has no commit yet…", a user-audit)."""
    import app.cli.tui_cmd as tui_cmd

    seen: dict[str, object] = {}
    monkeypatch.setattr(tui_cmd, "run_tui", lambda args, **kw: seen.update(kw) or 0)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    assert main(["tui", "--repo", str(tmp_path)]) == 0
    assert seen["repo"] == tmp_path.resolve()
    assert seen["notice"] == (
        f"{tmp_path.resolve()} has no commit yet: a task stops before any model call "
        "(a first commit gives a run a branch to start from)"
    )
    # with a broken repository config too: both are said
    (tmp_path / ".switchyard").mkdir()
    (tmp_path / ".switchyard" / "config.toml").write_text("test_comand = 'make'\n")
    assert main(["tui", "--repo", str(tmp_path)]) == 0
    said = str(seen["notice"]).splitlines()
    assert len(said) == 2 and "no commit yet" in said[0] and "test_comand" in said[1]
    _first_commit(tmp_path)
    assert main(["tui", "--repo", str(tmp_path)]) == 0
    assert "no commit yet" not in str(seen["notice"])


def test_every_theme_file_loads_with_every_variable() -> None:
    from app.tui.themes import REQUIRED_VARIABLES, load_themes, stylesheets

    themes = load_themes()
    assert set(themes) >= {"switchyard-dark", "switchyard-light", "switchyard-high-contrast"}
    for theme in themes.values():
        assert set(REQUIRED_VARIABLES) <= set(theme.variables), theme.name
    assert [p.name for p in stylesheets()] == ["main.tcss", "screens.tcss"]


def test_a_broken_theme_file_names_the_file_and_field(tmp_path: Path) -> None:
    from app.tui.themes import ThemeError, load_themes

    (tmp_path / "bad.toml").write_text('[theme]\nname = "bad"\nprimary = "#fff"\n')
    with pytest.raises(ThemeError, match=r"bad\.toml: \[variables\] is missing audit-route"):
        load_themes(tmp_path)


@pytest.mark.parametrize("argv", [["tui"], ["demo"], ["--repo", "."]])
def test_without_a_terminal_the_workbench_is_a_usage_error(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """In a pipe it wrote escape sequences into the file and ran until it was killed."""
    if sys.stdin.isatty() and sys.stdout.isatty():
        pytest.skip("run in a terminal: the workbench would open")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("switchyard: the workbench needs a terminal (stdin and stdout)")


async def test_one_of_textuals_own_themes_is_taken_at_start(make_app: Any) -> None:
    """The palette's Theme picker offers Textual's themes, and a pick is remembered for
    the next start; ``--theme nord`` was refused as unknown all the same."""
    from app.tui.themes import check_theme_name

    assert check_theme_name("nord") == "nord"
    app = make_app(theme="nord", task=None)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert app.theme == "nord"
