"""The environments Switchyard gives its subprocesses: allowlists, never the parent's."""

from __future__ import annotations

import pytest

from app.subprocess_env import (
    HUB_OFFLINE,
    PROVIDER_KEY_VARS,
    command_env,
    git_env,
    server_env,
    without_secrets,
)

CANARY = "canary-4f1d2c"


@pytest.fixture(autouse=True)
def parent_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A parent environment with a key in every provider variable and other secrets."""
    for var in PROVIDER_KEY_VARS:
        monkeypatch.setenv(var, f"{CANARY}-{var}")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CANARY)
    monkeypatch.setenv("SSH_AUTH_SOCK", "/run/user/0/ssh-agent")
    monkeypatch.setenv("HF_TOKEN", "hf_" + CANARY)
    monkeypatch.setenv("HTTPS_PROXY", "http://user:pw@proxy:3128")
    monkeypatch.setenv("VLLM_ATTENTION_BACKEND", "FLASHINFER")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setenv("GIT_DIR", "/elsewhere/.git")
    monkeypatch.setenv("GIT_INDEX_FILE", "/elsewhere/index")
    monkeypatch.setenv("GIT_SSH_COMMAND", "ssh -i key")
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Ada")
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "user.email")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "ada@example.invalid")
    monkeypatch.setenv("HOME", "/home/ada")
    for name in HUB_OFFLINE:
        monkeypatch.delenv(name, raising=False)


def leaked(env: dict[str, str]) -> list[str]:
    return sorted(k for k, v in env.items() if CANARY in v or k in PROVIDER_KEY_VARS)


def test_a_test_command_gets_the_minimal_environment() -> None:
    env = command_env("/tmp/h", "/tmp/t")
    assert set(env) <= {
        "PATH",
        "HOME",
        "TMPDIR",
        "LANG",
        "LC_ALL",
        "PYTHONDONTWRITEBYTECODE",
        "TERM",
        "NO_COLOR",
        "CI",
        "RUSTUP_HOME",
        "CARGO_HOME",
        "GOROOT",
        "GOPATH",
        "GOMODCACHE",
        "GOFLAGS",
        "JAVA_HOME",
        "VIRTUAL_ENV",
    }
    assert env["HOME"] == "/tmp/h" and env["TMPDIR"] == "/tmp/t" and env["CI"] == "true"
    assert not leaked(env) and "HF_HUB_OFFLINE" not in env


def test_additions_cannot_bring_a_key_back_nor_undo_local_only() -> None:
    env = command_env(
        "/h",
        "/t",
        local_only=True,
        extra={"OPENAI_API_KEY": CANARY, "CORP_KEY": CANARY, "HF_HUB_OFFLINE": "0", "X": "1"},
        secrets=["CORP_KEY"],
    )
    assert not leaked(env) and env["X"] == "1"
    assert {k: env[k] for k in HUB_OFFLINE} == dict(HUB_OFFLINE)


def test_a_server_gets_what_loads_a_model_and_no_key() -> None:
    online = server_env(local_only=False)
    assert online["HOME"] == "/home/ada"  # the hub cache lives there
    assert online["VLLM_ATTENTION_BACKEND"] == "FLASHINFER"
    assert online["CUDA_VISIBLE_DEVICES"] == "0"
    assert online["HF_TOKEN"] == "hf_" + CANARY  # gated weights may be downloaded
    assert online["HTTPS_PROXY"]
    assert "AWS_SECRET_ACCESS_KEY" not in online and "SSH_AUTH_SOCK" not in online
    assert "GIT_DIR" not in online
    assert not [k for k in online if k in PROVIDER_KEY_VARS]
    assert "HF_HUB_OFFLINE" not in online


def test_a_server_under_local_only_is_offline_without_the_ways_out() -> None:
    env = server_env(local_only=True)
    assert {k: env[k] for k in HUB_OFFLINE} == dict(HUB_OFFLINE)
    assert "HF_TOKEN" not in env and "HTTPS_PROXY" not in env
    assert not leaked(env)


def test_a_policy_key_name_is_removed_even_where_an_allowlist_would_pass_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a provider whose api_key_env happens to match the server allowlist (VLLM_*)
    monkeypatch.setenv("VLLM_CLOUD_KEY", CANARY)
    assert server_env(local_only=False)["VLLM_CLOUD_KEY"] == CANARY  # the allowlist alone
    assert "VLLM_CLOUD_KEY" not in server_env(local_only=False, secrets=["VLLM_CLOUD_KEY"])
    assert without_secrets({"VLLM_CLOUD_KEY": "x", "A": "1"}, ["VLLM_CLOUD_KEY"]) == {"A": "1"}


def test_git_gets_its_configuration_and_nothing_that_points_elsewhere() -> None:
    env = git_env()
    assert env["HOME"] == "/home/ada" and env["GIT_AUTHOR_NAME"] == "Ada"
    assert (env["GIT_CONFIG_COUNT"], env["GIT_CONFIG_KEY_0"]) == ("1", "user.email")
    assert env["GIT_CONFIG_VALUE_0"] == "ada@example.invalid"
    for gone in ("GIT_DIR", "GIT_INDEX_FILE", "GIT_SSH_COMMAND", "SSH_AUTH_SOCK", "HTTPS_PROXY"):
        assert gone not in env
    assert not leaked(env) and "HF_TOKEN" not in env
    assert env["LC_ALL"] == "C" and env["GIT_TERMINAL_PROMPT"] == "0"
    # git is no hub client; whatever it runs is kept off the hub, local_only or not
    assert {k: env[k] for k in HUB_OFFLINE} == dict(HUB_OFFLINE)
    assert git_env({"GIT_EDITOR": "vi", "ANTHROPIC_API_KEY": "x"})["GIT_EDITOR"] == "vi"
    assert "ANTHROPIC_API_KEY" not in git_env({"ANTHROPIC_API_KEY": "x"})
