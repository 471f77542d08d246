"""The Implementer's edits through the whole pipeline (issue 16), one scripted reply per
accepted form: exact, drifted and elided SEARCH/REPLACE blocks, a whole file, a unified
diff with wrong line numbers, the older JSON; each lands and the tests go green. An
ambiguous edit is refused, and the refusal (both places, with line numbers) goes back to
the model in the one repair turn; a reply in no format, and edits that never land, are
failed loops audited apart from failed tests, with the refusal fed to the next attempt.

The pipeline runs for real (worktree, sandboxed test loops, audit chain, evidence); the
local model is a loopback vLLM fake, and everything runs under --local-only.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.pipeline.edits.render import block, reply, whole_file
from tests.fakes.openai_server import FakeOpenAIServer
from tests.reliability.kit import (
    LOCAL_MODELS,
    TASK,
    closed_port,
    diff_of,
    git,
    make_repo,
    no_traceback,
    plan_json,
    role_of,
    run_json,
    verdict_json,
)

#: green once parse() keeps the last token: the behaviour, not the text, is checked
TEST = (
    f'{sys.executable} -c "import sys, parser; '
    "sys.exit(parser.parse(['1', '+', '2']) != [('num', '1'), ('op', '+'), ('num', '2')])\""
)
LOOP = "    for i in range(len(tokens) - 1):\n"
FIXED = "    for i in range(len(tokens)):\n"


@pytest.fixture
def env(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
) -> dict[str, Any]:
    repo = make_repo(tmp_path)
    replies: list[str] = []

    def local(body: dict[str, Any]) -> str:
        role = role_of(body)
        if role == "interrogate":
            return "Q: is it the loop bound? A: yes."
        if role == "architect":
            return plan_json(0.95)
        if role == "implementer":
            assert replies, "more implementer calls than scripted replies"
            return replies.pop(0)
        if role == "judge":
            return verdict_json()
        return json.dumps({"patterns": []})

    vllm = fake_openai_factory("vllm", models=LOCAL_MODELS)
    vllm.script.respond_with(local)
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", vllm.base_url)
    monkeypatch.setenv("SWITCHYARD_LLAMACPP_SERVER_URL", f"http://127.0.0.1:{closed_port()}/v1")
    return {"repo": repo, "vllm": vllm, "replies": replies}


def run(env: dict[str, Any], capsys: pytest.CaptureFixture[str], *replies: str) -> dict[str, Any]:
    env["replies"][:] = list(replies)
    argv = ["run", TASK, "--repo", str(env["repo"]), "--local-only", "--approve", "deny"]
    rc, out, err = run_json([*argv, "--test-command", TEST], capsys)
    no_traceback(err)
    assert env["replies"] == [], "a scripted reply was never asked for"
    out["rc"], out["stderr"] = rc, err
    return out


def implementer_asks(env: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in env["vllm"].chat_requests if role_of(b) == "implementer"]


def audit(out: dict[str, Any]) -> list[dict[str, Any]]:
    lines = (Path(out["bundle"]) / "audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def attempt(out: dict[str, Any], n: int) -> tuple[dict[str, Any], str]:
    bundle = Path(out["bundle"])
    record = json.loads((bundle / "edits" / f"attempt-{n}.json").read_text())
    return record, (bundle / "diffs" / f"attempt-{n}.diff").read_text()


def lands_green(out: dict[str, Any]) -> tuple[dict[str, Any], str]:
    assert out["tests_green"], out
    record, diff = attempt(out, 1)
    assert record["landed"] and record["replies"][-1]["outcome"] == "landed"
    # the diff is Switchyard's own, from the worktree, with the file's real indentation
    assert diff.startswith("diff --git a/parser.py b/parser.py")
    assert "-    for i in range(len(tokens) - 1):\n+    for i in range(len(tokens)):\n" in diff
    return record, diff


DRIFTED = (
    "tagged = []   \nfor i in range(len(tokens) - 1):\n    token = tokens[i]\n",
    "tagged = []\nfor i in range(len(tokens)):\n    token = tokens[i]\n",
)
ELIDED = "def parse(tokens: list[str]) -> list[tuple[str, str]]:\n    # ... existing code ...\n"


@pytest.mark.parametrize(
    ("form", "how"),
    [
        ("exact", "exact"),
        ("drifted", "whitespace"),
        ("elided", "elided"),
        ("whole file", "rewritten"),
        ("diff", "exact"),
        ("json", "exact"),
    ],
)
def test_each_accepted_form_lands_and_the_tests_go_green(
    env: dict[str, Any], capsys: pytest.CaptureFixture[str], form: str, how: str
) -> None:
    source = (env["repo"] / "parser.py").read_text()
    diff = diff_of(env["repo"], LOOP, FIXED).replace("@@ -18,7 +18,7 @@", "@@ -40,7 +40,7 @@")
    text = {
        "exact": reply([block("parser.py", LOOP, FIXED)], 0.9),
        "drifted": reply([block("parser.py", *DRIFTED)], 0.9),
        "elided": reply([block("parser.py", ELIDED + LOOP, ELIDED + FIXED)], 0.9),
        "whole file": reply([whole_file("parser.py", source.replace(LOOP, FIXED))], 0.9),
        "diff": f"```diff\n{diff}```\n" + '{"self_check_confidence": 0.9, "notes": ""}',
        "json": json.dumps({"diff": diff, "self_check_confidence": 0.9, "notes": ""}),
    }[form]
    out = run(env, capsys, text)
    record, _ = lands_green(out)
    assert [n["how"] for n in record["notes"]] == [how]
    assert record["edits"]["format"] == {"diff": "diff", "json": "json"}.get(form, "blocks")
    assert record["edits"]["self_check_confidence"] == 0.9
    # no JSON schema for the edit format; the grammar is for llama.cpp (vLLM ignores it)
    (ask,) = implementer_asks(env)
    assert "response_format" not in ask and "guided_json" not in ask
    assert "<<<<<<< SEARCH" in ask["messages"][0]["content"]  # the prompt's one example


def test_an_ambiguous_edit_is_refused_and_the_refusal_goes_back_in_the_repair(
    env: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    repo = env["repo"]
    pairs = "\n\ndef pairs(tokens: list[str]) -> list[str]:\n" + LOOP + "        yield tokens[i]\n"
    (repo / "parser.py").write_text((repo / "parser.py").read_text() + pairs)
    git(repo, "commit", "-qam", "pairs() loops to the last but one token, rightly")
    ambiguous = reply([block("parser.py", LOOP, FIXED)], 0.9)
    with_context = reply(
        [block("parser.py", "    tagged = []\n" + LOOP, "    tagged = []\n" + FIXED)]
    )
    out = run(env, capsys, ambiguous, with_context)
    assert out["tests_green"], out
    first, repair = implementer_asks(env)
    assert repair["messages"][: len(first["messages"])] == first["messages"]
    told = repair["messages"][-1]["content"]
    assert "edit 1 (parser.py)" in told and "matches 2 places: line 21, line 41" in told
    assert "copy more lines around the change" in told
    record, diff = attempt(out, 1)
    refused, landed = record["replies"]
    assert refused["outcome"] == "refused" and refused["refusals"][0]["reason"] == "ambiguous"
    assert [c["start"] for c in refused["refusals"][0]["candidates"]] == [21, 41]
    assert landed["outcome"] == "landed" and record["landed"]
    # the one repair, audited by the owner; pairs() was never touched
    lines = audit(out)
    assert [a["role"] for a in lines if a["kind"] == "repair"] == ["implementer"]
    assert diff.count("\n-    for i in range(len(tokens) - 1):") == 1 and "pairs" not in diff
    assert "    for i in range(len(tokens) - 1):\n        yield" in git(
        repo, "show", f"switchyard/{out['run_id']}:parser.py"
    )


def test_edits_that_never_land_and_a_reply_in_no_format_are_failed_loops_audited_apart(
    env: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = "    for i in range(len(token_list) - 1):\n"
    missing = reply([block("parser.py", wrong, FIXED)], 0.4)
    prose = "The loop in parse() stops one short; use range(len(tokens))."
    doc = '    """Tag each token as a number or an operator."""\n'
    wrong_fix = reply([block("parser.py", doc, doc.replace("Tag", "Label"))])
    out = run(
        env,
        capsys,
        missing,
        missing,  # the repair repeats it: the loop fails, edits refused
        prose,
        prose,  # the repair is prose again: the loop fails, format
        wrong_fix,  # lands, tests stay red: the loop fails, tests
        reply([block("parser.py", LOOP, FIXED)], 0.9),
    )
    assert out["tests_green"], out
    failures = [
        c
        for a in audit(out)
        if a["kind"] == "run"
        for c in a["reason_codes"]
        if "IMPLEMENTER_" in c
    ]
    assert failures == [
        "IMPLEMENTER_EDITS_REFUSED",
        "IMPLEMENTER_FORMAT_FAILED",
        "IMPLEMENTER_TESTS_FAILED",
    ]
    asks = implementer_asks(env)
    assert len(asks) == 6  # three attempts with their repair, one more, one that lands
    # the refusal, with the nearest text and its line number, reached the next attempt
    second = asks[2]["messages"][-1]["content"]
    assert (
        "your edits did not land" in second
        and "  21|     for i in range(len(tokens) - 1):" in second
    )
    # the person reads one line per failed attempt, once (the 13-line excerpt meant for the
    # model was printed twice, and ran off the workbench's screen as a toast)
    said = [ln for ln in out["stderr"].splitlines() if "attempt 1" in ln or "attempt 2" in ln]
    assert "  21|" not in out["stderr"], out["stderr"]
    assert any("attempt 1: the model's edits did not land: " in ln for ln in said), said
    assert any("attempt 2: the reply did not fit the edit format" in ln for ln in said), said
    # a failed answer's line says "failed" (it read "started", as if the work began there)
    failed = [ln for ln in out["stderr"].splitlines() if ln.startswith("implementer ")]
    failed = [ln for ln in failed if "attempt 1:" in ln or "attempt 2:" in ln]
    assert failed and all(ln.startswith("implementer failed · ") for ln in failed), failed
    # the two failed loops (each after its one repair) are the §3 trigger for attempt 3
    lines = audit(out)
    fired = [a["seq"] for a in lines if "IMPLEMENTER_FAILED_LOOPS" in a["reason_codes"]]
    second = next(a["seq"] for a in lines if "IMPLEMENTER_FORMAT_FAILED" in a["reason_codes"])
    assert fired and min(fired) > second
    # each attempt's evidence is kept
    record, diff = attempt(out, 1)
    assert not record["landed"] and diff.startswith("# no diff: edits refused")
    assert [r["outcome"] for r in record["replies"]] == ["refused", "refused"]
    record, _ = attempt(out, 2)
    assert [r["outcome"] for r in record["replies"]] == ["format", "format"]
    record, diff = attempt(out, 3)
    assert record["landed"] and "Label each token" in diff


def test_a_plan_naming_no_real_file_still_shows_the_repos_small_sources(tmp_path: Path) -> None:
    """The fallback looks inside the run's worktree, which itself lives under the state
    dir: only paths inside the worktree may be excluded as state, or nothing is shown."""
    from app.pipeline.implementer import files_for
    from app.pipeline.schemas import Plan, PlanStep
    from app.workspace.worktree import Worktree

    wt = Worktree.create(make_repo(tmp_path), "20260101-000000-abcdef")
    plan = Plan(goal="g", steps=[PlanStep(title="t", files=["nowhere.py"])], confidence=1)
    shown = files_for(plan, wt.path)
    assert "parser.py" in shown and "for i in range(len(tokens) - 1):" in shown["parser.py"]


def test_a_skip_over_the_failing_test_is_no_green_loop(
    env: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """``@pytest.mark.skip`` over the failing test made pytest exit 0 ("1 skipped"), and
    the run went on to the Judge and merge_ready (a user audit): a pytest run with no test
    passed is a failed loop, said in its log, and the next attempt is asked."""
    imports = "from parser import evaluate, parse, tokenize\n"
    test = "def test_parse_keeps_the_last_token() -> None:\n"
    skip = "@pytest.mark.skip(reason='flaky')\n"
    path = "tests/test_parser.py"
    skipping = reply(
        [block(path, imports, "import pytest\n" + imports), block(path, test, skip + test)]
    )
    # (each attempt starts again from the run's base: the skip is gone by then)
    fix = reply([block("parser.py", LOOP, FIXED)], 0.9)
    env["replies"][:] = [skipping, fix]
    command = (
        f"{sys.executable} -m pytest -q -p no:cacheprovider {path}::test_parse_keeps_the_last_token"
    )
    argv = ["run", TASK, "--repo", str(env["repo"]), "--local-only", "--approve", "deny"]
    _rc, out, err = run_json([*argv, "--test-command", command], capsys)
    no_traceback(err)
    assert env["replies"] == [], "the attempt after the skip was never asked for"
    assert out["tests_green"], out
    codes = [c for a in audit(out) if a["kind"] == "run" for c in a["reason_codes"]]
    assert "IMPLEMENTER_TESTS_FAILED" in codes
    record, diff = attempt(out, 1)
    assert record["landed"] and "@pytest.mark.skip" in diff
    logs = sorted((Path(out["bundle"]) / "tests").glob("loop-*.log"))
    said = [log.read_text() for log in logs]
    assert any("# not a pass: no test passed (1 skipped)" in text for text in said), said


def test_an_exit_before_the_tests_are_counted_is_no_green_loop(
    env: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """The Implementer's ``os._exit(0)`` under pytest ended the run before it counted
    anything: exit 0, an empty log, "loop 1 PASS" and merge_ready (a user audit). The
    first loop printed pytest's summary; a loop that prints none is no pass."""
    head = "from __future__ import annotations\n"
    escape = 'import os, sys\nif "pytest" in sys.modules:\n    os._exit(0)\n'
    exits = reply([block("parser.py", head, head + escape)])
    env["replies"][:] = [exits, reply([block("parser.py", LOOP, FIXED)], 0.9)]
    command = f"{sys.executable} -m pytest -q -p no:cacheprovider tests/test_parser.py"
    argv = ["run", TASK, "--repo", str(env["repo"]), "--local-only", "--approve", "deny"]
    _rc, out, err = run_json([*argv, "--test-command", command], capsys)
    no_traceback(err)
    assert env["replies"] == [], "the attempt after the early exit was never asked for"
    assert out["tests_green"], out
    said = [log.read_text() for log in sorted((Path(out["bundle"]) / "tests").glob("loop-*.log"))]
    assert any("# not a pass: no pytest summary, where the first loop" in t for t in said), said
