"""``switchyard route explain --probe``: the local target is the one a request would get
now (the runtimes asked, as ``local status`` asks them), not the chain's first by name."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from app.backends.llamacpp import find_embedded_gguf
from app.cli.main import main
from app.policy import Policy
from tests.fakes.openai_server import FakeOpenAIServer
from tests.ports import closed_port
from tests.socket_guard import SocketGuard


@pytest.fixture(autouse=True)
def _no_local_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both HTTP runtimes on loopback ports nobody listens on."""
    for name in ("SWITCHYARD_VLLM_URL", "SWITCHYARD_LLAMACPP_SERVER_URL"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{closed_port()}/v1")
    monkeypatch.setenv("COLUMNS", "200")  # the human text on one line


def explain(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["route", "explain", *argv, "--json"]) == 0
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    return data


def test_unprobed_the_chain_s_first_runtime_is_named_and_says_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = explain(["--role", "architect"], capsys)
    assert (data["local"]["runtime"], data["runtimes_probed"]) == ("vllm", False)
    assert main(["route", "explain", "--role", "architect"]) == 0
    assert "--probe asks which are up" in capsys.readouterr().out


def test_probed_with_both_servers_down_the_embedded_model_serves(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert find_embedded_gguf() is not None  # the test extras ship it
    data = explain(["--role", "architect", "--probe"], capsys)
    assert data["runtimes_probed"] is True
    assert data["local"]["runtime"] == "llamacpp_inprocess"
    assert data["local"]["substituted_for"] == "qwen3-14b on vllm"
    assert data["local"]["context_window"] == 8192  # the GGUF's window, not the policy's
    skipped = [(s["runtime"], s["reason"]) for s in data["skipped"]]
    assert skipped == [("vllm", "unhealthy"), ("llamacpp_server", "unhealthy")]


@pytest.mark.parametrize("listed", [True, False], ids=["lists the model", "lists another"])
def test_probed_vllm_up_serves_and_says_when_it_lacks_the_model(
    listed: bool,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    capsys: pytest.CaptureFixture[str],
    policy: Policy,
) -> None:
    """Up is up: the router picks it either way, and falls back when the call is refused;
    a runtime that does not list the model is named with a warning."""
    served = policy.models["qwen3-14b"].served_name
    vllm = fake_openai_factory("vllm", models=[served if listed else "some/other-model"])
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", vllm.base_url)
    data = explain(["--role", "architect", "--probe"], capsys)
    assert (data["local"]["runtime"], data["local"]["substituted_for"]) == ("vllm", None)
    assert data["skipped"] == []
    warned = [n for n in data["notes"] if f"does not list {served}:" in n]
    assert len(warned) == (0 if listed else 1) and len(data["notes"]) == len(warned)


def test_probed_under_local_only_a_remote_runtime_is_refused_unasked(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    socket_guard: SocketGuard,
) -> None:
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", "http://gpu-box.example:8000/v1")
    data = explain(["--role", "architect", "--probe", "--local-only"], capsys)
    assert data["local_only"] is True
    assert data["local"]["runtime"] == "llamacpp_inprocess"
    assert socket_guard.attempts == []  # the guarded client refused it: nothing left


@pytest.mark.parametrize(
    ("signal", "message"),
    [
        ("confidence=abc", "--signal confidence=abc: expected a number"),
        ("failed_loops=2.5", "--signal failed_loops=2.5: expected a whole number"),
        ("high_risk=maybe", "--signal high_risk=maybe: expected true or false"),
    ],
)
def test_a_signal_s_bad_value_is_a_usage_error_naming_it(
    signal: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["route", "explain", "--role", "implementer", "--signal", signal]) == 2
    assert message in capsys.readouterr().err
