"""Pytest fixtures for the protocol fakes (register with ``pytest_plugins``).

Every server is started on 127.0.0.1 with a free port and stopped after the test. The
HTTP clients come from the product's guarded factory with local_only ON (the fakes are
loopback, so it never refuses them) and a 2 s timeout, so a fault can never hang a test.

* ``fake_openai_factory(flavor="vllm", **kwargs)`` → a started :class:`FakeOpenAIServer`
* ``fake_vllm``, ``fake_llamacpp``, ``fake_openai``, ``fake_deepseek``, ``fake_moonshot``
* ``fake_anthropic_factory(**kwargs)`` → a started :class:`FakeAnthropicServer`;
  ``fake_anthropic``
* ``loopback_client`` (httpx, for the openai SDK) and ``loopback_client2`` (httpx2, for
  the anthropic SDK)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import httpx2
import pytest

from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.openai_server import FakeOpenAIServer, Flavor

__all__ = [
    "TEST_TIMEOUT_S",
    "fake_anthropic",
    "fake_anthropic_factory",
    "fake_deepseek",
    "fake_llamacpp",
    "fake_moonshot",
    "fake_openai",
    "fake_openai_factory",
    "fake_vllm",
    "loopback_client",
    "loopback_client2",
]

#: the HTTP timeout of the fixture clients; fault delays in tests exceed it on purpose
TEST_TIMEOUT_S = 2.0

OpenAIFactory = Callable[..., FakeOpenAIServer]
AnthropicFactory = Callable[..., FakeAnthropicServer]


@pytest.fixture
def fake_openai_factory() -> Iterator[OpenAIFactory]:
    servers: list[FakeOpenAIServer] = []

    def make(flavor: Flavor = "vllm", **kwargs: Any) -> FakeOpenAIServer:
        server = FakeOpenAIServer(flavor, **kwargs).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def fake_vllm(fake_openai_factory: OpenAIFactory) -> FakeOpenAIServer:
    return fake_openai_factory("vllm")


@pytest.fixture
def fake_llamacpp(fake_openai_factory: OpenAIFactory) -> FakeOpenAIServer:
    return fake_openai_factory("llamacpp")


@pytest.fixture
def fake_openai(fake_openai_factory: OpenAIFactory) -> FakeOpenAIServer:
    return fake_openai_factory("openai")


@pytest.fixture
def fake_deepseek(fake_openai_factory: OpenAIFactory) -> FakeOpenAIServer:
    return fake_openai_factory("deepseek")


@pytest.fixture
def fake_moonshot(fake_openai_factory: OpenAIFactory) -> FakeOpenAIServer:
    return fake_openai_factory("moonshot")


@pytest.fixture
def fake_anthropic_factory() -> Iterator[AnthropicFactory]:
    servers: list[FakeAnthropicServer] = []

    def make(**kwargs: Any) -> FakeAnthropicServer:
        server = FakeAnthropicServer(**kwargs).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def fake_anthropic(fake_anthropic_factory: AnthropicFactory) -> FakeAnthropicServer:
    return fake_anthropic_factory()


@pytest.fixture
async def loopback_client() -> AsyncIterator[httpx.AsyncClient]:
    from app.backends.http import make_async_client

    client = make_async_client(local_only=True, timeout=TEST_TIMEOUT_S)
    yield client
    await client.aclose()


@pytest.fixture
async def loopback_client2() -> AsyncIterator[httpx2.AsyncClient]:
    from app.backends.http import make_async_client_httpx2

    client = make_async_client_httpx2(local_only=True, timeout=TEST_TIMEOUT_S)
    yield client
    await client.aclose()
