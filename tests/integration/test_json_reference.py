"""docs/json.md, the ``--json`` field reference: a section for every command that takes
``--json`` (and for no other), every field the commands print named in it (the watch in
tests/json_watch.py holds every test's output to it), and the commands no other test runs
with ``--json`` run here."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from app.cli.main import build_parser, main
from tests import json_watch
from tests.fakes.openai_server import FakeOpenAIServer
from tests.json_reference import REFERENCE, _covers, assert_documented, parse, paths, reference
from tests.ports import closed_port

_TYPES = {"string", "integer", "number", "boolean", "array", "object", "null", "any"}


def _json_commands(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> Iterator[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _json_commands(sub, (*words, name))
    if any("--json" in action.option_strings for action in parser._actions):
        yield " ".join(words)


def test_every_command_that_takes_json_has_its_section_and_no_other() -> None:
    commands = set(_json_commands(build_parser()))
    assert len(commands) >= 20
    assert set(reference()) == commands


def test_every_row_has_a_type_of_json_and_a_meaning() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    for command, rows in reference().items():
        assert rows, command
        for path, kind in rows.items():
            assert set(kind.split(" or ")) <= _TYPES, (command, path, kind)
    meanings = [line.rsplit("|", 2)[1].strip() for line in text.splitlines() if line[:3] == "| `"]
    assert all(meanings), "a row without its meaning"


def test_paths_are_two_levels_and_patterns_cover_what_they_say() -> None:
    data = {"a": 1, "b": {"c": {"deep": 1}}, "rows": [{"x": 1}, {"y": 2}], "empty": []}
    assert paths(data) == {"a", "b", "b.c", "rows", "rows[].x", "rows[].y", "empty"}
    assert paths({"kept": ({"x": 1},)}) == {"kept", "kept[].x"}  # a tuple, as model_dump keeps
    assert _covers("left.<provider>", "left.openai")
    assert not _covers("left.<provider>", "other.openai")
    assert _covers("values.*", "values.anything") and not _covers("values.*", "values")
    assert _covers("audit[].*", "audit[].seq") and not _covers("audit[].*", "audits[].seq")


def test_a_row_the_reader_cannot_read_is_an_error_not_a_gap() -> None:
    good = "### `switchyard budget --json`\n\n| field | type | meaning |\n|---|---|---|\n"
    good += "| `total` | object | Totals. |\n"
    assert parse(good) == {"budget": {"total": "object"}}
    with pytest.raises(ValueError, match="budget: 1 row"):
        parse(good + "| `days` | integer | one | two |\n")


def test_a_field_the_reference_lacks_fails_by_its_path() -> None:
    assert_documented("budget", {"total": {"calls": 1}})
    with pytest.raises(AssertionError, match=r"\['secret_field', 'total.surprise'\]"):
        assert_documented("budget", {"total": {"surprise": 1}, "secret_field": 2})


def test_the_watch_names_a_command_module_that_escaped_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert json_watch._unwatched() == []
    monkeypatch.setitem(sys.modules, "app.cli.zz_bound_early", SimpleNamespace(print_json=print))
    assert json_watch._unwatched() == ["app.cli.zz_bound_early.print_json"]


def test_the_watch_sees_what_a_command_prints(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "show", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert ("policy show", printed) in json_watch._PRINTED


# ── the commands no other test runs with --json ─────────────────────────────────────────


@pytest.fixture
def vllm(
    monkeypatch: pytest.MonkeyPatch, fake_openai_factory: Callable[..., FakeOpenAIServer]
) -> FakeOpenAIServer:
    server = fake_openai_factory("vllm", default_reply="a local answer")
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", server.base_url)
    monkeypatch.setenv("SWITCHYARD_LLAMACPP_SERVER_URL", f"http://127.0.0.1:{closed_port()}/v1")
    return server


def _json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> Any:
    rc = main([*argv, "--json"])
    out = capsys.readouterr().out
    assert rc in (0, 1), out
    return json.loads(out)


def test_local_commands_print_what_the_reference_names(
    vllm: FakeOpenAIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    status = _json(["local", "status"], capsys)
    assert any(e["up"] for e in status["endpoints"])
    plan = _json(["local", "plan", "--gpu-gb", "24"], capsys)
    assert plan["models"]
    served = _json(["local", "serve", "--role", "implementer", "--dry-run"], capsys)
    assert served["argv"]
    # (each held to docs/json.md by the watch as it printed)
    assert [c for c, _ in json_watch._PRINTED] == ["local status", "local plan", "local serve"]


def test_a_routed_request_then_the_audit_the_budget_and_a_simulation(
    vllm: FakeOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asked = _json(["ask", "--role", "implementer", "--max-tokens", "8", "fix it"], capsys)
    assert asked["ok"] and asked["audit"]
    main(["audit", "tail", "-n", "5", "--json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["kind"] for line in lines][-1] == "call"
    assert_documented("audit tail", *lines)
    budget = _json(["budget", "--session", asked["session"]], capsys)
    assert budget["total"]["calls"] == 1
    policy = Path(__file__).resolve().parents[2] / "policy" / "model-policy.toml"
    other = tmp_path / "other.toml"
    other.write_text(policy.read_text().replace("session_usd = 5.0", "session_usd = 7.0", 1))
    diff = _json(["policy", "diff", str(policy), str(other)], capsys)
    assert [e["path"] for e in diff["entries"]] == ["budget.session_usd"]
    simulated = _json(["policy", "simulate", "--policy", str(other)], capsys)
    assert simulated["decisions"] >= 1
    explained = _json(
        ["route", "explain", "--role", "architect", "--signal", "confidence=0.5"], capsys
    )
    assert explained["action"] == "escalate"
    assert [c for c, _ in json_watch._PRINTED] == [
        "ask",
        *["audit tail"] * len(lines),
        "budget",
        "policy diff",
        "policy simulate",
        "route explain",
    ]
