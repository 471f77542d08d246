"""R6 / R1: every subprocess Switchyard starts gets an allowlisted environment.

* ``switchyard local serve`` under local_only refuses a model that is neither a local
  path nor in the Hugging Face cache: exit 2, a message saying how to fetch it first,
  and nothing started (no supervisor, no process). The same model once cached is served,
  offline.
* A launched server's environment, dumped by a stand-in server that ``local serve``
  really starts, holds no provider key (nor a variable the policy's providers name), and
  under local_only the hub-offline variables and no hub token.
* git's environment, dumped by a git alias run through the one git runner, holds no
  provider key and nothing that points git elsewhere.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from app.backends import launcher, supervisor
from app.resources import default_policy_path
from app.subprocess_env import HUB_OFFLINE
from app.workspace.git import run_git
from tests.reliability.kit import CLOUD_KEY_VARS, make_repo, no_traceback, run_cli

#: the implementer's model on vLLM (a Hugging Face id)
HUB_ID = "Qwen/Qwen2.5-Coder-32B-Instruct-AWQ"
#: a provider key variable the policy names, shaped to pass the server allowlist (VLLM_*)
POLICY_KEY_VAR = "VLLM_MOONSHOT_KEY"

#: writes its environment to argv[1] as JSON, then exits 3 (the server "died")
DUMP_ENV = (
    "import json, os, sys; open(sys.argv[1], 'w').write(json.dumps(dict(os.environ))); sys.exit(3)"
)


@pytest.fixture
def canaries(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    tag = uuid.uuid4().hex
    keys = {var: f"canary-{var.lower()}-{tag}" for var in (*CLOUD_KEY_VARS, POLICY_KEY_VAR)}
    keys["HF_TOKEN"] = f"hf_canary{tag}"
    for var, value in keys.items():
        monkeypatch.setenv(var, value)
    return keys


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    """The shipped policy with Moonshot's key read from :data:`POLICY_KEY_VAR`."""
    text = default_policy_path().read_text(encoding="utf-8")
    old = 'api_key_env = "MOONSHOT_API_KEY"'
    assert old in text
    path = tmp_path / "policy.toml"
    path.write_text(text.replace(old, f'api_key_env = "{POLICY_KEY_VAR}"'), encoding="utf-8")
    return path


@pytest.fixture
def gpu_box(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """vLLM and a GPU as far as the launcher can tell; an empty hub cache; and spies on
    everything that would start a process."""
    monkeypatch.setattr(launcher, "vllm_available", lambda: True)
    monkeypatch.setattr(launcher, "gpu_present", lambda **_: True)
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    started: list[dict[str, Any]] = []

    def fake_supervise(argv: list[str], base_url: str, **kw: Any) -> int:
        started.append({"argv": argv, "env": kw.get("env")})
        return 0

    def no_popen(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a process was started: {args[:1]}")

    monkeypatch.setattr(supervisor, "supervise", fake_supervise)
    monkeypatch.setattr(supervisor.subprocess, "Popen", no_popen)
    return {"cache": cache, "started": started}


def serve_vllm(capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    rc, out, err = run_cli(
        ["local", "serve", "--role", "implementer", "--runtime", "vllm", "--port", "0", *extra],
        capsys,
    )
    no_traceback(out, err)
    return rc, out, err


def cache_model(cache: Path, repo_id: str) -> None:
    """What ``huggingface-cli download`` leaves: refs/main naming a snapshot."""
    folder = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")


@pytest.mark.parametrize("dry_run", [False, True], ids=["serve", "dry-run"])
def test_local_serve_under_local_only_refuses_a_hub_id_and_starts_nothing(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    gpu_box: dict[str, Any],
    dry_run: bool,
) -> None:
    monkeypatch.setenv("SWITCHYARD_LOCAL_ONLY", "true")
    rc, out, err = serve_vllm(capsys, *(["--dry-run"] if dry_run else []))
    assert rc == 2, (out, err)
    assert f"huggingface-cli download {HUB_ID}" in err
    assert "local_only" in err and str(gpu_box["cache"]) in err
    assert gpu_box["started"] == [] and "starting" not in out


def test_local_serve_under_local_only_serves_a_cached_id_offline(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    gpu_box: dict[str, Any],
    canaries: dict[str, str],
    policy: Path,
) -> None:
    monkeypatch.setenv("SWITCHYARD_LOCAL_ONLY", "true")
    cache_model(gpu_box["cache"], HUB_ID)
    rc, out, err = serve_vllm(capsys, "--policy", str(policy))
    assert rc == 0, (out, err)
    [launch] = gpu_box["started"]
    assert launch["argv"][launch["argv"].index("serve") + 1] == HUB_ID
    env = launch["env"]
    assert {k: env.get(k) for k in HUB_OFFLINE} == dict(HUB_OFFLINE)
    assert not [k for k, v in env.items() if v in canaries.values() or k in canaries]


def test_without_local_only_a_hub_id_is_served_as_before(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], gpu_box: dict[str, Any]
) -> None:
    for name in HUB_OFFLINE:  # tests/conftest.py sets two of them for every test
        monkeypatch.delenv(name, raising=False)
    rc, out, err = serve_vllm(capsys)
    assert rc == 0, (out, err)
    assert len(gpu_box["started"]) == 1
    assert "HF_HUB_OFFLINE" not in gpu_box["started"][0]["env"]


@pytest.mark.parametrize("local_only", [False, True], ids=["default", "local_only"])
def test_a_launched_server_never_sees_a_provider_key(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    canaries: dict[str, str],
    policy: Path,
    local_only: bool,
) -> None:
    if local_only:
        monkeypatch.setenv("SWITCHYARD_LOCAL_ONLY", "true")
    dump = tmp_path / "server-env.json"
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF, not really a model")  # (the magic: the command is a stand-in)
    # the plan is real; the command it plans is a stand-in that dumps its environment
    monkeypatch.setattr(
        launcher, "_llamacpp_argv", lambda *a: [sys.executable, "-c", DUMP_ENV, str(dump)]
    )
    monkeypatch.setattr(launcher, "check_runnable", lambda spec: None)
    rc, out, err = run_cli(
        [
            *("local", "serve", "--role", "tutor", "--runtime", "llamacpp_server"),
            *("--gguf", str(gguf), "--port", "0", "--timeout", "30", "--policy", str(policy)),
        ],
        capsys,
    )
    no_traceback(out, err)
    assert rc == 1 and "exited with code 3" in out, (out, err)
    env = json.loads(dump.read_text())
    assert env["PATH"] and env["HOME"]  # it is the server's environment
    keys = {k: v for k, v in canaries.items() if k != "HF_TOKEN"}
    assert not [k for k, v in env.items() if v in keys.values()], sorted(env)
    assert POLICY_KEY_VAR not in env and not set(CLOUD_KEY_VARS) & set(env)
    if local_only:
        assert {k: env.get(k) for k in HUB_OFFLINE} == dict(HUB_OFFLINE)
        assert "HF_TOKEN" not in env  # no credential for a hub it must not reach
    else:
        assert env["HF_TOKEN"] == canaries["HF_TOKEN"]  # gated weights may be downloaded


def test_git_never_sees_a_provider_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, canaries: dict[str, str]
) -> None:
    repo = make_repo(tmp_path)
    monkeypatch.setenv("GIT_INDEX_FILE", str(tmp_path / "another-index"))
    monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "agent.sock"))
    # a shell alias runs with the environment git was given (hooks are off)
    proc = run_git(repo, "showenv", config=("alias.showenv=!env -0",))
    env = dict(item.split("=", 1) for item in proc.stdout.split("\0") if "=" in item)
    assert env["HOME"] and env["PATH"]  # it is git's environment
    assert not [k for k, v in env.items() if v in canaries.values()], sorted(env)
    assert "GIT_INDEX_FILE" not in env and "SSH_AUTH_SOCK" not in env
    assert {k: env.get(k) for k in HUB_OFFLINE} == dict(HUB_OFFLINE)
    # control: the same alias run by a plain subprocess does see them
    plain = subprocess.run(
        ["git", "-c", "alias.showenv=!env -0", "showenv"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    assert canaries["OPENAI_API_KEY"] in plain.stdout
