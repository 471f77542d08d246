"""``switchyard stage0``: byte-identical JSON (twice, and after a restart), exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import app.cli.main as cli_main
from tests.integration.test_stage0_corpus import make_repo, write

ROOT = Path(__file__).resolve().parents[2]
MODULE = "app.cli.stage0_cmd"

_RUN = """
import sys
import app.cli.main as m
if "app.cli.stage0_cmd" not in m.COMMAND_MODULES:
    m.COMMAND_MODULES = (*m.COMMAND_MODULES, "app.cli.stage0_cmd")
sys.exit(m.main(sys.argv[1:]))
"""


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> None:
    if MODULE not in cli_main.COMMAND_MODULES:
        monkeypatch.setattr(cli_main, "COMMAND_MODULES", (*cli_main.COMMAND_MODULES, MODULE))


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = cli_main.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _subprocess(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _RUN, *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ),
        timeout=120,
        check=False,
    )


def test_query_json_is_byte_identical_twice_and_after_a_restart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo(tmp_path)
    argv = ("stage0", "query", "reserve budget settle", "--repo", str(repo), "--json")
    rc1, cold, _ = _run(capsys, *argv)
    rc2, warm, _ = _run(capsys, *argv)
    restarted = _subprocess(*argv)
    assert rc1 == rc2 == restarted.returncode == 0, restarted.stderr
    assert cold == warm == restarted.stdout
    data = json.loads(cold)
    assert data["chunks"][0]["path"] == "pkg/ledger.py"
    assert data["explain"] is None
    explained = _run(capsys, *argv, "--explain")[1]
    assert json.loads(explained)["explain"][0]["entries"]
    assert _run(capsys, *argv, "--explain")[1] == explained


def test_human_output_names_chunks_and_the_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    repo = make_repo(tmp_path)
    rc, out, _ = _run(capsys, "stage0", "query", "parse tokens", "--repo", str(repo), "--explain")
    assert rc == 0
    assert "pkg/parser.py:" in out and "budget:" in out and "picked #1" in out


def test_a_lane_left_nothing_says_the_chunks_lane_took_its_matches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two one-function files: the chunks lane picks both functions whole, so the code lane
    has no candidate. It once said "2 matched, 0 candidates, 0 below the prefilter" under
    an empty table, which added up to nothing."""
    monkeypatch.setenv("COLUMNS", "200")
    repo = make_repo(
        tmp_path,
        {
            "calc.py": "def add(a, b):\n    return a - b\n",
            "test_calc.py": "from calc import add\n\ndef test_add():\n    assert add(2, 3) == 5\n",
        },
    )
    argv = ("stage0", "query", "add numbers", "--repo", str(repo), "--explain")
    rc, out, _ = _run(capsys, *argv)
    assert rc == 0
    assert (
        "code: 2 matched, 0 candidates, 0 below the prefilter, 2 picked by the chunks lane" in out
    )
    assert "explain: chunks lane" in out and "explain: code lane" not in out
    data = json.loads(_run(capsys, *argv, "--json")[1])
    for lane in data["explain"]:
        assert (
            lane["matched"] == lane["candidates"] + lane["below_prefilter"] + lane["already_picked"]
        )


def test_a_directory_that_is_not_a_repository_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    write(plain, {"a.py": "X = 1\n"})
    for action in ("query", "brief"):
        rc, out, err = _run(capsys, "stage0", action, "x", "--repo", str(plain))
        assert rc == 2 and out == ""
        assert err == f"switchyard: {plain}: not a git repository\n"
    assert not (plain / ".switchyard").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--k", "0"], "--k: must be 1 or more"),
        (["--budget", "-1"], "--budget: must be 0 or more"),
        (["--reader", "no-such-model"], "--reader no-such-model: unknown model"),
    ],
)
def test_bad_arguments_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    repo = make_repo(tmp_path)
    rc, _, err = _run(capsys, "stage0", "query", "x", "--repo", str(repo), *extra)
    assert rc == 2 and err == f"switchyard: {message}\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["query", " "], "TEXT is empty: say what to look for"),
        (["brief", ""], "TASK is empty: say what the task is"),
    ],
)
def test_an_empty_query_or_task_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """They exited 0, as run, memory search, librarian and tutor refuse the same (2)."""
    repo = make_repo(tmp_path)
    rc, out, err = _run(capsys, "stage0", *argv, "--repo", str(repo))
    assert rc == 2 and out == "" and err == f"switchyard: {message}\n"
    assert not (repo / ".switchyard" / "brief").exists()


def test_brief_writes_both_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = make_repo(tmp_path)
    spec = tmp_path / "spec.md"
    spec.write_text("Refuse negative reservations.\n")
    rc, out, _ = _run(
        capsys,
        "stage0",
        "brief",
        "refuse a negative reservation",
        "--repo",
        str(repo),
        "--spec",
        str(spec),
        "--risk",
        "no partial rows",
        "--json",
    )
    assert rc == 0
    data = json.loads(out)
    default_out = repo / ".switchyard" / "brief"
    assert data["brief_md"] == str(default_out / "TASK_BRIEF.md")
    md = (default_out / "TASK_BRIEF.md").read_text()
    assert "Refuse negative reservations." in md and "- no partial rows" in md
    brief = json.loads((default_out / "brief.json").read_text())
    assert brief["metadata"]["chunk_ids"] == data["chunk_ids"]
    rc, _, err = _run(capsys, "stage0", "brief", "x", "--repo", str(repo), "--spec", "nope.md")
    assert rc == 2 and err == "switchyard: --spec nope.md: no such spec file\n"
    rc, _, err = _run(capsys, "stage0", "brief", "x", "--repo", str(repo), "--spec", str(tmp_path))
    assert rc == 2 and err == f"switchyard: --spec {tmp_path}: is a directory, not a spec file\n"
    # read as spec lint and run --spec read one: random bytes were copied into the brief
    binary, huge = tmp_path / "spec.bin", tmp_path / "huge.md"
    binary.write_bytes(b"ok\n\xfe\xff\x00garbage")
    huge.write_text("x" * (1 << 20) + "\n")
    before = md
    for spec, why in ((binary, "not UTF-8 text (byte 3)"), (huge, "larger than a spec")):
        rc, _, err = _run(capsys, "stage0", "brief", "x", "--repo", str(repo), "--spec", str(spec))
        assert rc == 2 and err.startswith(f"switchyard: --spec {spec}: {why}"), err
        assert (default_out / "TASK_BRIEF.md").read_text() == before  # nothing half-written


def test_a_reader_model_shrinks_the_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.policy import load_policy

    policy = load_policy().policy
    model, window = next(
        (m, v.context_window) for m, v in policy.models.items() if v.context_window
    )
    repo = make_repo(tmp_path)
    rc, out, _ = _run(
        capsys, "stage0", "query", "ledger", "--repo", str(repo), "--reader", model, "--json"
    )
    assert rc == 0
    params = json.loads(out)["params"]
    assert params["context_window"] == window
    assert params["budget_tokens"] == min(8000, window // 2)


@pytest.mark.parametrize("out_arg", ["afile", "afile/sub", "/proc/switchyard-x"])
def test_an_out_folder_that_cannot_be_one_exits_2_naming_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], out_arg: str
) -> None:
    if out_arg.startswith("/proc") and not Path("/proc/self").is_dir():
        pytest.skip("no /proc here")
    repo = make_repo(tmp_path)
    (repo / "afile").write_text("keep me\n")
    out = out_arg if out_arg.startswith("/") else str(repo / out_arg)
    rc, stdout, err = _run(
        capsys, "stage0", "brief", "the ledger", "--repo", str(repo), "--out", out
    )
    assert rc == 2 and stdout == ""
    assert err.startswith(f"switchyard: --out {out}: ") and err.count("\n") == 1
    assert (repo / "afile").read_text() == "keep me\n"


def _explained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, name: str
) -> str:
    """``stage0 query --explain`` of a repository whose one file is ``name``: its text."""
    monkeypatch.setenv("COLUMNS", "200")
    repo = make_repo(tmp_path, {name: "def zebraquux():\n    return 1\n"})
    rc, out, _ = _run(capsys, "stage0", "query", "zebraquux", "--repo", str(repo), "--explain")
    assert rc == 0
    return out


def test_paths_and_symbols_are_shown_as_they_are_never_as_markup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _explained(tmp_path, capsys, monkeypatch, "[red]x.py")
    # the table row and the explain row each name the file as it is
    assert out.count("[red]x.py:1-2") == 2


def test_a_file_name_with_a_newline_keeps_its_row_on_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _explained(tmp_path, capsys, monkeypatch, "a\nb.py")
    rows = [ln for ln in out.splitlines() if "b.py:1-2" in ln]
    assert len(rows) == 2 and all("a\u23ceb.py:1-2" in ln for ln in rows), out


def test_k_bounds_the_chunks_lane_and_code_k_the_code_lane(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo(tmp_path)
    argv = ("stage0", "query", "budget ledger reserve settle release", "--repo", str(repo))
    both = json.loads(_run(capsys, *argv, "--k", "1", "--json")[1])
    assert len(both["chunks"]) == 1 and len(both["code_units"]) > 1
    one = json.loads(_run(capsys, *argv, "--k", "1", "--code-k", "0", "--json")[1])
    assert len(one["chunks"]) == 1 and one["code_units"] == []
    assert one["params"]["code_top_k"] == 0
    two = json.loads(_run(capsys, *argv, "--k", "1", "--code-k", "1", "--json")[1])
    assert len(two["chunks"]) + len(two["code_units"]) == 2
    rc, _, err = _run(capsys, *argv, "--code-k", "-1")
    assert rc == 2 and err == "switchyard: --code-k: must be 0 or more\n"


def test_nothing_picked_says_whether_nothing_matched_or_nothing_fitted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo(tmp_path)
    argv = ("stage0", "query", "--repo", str(repo))
    rc, out, _ = _run(capsys, *argv, "budget ledger", "--budget", "0")
    assert rc == 0 and "no chunk matches" not in out
    assert "match the query, but none fits the budget of 0 tokens" in out
    rc, out, _ = _run(capsys, *argv, "zzzz qqqq")
    assert rc == 0 and "no chunk matches the query" in out


@pytest.mark.parametrize("where", ["cwd", "--repo"])
def test_a_subfolder_means_its_repository(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    """From repo/pkg, query indexed pkg/ alone (files named from there: "ledger.py") and
    brief made a second .switchyard/ in pkg/; run, evidence and merge take the top."""
    repo = make_repo(tmp_path)
    query = ("stage0", "query", "reserve budget settle", "--json")
    rc, top, _ = _run(capsys, *query, "--repo", str(repo))
    assert rc == 0
    monkeypatch.chdir(repo / "pkg")
    here = ("--repo", str(repo / "pkg")) if where == "--repo" else ()
    rc, below, _ = _run(capsys, *query, *here)
    assert rc == 0 and json.loads(below) == json.loads(top)
    assert json.loads(below)["chunks"][0]["path"] == "pkg/ledger.py"
    rc, out, _ = _run(capsys, "stage0", "brief", "the ledger", *here, "--json")
    assert rc == 0
    assert json.loads(out)["brief_md"] == str(repo / ".switchyard" / "brief" / "TASK_BRIEF.md")
    assert not (repo / "pkg" / ".switchyard").exists()
