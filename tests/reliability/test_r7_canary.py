"""R7: a canary API key never reaches the disk or the terminal.

Every cloud key variable holds a unique canary (two in shapes no pattern knows, so only
the environment net can catch them; two shaped like real keys). A full run escalates to
three cloud fakes: the Architect's call to OpenAI is refused with a 401 whose message
echoes the key back (as real providers do), DeepSeek serves the plan and the stuck
Implementer's fix, and the High-Risk Judge lands on Anthropic (OpenAI is in its auth
cooldown). Then the run is merged and the audit and evidence are shown and exported.

Afterwards every byte under the test's directory is searched: the data dir (audit,
ledger and memory databases with their WAL files, logs), the config dirs, the repository
with its ``.switchyard`` evidence bundles and its ``.git``; so are the captured stdout and
stderr of every command and a DEBUG log of every logger. No canary may appear anywhere.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.policy import policy_pointing
from tests.fakes.server import Fault, Reply, Request
from tests.fakes.spec import seed_spec
from tests.reliability.kit import (
    FAST_TEST,
    LOCAL_MODELS,
    TASK,
    closed_port,
    diff_of,
    fix_diff,
    impl_json,
    make_repo,
    no_traceback,
    plan_json,
    role_of,
    run_cli,
    run_json,
    verdict_json,
)

# a spec the §8 linter accepts (run --spec lints first): High-Risk, the Judge exercised
SPEC = seed_spec(hr="YES")


class EchoingOpenAI(FakeOpenAIServer):
    """OpenAI whose 401 says which key it got, in full, like a careless upstream."""

    def error_reply(
        self,
        status: int,
        request: Request | None,
        fault: Fault | None,
        *,
        message: str | None = None,
    ) -> Reply:
        if status == 401 and request is not None:
            key = request.bearer() or ""
            message = f"Incorrect API key provided: {key}. You can find your API key at ..."
        return super().error_reply(status, request, fault, message=message)


@pytest.fixture
def canaries(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    tag = uuid.uuid4().hex
    keys = {
        "OPENAI_API_KEY": f"canary-openai-{tag}",
        "DEEPSEEK_API_KEY": f"sk-{tag}deepseekcanary",
        "ANTHROPIC_API_KEY": f"sk-ant-api03-{tag}-canary",
        "MOONSHOT_API_KEY": f"canary_moonshot_{tag}",
    }
    for var, value in keys.items():
        monkeypatch.setenv(var, value)
    return keys


@pytest.fixture
def debug_log(tmp_path: Path) -> Iterator[Path]:
    """Every logger at DEBUG into a file under the data dir (the strictest 'logs')."""
    path = tmp_path / "data" / "logs" / "debug.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()


@pytest.fixture
def world(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    canaries: dict[str, str],
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    fake_anthropic_factory: Callable[..., FakeAnthropicServer],
) -> Iterator[dict[str, Any]]:
    repo = make_repo(tmp_path)
    fix = fix_diff(repo)
    wrong = diff_of(repo, '"""Split ``text``', '"""Split the ``text``')  # applies, stays red
    local_impl = [impl_json(wrong, 0.8), impl_json(wrong, 0.8)]

    def local(body: dict[str, Any]) -> str:
        role = role_of(body)
        if role == "interrogate":
            return "Q: is it the loop bound? A: yes."
        if role == "architect":
            return plan_json(0.6)
        if role == "implementer":
            return local_impl.pop(0) if local_impl else impl_json(wrong, 0.8)
        if role == "judge":
            return verdict_json()
        return '{"patterns": []}'

    def deepseek_reply(body: dict[str, Any]) -> str:
        return plan_json(0.9) if role_of(body) == "architect" else impl_json(fix, 0.95)

    vllm = fake_openai_factory("vllm", models=LOCAL_MODELS)
    vllm.script.respond_with(local)
    openai = EchoingOpenAI("openai").start()
    openai.script.respond_with(lambda body: plan_json(0.9))
    deepseek = fake_openai_factory("deepseek")
    deepseek.script.respond_with(deepseek_reply)
    anthropic = fake_anthropic_factory()
    anthropic.script.respond_with(lambda body: verdict_json())
    policy = policy_pointing(
        tmp_path,
        openai=openai.base_url,
        deepseek=deepseek.base_url,
        anthropic=anthropic.base_url,
    )
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", vllm.base_url)
    monkeypatch.setenv("SWITCHYARD_LLAMACPP_SERVER_URL", f"http://127.0.0.1:{closed_port()}/v1")
    monkeypatch.setenv("COLUMNS", "200")
    spec = tmp_path / "spec.md"
    spec.write_text(SPEC)
    try:
        yield {
            "repo": repo,
            "policy": policy,
            "spec": spec,
            "openai": openai,
            "deepseek": deepseek,
            "anthropic": anthropic,
        }
    finally:
        openai.stop()


def test_canary_keys_never_reach_disk_logs_or_output(
    tmp_path: Path,
    world: dict[str, Any],
    canaries: dict[str, str],
    debug_log: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    outputs: list[str] = []
    world["openai"].fail_next("401", path="/v1/chat/completions")
    policy = ["--policy", str(world["policy"])]
    rc, out, err = run_json(
        [
            "run",
            TASK,
            "--repo",
            str(world["repo"]),
            "--spec",
            str(world["spec"]),
            "--approve",
            "allow",
            "--test-command",
            FAST_TEST,
            *policy,
        ],
        capsys,
    )
    outputs += [json.dumps(out), err]
    no_traceback(err)
    assert rc == 0 and out["outcome"] == "merge_ready", (out, err[-3000:])
    run_id, repo = out["run_id"], str(world["repo"])

    # the run did go to every cloud fake, with the keys, and one of them echoed its key
    assert world["openai"].chat_requests and world["deepseek"].chat_requests
    assert world["anthropic"].requests_to("/v1/messages")
    assert [r.fault for r in world["openai"].requests_to("/v1/chat/completions")][:1] == ["401"]

    for argv in (
        ["merge", run_id, "--repo", repo, "--yes"],
        ["audit", "tail", "-n", "500"],
        ["audit", "tail", "-n", "500", "--json"],
        ["audit", "export"],
        ["audit", "export", "-o", str(tmp_path / "data" / "export.jsonl")],
        ["audit", "verify"],
        ["evidence", "show", run_id, "--repo", repo],
        ["evidence", "verify", run_id, "--repo", repo],
        ["budget", *policy],
        ["budget", "--json", *policy],
    ):
        code, stdout, stderr = run_cli(argv, capsys)
        no_traceback(stderr)
        outputs += [stdout, stderr]
        assert code in (0, 1, 2), (argv, code, stderr)

    # the key really was echoed into an error the product handled
    skipped = [line for line in outputs if "Incorrect API key provided" in line]
    assert skipped, "the 401 text should be visible (scrubbed) in the audit output"

    leaks = _leaks(tmp_path, outputs, canaries)
    assert leaks == [], f"canary keys found: {leaks}"
    assert debug_log.stat().st_size > 0


def _leaks(root: Path, outputs: list[str], canaries: dict[str, str]) -> list[str]:
    needles = {var: value.encode() for var, value in canaries.items()}
    found: list[str] = []
    files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    assert len(files) > 20, files
    for path in files:
        data = path.read_bytes()
        found += [f"{path.relative_to(root)} ({var})" for var, n in needles.items() if n in data]
    for i, text in enumerate(outputs):
        data = text.encode("utf-8", "replace")
        found += [f"output #{i} ({var})" for var, n in needles.items() if n in data]
    return found
