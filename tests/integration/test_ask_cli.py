"""`switchyard ask` end to end: the real embedded model, loopback fakes for vLLM and the
cloud, real SQLite for the audit chain and the ledger."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.audit.log import AuditLog
from app.cli.main import main
from app.config import load_settings
from app.policy import load_policy
from app.router.ledger import BudgetLedger
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.policy import policy_pointing
from tests.ports import closed_port
from tests.reliability.kit import sigterm_mid_call


@pytest.fixture(autouse=True)
def _no_local_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point both HTTP runtimes at closed loopback ports: nothing else on the machine counts."""
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", f"http://127.0.0.1:{closed_port()}/v1")
    monkeypatch.setenv("SWITCHYARD_LLAMACPP_SERVER_URL", f"http://127.0.0.1:{closed_port()}/v1")
    monkeypatch.setenv("SWITCHYARD_N_THREADS", "1")
    monkeypatch.setenv("COLUMNS", "200")


def run_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    rc = main([*argv, "--json"])
    out = capsys.readouterr().out
    return rc, json.loads(out)


def test_tutor_is_answered_in_process_with_the_fallback_audited(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc, data = run_json(
        ["ask", "--role", "tutor", "--max-tokens", "12", "what is a closure?"], capsys
    )
    assert rc == 0, data
    assert data["model"] == "smollm2-135m" and data["runtime"] == "llamacpp_inprocess"
    assert data["tokens_out"] > 0 and data["text"].strip()
    fallback = [a for a in data["audit"] if a["kind"] == "runtime_fallback"]
    assert len(fallback) == 1
    assert fallback[0]["detail"].startswith("qwen2.5-coder-7b on vLLM unreachable")
    assert fallback[0]["detail"].endswith("→ smollm2-135m in-process")


def test_tutor_streams_text_and_prints_the_audit_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc = main(["ask", "--role", "tutor", "--max-tokens", "8", "say hi"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "model smollm2-135m" in out
    assert "runtime_fallback" in out and "vLLM unreachable" in out


def test_no_keys_skips_every_cloud_step_and_ends_with_a_clear_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc = main(
        [
            "ask",
            "--role",
            "architect",
            "--signal",
            "confidence=0.5",
            "--approve",
            "allow",
            "--max-tokens",
            "8",
            "plan it",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "gpt-5.1-high: unavailable: no key (OPENAI_API_KEY not set)" in out
    assert "deepseek-reasoner: unavailable: no key (DEEPSEEK_API_KEY not set)" in out
    assert "final: ARCHITECT_LOW_CONFIDENCE fired, but no cloud step could serve" in out


def test_a_plan_schema_returns_json_that_validates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = {
        "type": "object",
        "properties": {
            "goal": {"type": "string", "maxLength": 80},
            "steps": {
                "type": "array",
                "items": {"type": "string", "maxLength": 60},
                "minItems": 1,
                "maxItems": 3,
            },
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "required": ["goal", "steps", "confidence"],
    }
    path = tmp_path / "plan.schema.json"
    path.write_text(json.dumps(schema))
    rc, data = run_json(
        [
            "ask",
            "--role",
            "architect",
            "--schema",
            str(path),
            "--max-tokens",
            "300",
            "Plan a fix for an off-by-one error",
        ],
        capsys,
    )
    assert rc == 0, data["error"]
    plan = data["json"]
    assert set(plan) >= {"goal", "steps", "confidence"}
    assert 0 <= plan["confidence"] <= 1 and 1 <= len(plan["steps"]) <= 3


def test_vllm_serves_when_it_is_up(
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    vllm = fake_openai_factory(
        "vllm", replies=["Use a for loop."], models=["Qwen/Qwen2.5-Coder-7B-Instruct"]
    )
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", vllm.base_url)
    rc, data = run_json(["ask", "--role", "tutor", "how do I loop?"], capsys)
    assert rc == 0
    assert (data["model"], data["runtime"]) == ("qwen2.5-coder-7b", "vllm")
    assert data["text"] == "Use a for loop."
    assert [a["kind"] for a in data["audit"]] == ["route", "call"]
    assert vllm.chat_requests[-1]["model"] == "Qwen/Qwen2.5-Coder-7B-Instruct"


def test_a_request_vllm_refuses_as_invalid_stops_with_its_words_and_no_fallback(
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Not "vLLM down, answered by the 135M model": one line that says the request was
    refused, by whom and in its words."""
    vllm = fake_openai_factory("vllm", models=["Qwen/Qwen2.5-Coder-7B-Instruct"])
    vllm.fail_next("400", path="/v1/chat/completions", message="invalid schema")
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", vllm.base_url)
    rc = main(["ask", "--role", "tutor", "--max-tokens", "8", "hi"])
    out = capsys.readouterr().out
    assert rc == 1
    stopped = [line for line in out.splitlines() if line.startswith("stopped:")]
    assert len(stopped) == 1, out
    assert stopped[0].startswith("stopped: bad request: vLLM refused it as invalid (")
    assert "HTTP 400: invalid schema" in stopped[0]
    assert "runtime_fallback" not in out and "smollm2" not in out
    vllm.fail_next("400", path="/v1/chat/completions", message="invalid schema")
    rc, data = run_json(["ask", "--role", "tutor", "--max-tokens", "8", "hi"], capsys)
    assert rc == 1 and not data["ok"] and data["error"].startswith("bad request: ")
    assert [a["kind"] for a in data["audit"]] == ["route", "degradation"]


def test_vllm_without_the_model_falls_back_and_says_why(
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    vllm = fake_openai_factory("vllm", models=["some/other-model"])
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", vllm.base_url)
    rc, data = run_json(["ask", "--role", "tutor", "--max-tokens", "8", "hi"], capsys)
    assert rc == 0 and data["runtime"] == "llamacpp_inprocess"
    kinds = [a["kind"] for a in data["audit"]]
    assert "degradation" in kinds and "runtime_fallback" in kinds


def test_approved_escalation_reaches_the_cloud_fake_and_is_costed(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    cloud = fake_openai_factory("openai", replies=["A plan from the cloud."])
    policy = policy_pointing(tmp_path, openai=cloud.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-canary-0123456789abcdef")
    rc, data = run_json(
        [
            "ask",
            "--policy",
            str(policy),
            "--role",
            "architect",
            "--signal",
            "confidence=0.5",
            "--approve",
            "allow",
            "plan it",
        ],
        capsys,
    )
    assert rc == 0, data
    assert data["escalated"] and data["model"] == "gpt-5.1-high"
    assert data["text"] == "A plan from the cloud." and data["cost_usd"] > 0
    kinds = [a["kind"] for a in data["audit"]]
    assert kinds == ["escalation", "approval", "call"]
    call = data["audit"][-1]
    assert call["provenance"]["approver"] == "headless:allow"
    assert "sk-test-canary" not in json.dumps(data)
    assert cloud.chat_requests[-1]["model"] == "gpt-5.1"


def test_local_only_sends_nothing_to_the_cloud_even_with_a_key(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    cloud = fake_openai_factory("openai")
    policy = policy_pointing(tmp_path, openai=cloud.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-canary-0123456789abcdef")
    rc, data = run_json(
        [
            "ask",
            "--policy",
            str(policy),
            "--role",
            "architect",
            "--signal",
            "confidence=0.5",
            "--approve",
            "allow",
            "--local-only",
            "--max-tokens",
            "8",
            "x",
        ],
        capsys,
    )
    assert rc == 0 and not data["escalated"]
    assert cloud.chat_requests == []
    assert all("SKIP_LOCAL_ONLY" in a["reason_codes"] for a in data["audit"] if a["kind"] == "skip")


def test_denied_escalation_goes_on_locally(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    cloud = fake_openai_factory("openai")
    policy = policy_pointing(tmp_path, openai=cloud.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-canary-0123456789abcdef")
    rc, data = run_json(
        [
            "ask",
            "--policy",
            str(policy),
            "--role",
            "architect",
            "--signal",
            "confidence=0.5",
            "--approve",
            "deny",
            "--max-tokens",
            "8",
            "x",
        ],
        capsys,
    )
    assert rc == 0 and not data["escalated"]
    assert "denial" in [a["kind"] for a in data["audit"]]
    assert cloud.chat_requests == []


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "no such file"),
        ("{not json", "invalid JSON"),
        ("[1]", "JSON schema object"),
        (
            '{"type": "object", "properties": {"a": {"type": "strin"}}}',
            "schema.properties.a.type: 'strin' is not a JSON schema type",
        ),
    ],
)
def test_bad_schema_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, needle: str
) -> None:
    path = tmp_path / "s.json"
    if content is not None:
        path.write_text(content)
    rc = main(["ask", "--role", "tutor", "--schema", str(path), "x"])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and str(path) in err


def test_a_schema_never_met_ends_after_the_documented_generations_with_one_repair(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """GR-012: one validation, one repair, one repair line; then exit 1 and a clear line."""
    from app.router.structured import MAX_STRUCTURED_GENERATIONS

    vllm = fake_openai_factory(
        "vllm", default_reply="Sure! Here is the plan: fix it.", models=["Qwen/Qwen3-14B-AWQ"]
    )
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", vllm.base_url)
    path = tmp_path / "plan.schema.json"
    path.write_text(json.dumps({"type": "object", "properties": {"goal": {"type": "string"}}}))
    argv = ["ask", "--role", "architect", "--schema", str(path), "plan the fix"]
    rc, data = run_json(argv, capsys)
    assert rc == 1 and data["ok"] is False
    assert len(vllm.chat_requests) == MAX_STRUCTURED_GENERATIONS
    repairs = [a for a in data["audit"] if a["kind"] == "repair"]
    assert len(repairs) == 1 and repairs[0]["reason_codes"] == ["GR012_REPAIR"]
    # both generations are counted, not the last alone
    assert data["generations"] == MAX_STRUCTURED_GENERATIONS
    calls = [a for a in data["audit"] if a["kind"] == "call"]
    assert data["tokens_out"] == sum(c["values"]["tokens_out"] for c in calls)
    assert data["error"].startswith(
        f"no answer fits the schema after {MAX_STRUCTURED_GENERATIONS} generations"
    )
    # the same, as a person reads it: one clear line, no traceback
    rc = main(argv)
    out = capsys.readouterr().out
    assert rc == 1 and "Traceback" not in out
    assert "stopped: no answer fits the schema" in out


@pytest.mark.parametrize("terminal", [False, True])
def test_a_reply_is_shown_on_a_terminal_and_passed_as_it_is_to_a_pipe(
    terminal: bool,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # an ESC in a model's reply began an escape sequence on the reader's terminal
    reply = "Use a loop.\x1b[2J\x1b]52;c;eA==\x07 Done."
    vllm = fake_openai_factory("vllm", replies=[reply], models=["Qwen/Qwen2.5-Coder-7B-Instruct"])
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", vllm.base_url)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: terminal)
    assert main(["ask", "--role", "tutor", "how do I loop?"]) == 0
    out = capsys.readouterr().out
    if terminal:
        assert "Use a loop.␛[2J␛]52;c;eA==␇ Done." in out and "\x1b[2J" not in out
    else:
        assert reply in out  # the command's output, for a pipe, byte for byte


def test_an_error_after_part_of_the_reply_starts_on_a_line_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The team ledger gone mid-call: 'Hello thereswitchyard: team ledger … unavailable'."""
    from app.router.ledger import BudgetLedger
    from app.store.errors import StoreUnavailable

    vllm = fake_openai_factory(
        "vllm", replies=["Use a for loop"], models=["Qwen/Qwen2.5-Coder-7B-Instruct"]
    )
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", vllm.base_url)

    async def gone(*args: Any, **kwargs: Any) -> None:
        raise StoreUnavailable("team ledger postgresql://sy@127.0.0.1:5/t unavailable")

    monkeypatch.setattr(BudgetLedger, "record_call", gone)
    assert main(["ask", "--role", "tutor", "how do I loop?"]) == 1
    out, err = capsys.readouterr()
    assert out == "Use a for loop\n"
    assert err.startswith("switchyard: team ledger")


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_an_empty_prompt_is_a_usage_error_and_calls_no_model(
    capsys: pytest.CaptureFixture[str], prompt: str
) -> None:
    """``ask --role tutor ''`` called the model and exited 0 (tutor, librarian, memory add
    and run each refuse an empty argument with exit 2)."""
    import os

    assert main(["ask", "--role", "tutor", prompt]) == 2
    assert capsys.readouterr().err.splitlines() == ["switchyard: the PROMPT is empty"]
    assert not (Path(os.environ["SWITCHYARD_DATA_DIR"]) / "audit.sqlite3").exists()


def test_a_schema_that_is_a_directory_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ask", "--role", "tutor", "--schema", str(tmp_path), "x"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"switchyard: --schema {tmp_path}: is a directory"
    ]


def test_a_schema_nested_too_deeply_and_a_role_that_answers_no_chat_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text('{"type": "object", "x": ' + "[" * 3000 + "]" * 3000 + "}")
    assert main(["ask", "--role", "architect", "--schema", str(deep), "hi"]) == 2
    assert capsys.readouterr().err.strip().endswith("nested too deeply to be a schema")
    # an embedding role was sent a chat request (or a KeyError traceback)
    assert main(["ask", "--role", "embeddings", "hi"]) == 2
    err = capsys.readouterr().err
    assert "a role of kind embedding answers no chat request" in err and "Traceback" not in err


@pytest.mark.parametrize("twice", [False, True], ids=["once", "twice"])
def test_a_sigterm_mid_call_settles_and_audits_the_call_then_exits_143(
    tmp_path: Path, fake_openai_factory: Callable[..., FakeOpenAIServer], twice: bool
) -> None:
    """A SIGTERM ended `ask` mid-call with no line: the reservation stayed held until it
    expired and was then charged in full, and the audit never said why. It now does what
    Ctrl-C does: the call is settled at its estimate, CALL_CANCELLED, then exit 143."""
    cloud = fake_openai_factory("openai", replies=["word " * 200], event_delay=0.2)
    policy = policy_pointing(tmp_path, openai=cloud.base_url)
    env = {
        **os.environ,
        "OPENAI_API_KEY": "sk-test-canary-0123456789abcdef",
        "SWITCHYARD_VLLM_URL": f"http://127.0.0.1:{closed_port()}/v1",
        "SWITCHYARD_LLAMACPP_SERVER_URL": f"http://127.0.0.1:{closed_port()}/v1",
    }
    argv = ["ask", "--policy", str(policy), "--role", "architect", "--approve", "allow"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", *argv, "--signal", "confidence=0.5", "plan it"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    # a second signal waits for the settlement (it cut it off, a review)
    err = sigterm_mid_call(proc, cloud, twice=twice)
    # (a second signal during the interpreter's own shutdown, which puts SIG_DFL back,
    # ends it by the signal: a shell reads that as 143 too)
    assert proc.returncode == 143 or (twice and proc.returncode == -signal.SIGTERM), err
    assert "switchyard: stopped (SIGTERM)" in err and "Traceback" not in err

    async def read() -> tuple[list[Any], dict[str, Any]]:
        settings = load_settings()
        async with AuditLog.open(settings.audit_db) as log:
            lines = await log.lines()
        async with await BudgetLedger.open(
            settings.ledger_db, load_policy().policy.budget
        ) as ledger:
            return lines, await ledger.report()

    lines, report = asyncio.run(read())
    assert [x.kind for x in lines] == ["escalation", "approval", "budget"]
    assert lines[-1].reason_codes == ["CALL_CANCELLED", "SETTLED_AT_ESTIMATE"]
    assert report["in_flight"] == {"reservations": 0, "reserved_usd": 0.0}


def test_a_schema_reaches_a_cloud_model_once(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``ask --schema`` spelt the schema in its system prompt, and the cloud backend's
    own note spelt it again: two system messages, the schema's tokens paid twice (a user
    audit)."""
    schema = {"type": "object", "properties": {"goal": {"type": "string"}}, "required": ["goal"]}
    path = tmp_path / "goal.schema.json"
    path.write_text(json.dumps(schema))
    cloud = fake_openai_factory("openai", replies=['{"goal": "fix the loop"}'])
    policy = policy_pointing(tmp_path, openai=cloud.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-canary-0123456789abcdef")
    argv = ["ask", "--policy", str(policy), "--role", "architect", "--schema", str(path)]
    argv += ["--signal", "confidence=0.5", "--approve", "allow", "plan it"]
    rc, data = run_json(argv, capsys)
    assert rc == 0 and data["json"] == {"goal": "fix the loop"}, data
    (sent,) = cloud.chat_requests
    texts = [str(m["content"]) for m in sent["messages"] if m["role"] in ("system", "developer")]
    assert sum(t.count('"required":["goal"]') for t in texts) == 1, texts


def test_a_schema_is_spelt_for_a_local_model(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A local server may not decode to the schema (an older vLLM, Ollama): the model is
    told it in the system prompt (a review: only "Reply with JSON only." was left)."""
    schema = {"type": "object", "properties": {"goal": {"type": "string"}}, "required": ["goal"]}
    path = tmp_path / "goal.schema.json"
    path.write_text(json.dumps(schema))
    vllm = fake_openai_factory(
        "vllm", replies=['{"goal": "fix"}'], models=["Qwen/Qwen2.5-Coder-7B-Instruct"]
    )
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", vllm.base_url)
    rc, data = run_json(["ask", "--role", "tutor", "--schema", str(path), "x"], capsys)
    assert rc == 0 and data["json"] == {"goal": "fix"}, data
    (sent,) = vllm.chat_requests
    texts = [str(m["content"]) for m in sent["messages"] if m["role"] == "system"]
    assert sum(t.count('"required":["goal"]') for t in texts) == 1, texts
