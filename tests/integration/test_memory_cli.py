"""``switchyard memory add|search|harvest``: exit codes and JSON, over real files in the
isolated data dir."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from app.audit.log import AuditLog
from app.cli import main as cli_main
from app.config import Settings
from app.memory.embeddings import FALLBACK_REASON
from tests.integration.test_harvest import commit, git


@pytest.fixture(autouse=True)
def _memory_command(monkeypatch: pytest.MonkeyPatch) -> None:
    if "app.cli.memory_cmd" not in cli_main.COMMAND_MODULES:
        monkeypatch.setattr(
            cli_main, "COMMAND_MODULES", (*cli_main.COMMAND_MODULES, "app.cli.memory_cmd")
        )


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    try:
        code = cli_main.main(["memory", *argv])
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    data = json.loads(out) if "--json" in argv and code == 0 else out
    return code, data, err


def test_add_then_search_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, added, _ = run(
        capsys, "add", "Retry 429 with backoff", "--tag", "http", "--priority", "4", "--no-embed",
        "--json",
    )  # fmt: skip
    assert code == 0
    assert added["memory"]["id"] == 1 and added["memory"]["tags"] == ["http"]
    assert added["embeddings"] == {"state": "off", "model": None, "fallback": False}
    assert Path(added["memory_db"]) == Settings().memory_db
    run(capsys, "add", "Budget caps are a ledger", "--kind", "playbook", "--no-embed")

    code, found, _ = run(capsys, "search", "retry backoff", "--no-embed", "--json")
    assert code == 0
    assert [h["id"] for h in found["hits"]] == [1]
    hit = found["hits"][0]
    assert hit["embedding_used"] is False and hit["components"]["embedding"] == 0
    assert found["weights"]["recency_half_life_days"] == 7.0
    # Read-only: the same search prints the same JSON again.
    assert run(capsys, "search", "retry backoff", "--no-embed", "--json")[1] == found
    code, only, _ = run(capsys, "search", "ledger", "--kind", "note", "--no-embed", "--json")
    assert code == 0 and only["hits"] == []

    code, text, _ = run(capsys, "search", "retry", "--no-embed")
    assert code == 0 and "Retry 429 with backoff" in text and "embeddings: off" in text


@pytest.mark.parametrize(
    "argv",
    [
        ("add", "   ", "--no-embed"),  # no text
        ("add", "x", "--priority", "11", "--no-embed"),
        ("add", "x", "--kind", "Not A Kind", "--no-embed"),
        ("search", "x", "--k", "0", "--no-embed"),
        ("search", "   ", "--no-embed"),
        ("harvest", "--repo", "/nonexistent/repo", "--no-embed"),
        ("bogus",),
    ],
)
def test_bad_input_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert "Traceback" not in err and err.strip()


def test_harvest_json_is_idempotent_and_since_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    first = commit(repo, {"a.txt": "a\n"}, "First", 1)
    commit(repo, {"b.txt": "b\n"}, "Second", 2)

    code, report, _ = run(capsys, "harvest", "--repo", str(repo), "--since", first, "--no-embed",
                          "--json")  # fmt: skip
    assert code == 0
    assert (report["commits_added"], report["since"]) == (1, first)
    code, report, _ = run(capsys, "harvest", "--repo", str(repo), "--no-embed", "--json")
    assert (code, report["commits_added"], report["commits_skipped"]) == (0, 1, 1)
    code, report, _ = run(capsys, "harvest", "--repo", str(repo), "--no-embed", "--json")
    assert (code, report["commits_added"], report["commits_skipped"]) == (0, 0, 2)
    code, _, err = run(capsys, "harvest", "--repo", str(repo), "--since", "nope", "--no-embed")
    assert code == 2 and "no such commit" in err
    code, text, _ = run(capsys, "harvest", "--repo", str(repo), "--no-embed")
    assert code == 0 and "harvested 0 new commits (2 already kept)" in text


@pytest.mark.slow
def test_search_with_embeddings_audits_the_fallback(capsys: pytest.CaptureFixture[str]) -> None:
    code, added, _ = run(capsys, "add", "Use bubblewrap to sandbox the test command", "--json")
    assert code == 0 and added["embeddings"]["fallback"] is True
    assert added["embeddings"]["model"].startswith("all-minilm-l6-v2@")
    code, found, _ = run(capsys, "search", "isolate tests from the network", "--json")
    assert code == 0 and found["hits"][0]["embedding_used"] is True
    assert found["hits"][0]["components"]["embedding"] > 0.2

    async def audit_lines() -> list[Any]:
        async with AuditLog.open(Settings().audit_db) as log:
            return await log.lines()

    lines = asyncio.run(audit_lines())
    assert [line.reason_codes for line in lines] == [[FALLBACK_REASON]] * 2  # one per run
    assert len({line.session for line in lines}) == 2


def test_search_shows_memories_and_the_query_as_they_are_never_as_markup(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Harvested commit messages hold "[ci skip]" and the like: a "[/]" raised a
    MarkupError (exit 1) and "[ci skip]" vanished from the table."""
    monkeypatch.setenv("COLUMNS", "200")
    for text in ("closing tag [/] breaks things", "[ci skip] bump version of widgetfoo"):
        assert run(capsys, "add", text, "--no-embed")[0] == 0
    code, out, err = run(capsys, "search", "closing breaks", "--no-embed")
    assert (code, err) == (0, "") and "closing tag [/] breaks things" in out
    code, out, _ = run(capsys, "search", "widgetfoo", "--no-embed")
    assert code == 0 and "[ci skip] bump version of widgetfoo" in out
    code, out, err = run(capsys, "search", "[/red] closing", "--no-embed")
    assert (code, err) == (0, "") and "Memories for '[/red] closing'" in out


def test_harvest_of_a_file_says_it_is_not_a_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x\n")
    code, _, err = run(capsys, "harvest", "--repo", str(afile), "--no-embed")
    assert code == 2 and err == f"switchyard: --repo {afile}: not a directory\n"
    code, _, err = run(capsys, "harvest", "--repo", str(tmp_path / "nope"), "--no-embed")
    assert code == 2 and err == f"switchyard: --repo {tmp_path / 'nope'}: no such directory\n"


def test_harvest_since_in_a_repository_with_no_commit_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It printed "since bogus", harvested nothing and exited 0."""
    import subprocess

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    code, _, err = run(capsys, "harvest", "--repo", str(tmp_path), "--since", "bogus", "--no-embed")
    assert code == 2 and "has no commit yet" in err


def test_a_secret_typed_in_the_query_is_masked_in_the_search_and_its_echo(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A memory is stored masked, so a query is read masked too: it finds what the key
    masked to, and the JSON (which echoes the query) holds no key."""
    key = "sk-proj-memorysearchcanary0123456789"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    assert run(capsys, "add", f"rotated {key} after the leak", "--no-embed")[0] == 0
    code, found, _ = run(capsys, "search", f"rotated {key}", "--no-embed", "--json")
    assert code == 0 and key not in json.dumps(found)
    assert found["query"] == "rotated [REDACTED]"
    assert [h["id"] for h in found["hits"]] == [1]
    code, text, _ = run(capsys, "search", f"rotated {key}", "--no-embed")
    assert code == 0 and key not in text
