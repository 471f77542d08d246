"""Every §3 trigger fed on a real path (issue 17): `switchyard run` against a scripted
local model (a loopback vLLM fake), each trigger firing from what the pipeline itself saw,
never from `ask --signal`.

No cloud key is set: an escalation is announced (its audit line carries the trigger's
reason and text), each cloud step is skipped as unavailable before anyone is asked, and
the run goes on locally. The repository, the worktree, the sandboxed test loops, the
audit chain and the evidence are real.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.cli.main import main
from tests.fakes.demo_repo import diff_of, git, make_repo
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.spec import seed_spec
from tests.reliability.kit import (
    CLOUD_KEY_VARS,
    FAST_TEST,
    LOCAL_MODELS,
    TASK,
    closed_port,
    impl_json,
    system_of,
)

Reply = Callable[[dict[str, Any]], str]


def plan(
    confidence: float = 0.9,
    *,
    goal: str = "parse() keeps the last token",
    steps: list[dict[str, Any]] | None = None,
) -> str:
    return json.dumps(
        {
            "goal": goal,
            "steps": steps or [{"title": "fix the loop bound in parse()", "files": ["parser.py"]}],
            "acceptance_tests": ["tests/test_parser.py"],
            "confidence": confidence,
        }
    )


def notes(body: dict[str, Any], contradictions: list[str] | None = None) -> str:
    user = str(body["messages"][-1]["content"])
    ids = [part.split('"', 1)[0] for part in user.split('id="')[1:]]
    point = {"text": "parse() splits the text into tokens", "sources": ids[:1]}
    return json.dumps(
        {"points": [point], "contradictions": contradictions or [], "confidence": 0.9}
    )


@pytest.fixture
def world(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
) -> dict[str, Any]:
    repo = make_repo(tmp_path)
    fix = diff_of(repo, "range(len(tokens) - 1)", "range(len(tokens))")
    replies: dict[str, Reply] = {
        "Architect": lambda body: plan(),
        "Implementer": lambda body: impl_json(fix, 0.9),
        "Librarian": notes,
        "Judge": lambda body: json.dumps({"verdict": "approve", "summary": "", "findings": []}),
    }

    def local(body: dict[str, Any]) -> str:
        system = system_of(body)
        if "Socratic" in system:
            return "Q: is it the loop bound? A: yes."
        for marker, reply in replies.items():
            if marker in system:
                return reply(body)
        return json.dumps({"patterns": []})

    vllm = fake_openai_factory("vllm", models=LOCAL_MODELS)
    vllm.script.respond_with(local)
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", vllm.base_url)
    monkeypatch.setenv("SWITCHYARD_LLAMACPP_SERVER_URL", f"http://127.0.0.1:{closed_port()}/v1")
    for var in CLOUD_KEY_VARS:  # no key: nobody is asked, nothing leaves
        monkeypatch.delenv(var, raising=False)
    return {"repo": repo, "vllm": vllm, "replies": replies, "fix": fix, "tmp": tmp_path}


def run(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    argv = ["run", TASK, "--repo", str(world["repo"]), "--test-command", FAST_TEST]
    rc = main([*argv, "--approve", "deny", *extra, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc in (0, 1), out
    bundle = Path(out["bundle"])
    lines = [json.loads(x) for x in (bundle / "audit.jsonl").read_text().splitlines()]
    return out, lines


def escalations(lines: list[dict[str, Any]], role: str) -> list[dict[str, Any]]:
    return [a for a in lines if a["kind"] == "escalation" and a["role"] == role]


def commit_files(repo: Path, paths: list[str]) -> None:
    for p in paths:
        (repo / p).parent.mkdir(parents=True, exist_ok=True)
        (repo / p).write_text(f"VALUE_{p.replace('/', '_').replace('.', '_')} = 1\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "more files")


def test_a_self_reported_1_00_on_noise_escalates_for_its_grounded_confidence(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """The embedded model's plan as seen in the demo: twelve copies of one sentence at
    confidence 1.00. The final plan's grounded confidence fires the trigger, and its
    reason names the failed checks."""
    noise = [{"title": "The Switchyard demo repository"}] * 12
    world["replies"]["Architect"] = lambda body: plan(
        1.0, goal="The Switchyard demo repository", steps=noise
    )
    out, lines = run(world, capsys)
    (first, *_) = escalations(lines, "architect")
    assert "ARCHITECT_LOW_CONFIDENCE" in first["reason_codes"]
    assert first["values"]["confidence"] == pytest.approx(0.15)
    assert (
        "confidence 0.15 (self 1.00; 11 duplicate steps; 0 of 12 steps name a file; the goal "
        "shares 0% of the task's key terms (< 20%)) < 0.75"
    ) in first["detail"]
    grounding = json.loads((Path(out["bundle"]) / "plan_grounding.json").read_text())
    assert grounding["self_report"] == 1.0 and grounding["value"] == pytest.approx(0.15)
    # the second opinion asked on the low confidence says what it rests on too
    (advice, *_) = escalations(lines, "second_opinion")
    assert "confidence 0.15 (self 1.00; 11 duplicate steps;" in advice["detail"]
    # the decision read the FINAL plan: draft, interrogation, final, and no 4th local plan
    asked = [b for b in world["vllm"].chat_requests if "Architect" in system_of(b)]
    assert len(asked) == 2  # the draft and the final (the interrogation is Socratic)
    kinds = [a["kind"] for a in lines if a["role"] == "architect"]
    assert kinds.index("escalation") > max(i for i, k in enumerate(kinds) if k == "call")


def test_a_plan_that_checks_out_keeps_its_self_report_and_does_not_escalate(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    out, lines = run(world, capsys)
    assert out["outcome"] == "merge_ready" or out["tests_green"], out
    assert escalations(lines, "architect") == []
    grounding = json.loads((Path(out["bundle"]) / "plan_grounding.json").read_text())
    assert grounding == {"self_report": 0.9, "cap": 1.0, "value": 0.9, "reasons": []}
    # the plan's steps as the runner published them (the plan pane shows these)
    steps = json.loads((Path(out["bundle"]) / "plan_steps.json").read_text())
    assert steps == {"statuses": ["done"], "detail": "tests green"}
    stages = json.loads((Path(out["bundle"]) / "stages.json").read_text())
    assert stages["architect"]["calls"] == 3 and stages["architect"]["tokens_out"] > 0
    assert stages["implementer"]["calls"] == 1 and stages["implementer"]["seconds"] >= 0


def test_a_confident_change_off_the_plan_fires_the_low_self_check(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    repo = world["repo"]
    readme = (repo / "README.md").read_text()
    off = diff_of(repo, readme, readme + "".join(f"note {n}\n" for n in range(60)), "README.md")
    replies = [impl_json(off, 0.95)]
    world["replies"]["Implementer"] = lambda body: (
        replies.pop(0) if replies else impl_json(world["fix"], 0.9)
    )
    out, lines = run(world, capsys)
    assert out["tests_green"], out
    (esc, *_) = escalations(lines, "implementer")
    assert "IMPLEMENTER_LOW_SELF_CHECK" in esc["reason_codes"]
    assert (
        "self_check_confidence 0.45 (self 0.95; touches none of the plan's files (parser.py); "
        "60 changed lines > 40 (1 step × 40)) < 0.5"
    ) in esc["detail"]
    grounding = json.loads((Path(out["bundle"]) / "implementer_grounding.json").read_text())
    assert [a["value"] for a in grounding["attempts"]] == [pytest.approx(0.45), 0.9]


def test_an_implementer_that_reads_many_files_is_tool_heavy(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    files = [f"pkg/m{i}.py" for i in range(22)]
    commit_files(world["repo"], files)
    steps = [
        {"title": "fix the loop bound in parse()", "files": ["parser.py", *files[:11]]},
        {"title": "check the callers of parse()", "files": files[11:]},
    ]
    world["replies"]["Architect"] = lambda body: plan(0.9, steps=steps)
    _, lines = run(world, capsys)
    (esc,) = escalations(lines, "implementer")[:1]
    assert "IMPLEMENTER_TOOL_HEAVY" in esc["reason_codes"]
    # the baseline test run and the 23 files read for the model: real actions, counted
    assert "tool_calls 24 >= 20" in esc["detail"]


def test_a_full_sweep_asks_the_librarian_and_many_files_make_it_tool_heavy(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    commit_files(world["repo"], [f"lib/part{i}.py" for i in range(45)])
    out, lines = run(world, capsys, "--full-sweep")
    (esc, *_) = escalations(lines, "librarian")
    assert {"LIBRARIAN_FULL_SWEEP", "LIBRARIAN_TOOL_HEAVY"} <= set(esc["reason_codes"])
    condensed = json.loads((Path(out["bundle"]) / "condensed.json").read_text())
    assert condensed["condensed"] and "LIBRARIAN_FULL_SWEEP" in condensed["reason_codes"]
    # the whole repository was read: the last file's chunk went to the Librarian
    read = [b for b in world["vllm"].chat_requests if "Librarian" in system_of(b)]
    assert any("lib/part44.py:" in json.dumps(b) for b in read)


def test_the_specs_full_sweep_switch_asks_for_the_sweep(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    spec = world["tmp"] / "spec.md"
    text = seed_spec()
    marker = "Kimi: escalation-only (Librarian hard sweeps)\n"
    spec.write_text(text.replace(marker, marker + "Librarian full sweep: YES\n"))
    _, lines = run(world, capsys, "--spec", str(spec))
    (esc, *_) = escalations(lines, "librarian")
    assert "LIBRARIAN_FULL_SWEEP" in esc["reason_codes"]
    assert "LIBRARIAN_TOOL_HEAVY" not in esc["reason_codes"]  # a small repository
    changes = [a for a in lines if "SPEC_OVERRIDES_APPLIED" in a["reason_codes"]]
    assert "librarian full sweep: YES" in changes[0]["values"]["changes"]


def test_contradictions_in_the_librarians_own_notes_fire_its_trigger(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    repo = world["repo"]
    # a brief over the planner's window: the Librarian condenses it
    rules = "".join(f"Rule {n}: module {n} keeps its tests green.\n" for n in range(3500))
    (repo / "CONSTITUTION.md").write_text(rules)
    git(repo, "add", "CONSTITUTION.md")
    git(repo, "commit", "-q", "-m", "a long constitution")
    clash = "README.md says parse() keeps every token; parser.py drops the last one"
    world["replies"]["Librarian"] = lambda body: notes(body, [clash])
    out, lines = run(world, capsys)
    (esc, *_) = escalations(lines, "librarian")
    assert "LIBRARIAN_CONTRADICTIONS" in esc["reason_codes"]
    assert "contradictions_detected == true" in esc["detail"]
    condensed = json.loads((Path(out["bundle"]) / "condensed.json").read_text())
    assert clash in condensed["contradictions"]
    assert "LIBRARIAN_CONTRADICTIONS" in condensed["reason_codes"]


# ── ACE: local-first, Kimi only on its own trigger ─────────────────────────────────────


def failing_then_fixed(world: dict[str, Any], failures: int) -> None:
    """``failures`` changes that land and leave the tests red, then the fix."""
    wrong = diff_of(world["repo"], '"""Split ``text``', '"""Split the ``text``')
    replies = [impl_json(wrong, 0.9)] * failures
    world["replies"]["Implementer"] = lambda body: (
        replies.pop(0) if replies else impl_json(world["fix"], 0.9)
    )


def reflections(world: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in world["vllm"].chat_requests if "ACE reflector" in system_of(b)]


@pytest.mark.parametrize(
    ("failures", "lesson", "asks_kimi"),
    [
        (1, False, False),  # one failed loop is ordinary: a local reflection, no trigger
        (2, True, False),  # interesting, but the local reflector kept a lesson
        (2, False, True),  # interesting, and nothing learned locally: ACE's escalation
    ],
)
def test_ace_reflects_locally_first_and_asks_kimi_only_on_its_own_trigger(
    world: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    failures: int,
    lesson: bool,
    asks_kimi: bool,
) -> None:
    failing_then_fixed(world, failures)
    pattern = {"pattern": "read the failing test first", "helpful": True, "confidence": 0.9}
    world["replies"]["ACE reflector"] = lambda body: json.dumps(
        {"patterns": [pattern] if lesson else []}
    )
    out, lines = run(world, capsys)
    assert out["tests_green"], out
    # always one local reflection, asked with no trigger (the escalation, when it is
    # not served, repeats no local generation)
    assert len(reflections(world)) == 1
    routes = [a for a in lines if a["role"] == "ace" and a["kind"] in ("route", "escalation")]
    assert routes[0]["kind"] == "route" and routes[0]["reason_codes"] == []
    asked = escalations(lines, "ace")
    if asks_kimi:
        assert "ACE_INTERESTING_FAILURE" in asked[0]["reason_codes"]
        assert asked[0]["to"] == "kimi-k2-instruct"
    else:
        assert asked == []
