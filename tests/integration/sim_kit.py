"""Loopback fakes for tests that write a real audit log through the router and replay it
(``policy simulate``): vLLM, the llama.cpp server, OpenAI, DeepSeek, Moonshot and
Anthropic, and the shipped policy pointed at them, with every cloud key set but
Anthropic's (its steps are skipped as unreachable, audited)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.policy import policy_pointing
from tests.reliability.kit import LOCAL_MODELS


@dataclass
class SimFakes:
    vllm: FakeOpenAIServer
    llamacpp: FakeOpenAIServer
    clouds: dict[str, FakeOpenAIServer]
    #: the shipped policy's text, pointed at the fakes
    policy_text: str


@pytest.fixture
def sim_fakes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    fake_anthropic_factory: Callable[..., FakeAnthropicServer],
) -> SimFakes:
    vllm = fake_openai_factory("vllm", models=LOCAL_MODELS, default_reply="ok " * 50)
    llamacpp = fake_openai_factory("llamacpp", models=LOCAL_MODELS, default_reply="ok " * 40)
    clouds = {
        name: fake_openai_factory(name, default_reply="word " * 300)
        for name in ("openai", "deepseek", "moonshot")
    }
    anthropic = fake_anthropic_factory(default_reply="prose " * 200)
    urls = {n: s.base_url for n, s in clouds.items()}
    text = policy_pointing(tmp_path, anthropic=anthropic.base_url, **urls).read_text()
    for name in ("OPENAI", "DEEPSEEK", "MOONSHOT"):
        monkeypatch.setenv(f"{name}_API_KEY", f"sk-sim-{name.lower()}-0000000000000000")
    return SimFakes(vllm, llamacpp, clouds, text)
