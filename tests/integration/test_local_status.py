"""``switchyard local status`` under a policy that says ``local_only = true``: the
environment's ``SWITCHYARD_LOCAL_ONLY=false`` cannot turn it off (GR-009)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.backends.launcher import local_status
from app.config import load_settings
from app.policy import Policy
from app.resources import default_policy_path
from tests.ports import closed_port
from tests.socket_guard import SocketGuard

REPO = Path(__file__).resolve().parents[2]
REMOTE = "http://gpu-box.example:8000/v1"
CLI = (
    "import sys; from app.cli import main as m; "
    "m.COMMAND_MODULES = tuple(dict.fromkeys((*m.COMMAND_MODULES, 'app.cli.local_cmd'))); "
    "raise SystemExit(m.main(sys.argv[1:]))"
)


def with_local_only(policy: Policy, on: bool) -> Policy:
    return policy.model_copy(
        update={"privacy": policy.privacy.model_copy(update={"local_only": on})}
    )


@pytest.fixture
def env_says_off(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """SWITCHYARD_LOCAL_ONLY=false, vLLM configured on a remote host, llama.cpp's server
    on a loopback port nobody listens on."""
    env = {
        "SWITCHYARD_LOCAL_ONLY": "false",
        "SWITCHYARD_VLLM_URL": REMOTE,
        "SWITCHYARD_LLAMACPP_SERVER_URL": f"http://127.0.0.1:{closed_port()}/v1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def test_a_local_only_policy_stays_local_only_with_the_env_saying_false(
    policy: Policy, env_says_off: dict[str, str], socket_guard: SocketGuard
) -> None:
    settings = load_settings()
    assert settings.local_only is False  # the environment really does say off
    status = local_status(with_local_only(policy, True), settings, timeout=2)
    eps = {e.runtime: e for e in status.endpoints}
    assert eps["vllm"].state == "refused" and "GR-009" in eps["vllm"].detail
    assert eps["vllm"].base_url == REMOTE
    assert eps["llamacpp_server"].state == "down"  # loopback is still probed
    assert socket_guard.attempts == []  # refused by the transport, not by the guard


def test_without_the_policy_switch_the_env_false_lets_the_probe_go_out(
    policy: Policy, env_says_off: dict[str, str], socket_guard: SocketGuard
) -> None:
    """The contrast that makes the test above mean something: local_only off, the probe
    of the remote URL is attempted (and stopped here by the test's socket guard)."""
    status = local_status(with_local_only(policy, False), load_settings(), timeout=2)
    eps = {e.runtime: e for e in status.endpoints}
    assert eps["vllm"].state != "refused"
    assert [a.host for a in socket_guard.attempts][:1] == ["gpu-box.example"]


def test_local_status_cli_keeps_a_local_only_policy(
    tmp_path: Path, env_says_off: dict[str, str]
) -> None:
    text = default_policy_path().read_text(encoding="utf-8")
    assert "local_only = false" in text
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(text.replace("local_only = false", "local_only = true", 1))
    done = subprocess.run(
        [sys.executable, "-c", CLI, "local", "status", "--json", "--policy", str(policy_file)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, **env_says_off},
    )
    assert done.returncode == 0, done.stderr
    eps = {e["runtime"]: e for e in json.loads(done.stdout)["endpoints"]}
    assert eps["vllm"]["state"] == "refused" and "GR-009" in eps["vllm"]["detail"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ftp://127.0.0.1:9/v1", "not an http:// or https:// URL"),
        ("notaurl", "not an http:// or https:// URL"),
    ],
)
def test_a_probe_that_fails_says_why_in_words(
    url: str, expected: str, socket_guard: SocketGuard
) -> None:
    """The detail was the exception's class name ("UnsupportedProtocol")."""
    from app.backends.probe import probe_endpoint

    status = probe_endpoint("vllm", url, timeout=1)
    assert status.state == "error"
    assert status.detail == expected
    assert socket_guard.attempts == []
