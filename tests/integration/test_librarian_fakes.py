"""The Librarian against loopback fakes: vLLM serves the local librarian, Moonshot (Kimi)
the escalation; real session (audit chain, ledger, approvals, backend registry), and the
``switchyard librarian`` command on a real git repository."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.cli.main import main
from app.config import load_settings
from app.pipeline.librarian import REDUCE_SYSTEM, condense
from app.policy import load_policy
from app.router.session import open_session
from app.tokens import count_text
from tests.fakes.demo_repo import make_repo
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.policy import policy_pointing

SOURCE_ID = re.compile(r'<source id="([^"]+)"')
NOTE_LINE = re.compile(r"^- (.*) \[([^\]]+)\]$", re.MULTILINE)
LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
MOONSHOT_KEY = "sk-canary-moonshot-00000000000000"


def last_user(body: dict[str, Any]) -> str:
    return str([m for m in body["messages"] if m["role"] == "user"][-1]["content"])


def notes_for(body: dict[str, Any], *, label: str, confidence: float = 0.9) -> str:
    """Map: a point per source id given. Reduce: points of up to 6 ids."""
    text = last_user(body)
    if body["messages"][0]["content"] == REDUCE_SYSTEM:
        ids = list(dict.fromkeys(i for m in NOTE_LINE.finditer(text) for i in m[2].split(", ")))
    else:
        ids = list(dict.fromkeys(SOURCE_ID.findall(text)))
    chunks = [ids[i : i + 6] for i in range(0, len(ids), 6)]
    points = [{"text": f"{label} {n}", "sources": c} for n, c in enumerate(chunks)]
    return json.dumps({"points": points, "contradictions": [], "confidence": confidence})


@pytest.fixture
def fakes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
) -> dict[str, Any]:
    vllm = fake_openai_factory("vllm", models=[LLAMA], max_model_len=32768)
    vllm.script.respond_with(lambda body: notes_for(body, label="local"))
    kimi = fake_openai_factory("moonshot")
    kimi.script.respond_with(lambda body: notes_for(body, label="kimi", confidence=0.95))
    policy = policy_pointing(tmp_path, moonshot=kimi.base_url)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", vllm.base_url)
    monkeypatch.setenv("SWITCHYARD_LLAMACPP_SERVER_URL", f"http://127.0.0.1:{closed}/v1")
    monkeypatch.setenv("MOONSHOT_API_KEY", MOONSHOT_KEY)
    monkeypatch.setenv("COLUMNS", "200")
    return {"policy": policy, "vllm": vllm, "kimi": kimi}


def big_sources(n: int = 120, chars: int = 3600) -> list[tuple[str, str]]:
    """About 123k tokens in all: over the librarian_context trigger (> 100k)."""
    return [
        (f"docs/part{i:03}.md:1-60", (f"Section {i} says the limit is {i} ms. " * 200)[:chars])
        for i in range(n)
    ]


async def run_condense(fakes: dict[str, Any], approve: str, budget: int = 2000) -> Any:
    policy = load_policy(fakes["policy"]).policy
    async with open_session(load_settings(), policy, approve=approve) as session:  # type: ignore[arg-type]
        result = await condense(session.router, "what limits apply?", big_sources(), budget)
        lines = await session.audit.lines(session=session.id)
        assert (await session.audit.verify()).ok
    return result, lines


async def test_over_100k_tokens_with_approval_is_served_by_kimi(fakes: dict[str, Any]) -> None:
    result, lines = await run_condense(fakes, "allow")
    assert result.tokens_in > 100_000
    assert result.escalated and result.model == "kimi-k2-instruct" and result.calls == 1
    assert fakes["vllm"].chat_requests == []  # nothing was condensed locally
    (ask,) = fakes["kimi"].chat_requests
    assert len(SOURCE_ID.findall(last_user(ask))) == 120  # the whole job in one call
    kinds = [ln.kind for ln in lines]
    assert kinds == ["escalation", "approval", "call", "condense"]
    escalation = lines[0]
    assert escalation.to == "kimi-k2-instruct"
    assert "LIBRARIAN_CONTEXT_LARGE" in escalation.reason_codes
    assert escalation.values["context_estimate"] > 100_000
    condense_line = lines[-1]
    assert {"LIBRARIAN_CONTEXT_LARGE", "LIBRARIAN_ESCALATED"} <= set(condense_line.reason_codes)
    assert condense_line.values["escalated"] is True
    assert condense_line.values["model"] == "kimi-k2-instruct"
    assert result.tokens_out <= 2000
    for sid, _ in big_sources():
        assert sid in result.text
    # the key went out as the bearer token only, never into the record
    assert MOONSHOT_KEY not in json.dumps([ln.model_dump(mode="json") for ln in lines])


async def test_over_100k_tokens_denied_is_condensed_locally(fakes: dict[str, Any]) -> None:
    result, lines = await run_condense(fakes, "deny")
    assert not result.escalated and result.model == "llama-3.1-8b"
    assert fakes["kimi"].chat_requests == []  # nothing left the machine
    assert result.groups > 1 and result.reduce_rounds >= 1
    asks = fakes["vllm"].chat_requests
    assert (
        len(asks)
        == result.calls
        == result.map_calls + sum(1 for a in asks if a["messages"][0]["content"] == REDUCE_SYSTEM)
    )
    for body in asks:  # each map request fits the 32k window with its answer
        size = sum(count_text(m["content"]) + 4 for m in body["messages"])
        assert size + body["max_tokens"] <= 32768
    kinds = [ln.kind for ln in lines]
    assert kinds.count("denial") >= 1 and "approval" not in kinds
    (condense_line,) = [ln for ln in lines if ln.kind == "condense"]
    assert {
        "LIBRARIAN_CONTEXT_LARGE",
        "LIBRARIAN_ESCALATION_DECLINED",
        "LIBRARIAN_MAP_REDUCE",
    } <= set(condense_line.reason_codes)
    assert condense_line.values["escalated"] is False
    assert condense_line.values["map_calls"] == result.map_calls
    assert result.tokens_out <= 2000
    assert {s for p in result.points for s in p.sources} == {sid for sid, _ in big_sources()}


# ── the command ───────────────────────────────────────────────────────────────────────


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    rc = main([*argv, "--json"])
    out = capsys.readouterr().out
    return rc, json.loads(out) if out.strip() else {}


def denied_sweep(
    tmp_path: Path,
    fakes: dict[str, Any],
    vllm: FakeOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> tuple[int, dict[str, Any]]:
    """`librarian --full-sweep --budget 120` on a fresh repository, served by ``vllm``,
    the cloud step denied: the exit code and the JSON."""
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", vllm.base_url)
    repo = make_repo(tmp_path)
    argv = ["librarian", "why is the last token dropped?", "--repo", str(repo)]
    argv += ["--policy", str(fakes["policy"]), "--full-sweep", "--budget", "120"]
    return cli([*argv, "--approve", "deny"], capsys)


def test_cli_full_sweep_denied_condenses_the_repo_locally(
    tmp_path: Path,
    fakes: dict[str, Any],
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    small = fake_openai_factory("vllm", models=[LLAMA], max_model_len=1024)
    small.script.respond_with(lambda body: notes_for(body, label="local"))
    rc, out = denied_sweep(tmp_path, fakes, small, monkeypatch, capsys)
    assert rc == 0, out
    assert out["ok"] and out["condensed"] and out["full_sweep"]
    assert out["model"] == "llama-3.1-8b" and not out["escalated"]
    assert out["groups"] > 1 and out["tokens_out"] <= 120
    assert "LIBRARIAN_FULL_SWEEP" in out["reason_codes"]
    assert "LIBRARIAN_ESCALATION_DECLINED" in out["reason_codes"]
    assert any(sid.startswith("parser.py:") for sid in out["source_ids"])
    cited = {s for p in out["points"] for s in p["sources"]}
    assert cited <= set(out["source_ids"]) and cited
    assert fakes["kimi"].chat_requests == []
    kinds = [a["kind"] for a in out["audit"]]
    assert "denial" in kinds and kinds[-1] == "condense"


def test_cli_full_sweep_allowed_goes_to_kimi(
    tmp_path: Path, fakes: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo(tmp_path)
    argv = ["librarian", "summarise the project", "--repo", str(repo)]
    # a budget Kimi's notes on the demo files fit, counted by app.tokens (paths cost tokens)
    argv += ["--policy", str(fakes["policy"]), "--full-sweep", "--budget", "300"]
    rc, out = cli([*argv, "--approve", "allow"], capsys)
    assert rc == 0, out
    assert out["escalated"] and out["model"] == "kimi-k2-instruct"
    assert len(fakes["kimi"].chat_requests) == 1
    assert fakes["vllm"].chat_requests == []


def test_cli_small_selection_comes_back_unchanged(
    tmp_path: Path, fakes: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo(tmp_path)
    argv = ["librarian", "parse tokens", "--repo", str(repo), "--policy", str(fakes["policy"])]
    rc, out = cli([*argv, "--budget", "20000", "--approve", "deny"], capsys)
    assert rc == 0, out
    assert not out["condensed"] and out["calls"] == 0 and out["model"] is None
    assert out["sources"] >= 1 and "<source id=" in out["text"]
    assert fakes["vllm"].chat_requests == [] and out["audit"] == []


def test_cli_from_a_subfolder_reads_the_whole_repository(
    tmp_path: Path,
    fakes: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """From repo/tests the librarian read tests/ alone (Stage0 took it for the
    repository) and left a second .switchyard/ there."""
    repo = make_repo(tmp_path)
    monkeypatch.chdir(repo / "tests")
    argv = ["librarian", "why does parse drop a token?", "--policy", str(fakes["policy"])]
    rc, out = cli([*argv, "--budget", "20000", "--approve", "deny"], capsys)
    assert rc == 0, out
    assert '<source id="parser.py:' in out["text"]
    assert not (repo / "tests" / ".switchyard").exists()


def test_cli_human_output_shows_the_result_and_the_audit(
    tmp_path: Path, fakes: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo(tmp_path)
    argv = ["librarian", "why is the last token dropped?", "--repo", str(repo), "--full-sweep"]
    rc = main([*argv, "--policy", str(fakes["policy"]), "--budget", "100", "--approve", "deny"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "condensed" in out and "condense" in out
    assert re.search(r"\d+ map calls?,", out)
    assert re.search(r"^- .* \[.*parser\.py:\d+-\d+.*\]$", out, re.MULTILINE)  # cited


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["  "], "QUESTION must not be empty"),
        (["q", "--budget", "10"], "--budget 10: must be at least 64 tokens"),
        (["q", "--repo", "NOT-A-REPO"], "no such directory"),
    ],
)
def test_cli_usage_errors_exit_2_with_one_line(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if "NOT-A-REPO" in args:
        args = [str(tmp_path / a) if a == "NOT-A-REPO" else a for a in args]
    rc = main(["librarian", *args])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and "Traceback" not in err


def test_cli_not_a_git_repo_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["librarian", "q", "--repo", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "not a git repository" in err and "Traceback" not in err


def test_cli_bad_approve_value_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["librarian", "q", "--approve", "maybe"])
    assert exc.value.code == 2
    assert "usage error" in capsys.readouterr().err


def test_cli_with_no_model_writing_a_note_exits_1(
    tmp_path: Path,
    fakes: dict[str, Any],
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Excerpts cut to fit, written by no model, came back as ok with exit 0."""
    useless = fake_openai_factory("vllm", models=[LLAMA], max_model_len=1024)
    useless.script.respond_with(lambda body: "I cannot help with that.")
    rc, out = denied_sweep(tmp_path, fakes, useless, monkeypatch, capsys)
    assert out["condensed"] and out["models"] == []
    assert rc == 1 and out["ok"] is False


def test_cli_a_secret_typed_in_the_question_is_masked_where_it_is_echoed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The question is masked as Stage0's corpus is, before it is matched, echoed or sent."""
    key = "sk-ant-librariancanary0123456789abcdef"
    monkeypatch.setenv("ANTHROPIC_API_KEY", key)
    repo = make_repo(tmp_path)
    rc = main(["librarian", f"zzqx {key}", "--repo", str(repo), "--json"])
    out = capsys.readouterr().out
    assert rc == 1 and key not in out
    assert json.loads(out)["question"] == "zzqx [REDACTED]"
