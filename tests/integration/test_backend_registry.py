"""The backend registry never stalls the event loop on an import, and stays whole when a
backend is made on a worker thread while the loop asks for others."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from app.backends.base import Backend, BackendError
from app.backends.registry import BackendRegistry
from app.policy.schema import Policy
from tests.ports import closed_port

ROOT = Path(__file__).resolve().parents[2]


async def test_a_probe_makes_the_http_client_off_the_loop(
    policy: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client's first use imports the HTTP stack and makes a TLS context."""
    import app.backends.http as http

    made_on: list[int] = []
    real = http.make_async_client_httpx2

    def recording(**kw: Any) -> Any:
        made_on.append(threading.get_ident())
        return real(**kw)

    monkeypatch.setattr(http, "make_async_client_httpx2", recording)
    url = f"http://127.0.0.1:{closed_port()}/v1"
    registry = BackendRegistry(policy, local_only=False, runtime_urls={"vllm": url})
    try:
        assert await registry.runtime_up("vllm") is False  # refused: down
        assert len(made_on) == 1 and made_on[0] != threading.get_ident()
    finally:
        await registry.aclose()


async def test_the_in_process_probe_looks_for_the_model_off_the_loop(
    policy: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Importing the backend module and searching the installed packages for the GGUF."""
    import app.backends.llamacpp as llamacpp

    looked_on: list[int] = []

    def no_model() -> Path | None:
        looked_on.append(threading.get_ident())
        return None

    monkeypatch.setattr(llamacpp, "find_embedded_gguf", no_model)
    registry = BackendRegistry(policy, local_only=False)
    assert await registry.runtime_up("llamacpp_inprocess") is False
    assert len(looked_on) == 1 and looked_on[0] != threading.get_ident()


class HeldMaking:
    """``_make`` that holds on until told to go, counting who got in."""

    def __init__(self, registry: BackendRegistry) -> None:
        self.real = registry._make
        self.entered = threading.Semaphore(0)
        self.go = threading.Event()
        self.calls = 0

    def __call__(self, model_id: str, runtime: str) -> Backend:
        self.calls += 1
        self.entered.release()
        self.go.wait(timeout=10)
        return self.real(model_id, runtime)


def making_in_a_worker(
    registry: BackendRegistry, make: Any = None
) -> tuple[HeldMaking, threading.Thread]:
    """A worker thread inside ``_make`` for gpt-5.1-high, held there until ``go`` is set
    (``make``: what it then makes, the registry's own by default)."""
    held = HeldMaking(registry)
    if make is not None:
        held.real = make
    registry._make = held  # type: ignore[method-assign]
    worker = threading.Thread(target=registry.backend, args=("gpt-5.1-high", "cloud"))
    worker.start()
    assert held.entered.acquire(timeout=10)
    return held, worker


async def test_two_threads_asking_for_one_pair_get_one_backend(policy: Policy) -> None:
    registry = BackendRegistry(policy, local_only=False)
    held = HeldMaking(registry)
    registry._make = held  # type: ignore[method-assign]
    got: list[Backend] = []

    def ask() -> None:
        got.append(registry.backend("gpt-5.1-high", "cloud"))

    first, second = threading.Thread(target=ask), threading.Thread(target=ask)
    first.start()
    assert held.entered.acquire(timeout=10)  # the first is making it
    second.start()
    # the second waits for the first to finish rather than making its own (without the
    # lock it is inside _make well within this bound; with it, it never gets there)
    assert not held.entered.acquire(timeout=0.5)
    held.go.set()
    first.join()
    second.join()
    assert held.calls == 1
    assert len(got) == 2 and got[0] is got[1]
    await registry.aclose()


async def test_a_made_backend_is_read_while_another_is_being_made(policy: Policy) -> None:
    """The loop asking for a made pair never waits on a worker making another one."""
    registry = BackendRegistry(policy, local_only=False)
    made = registry.backend("deepseek-chat", "cloud")
    held, worker = making_in_a_worker(registry)
    try:
        assert registry.backend("deepseek-chat", "cloud") is made
        assert not held.go.is_set()  # answered while the other was still being made
    finally:
        held.go.set()
        worker.join()
    await registry.aclose()


class Closing:
    """A backend that records its closing."""

    def __init__(self, model_id: str) -> None:
        self.model_id, self.runtime, self.closed = model_id, "cloud", 0

    async def aclose(self) -> None:
        self.closed += 1


async def test_a_backend_being_made_when_the_registry_closes_is_closed_too(
    policy: Policy,
) -> None:
    """Shutdown while a worker thread makes a backend (an SDK import): aclose waits for
    it, the loop serving on, and closes it; nothing is made afterwards."""
    registry = BackendRegistry(policy, local_only=False)
    made: list[Closing] = []

    def make(model_id: str, runtime: str) -> Any:
        made.append(Closing(model_id))
        return made[-1]

    held, worker = making_in_a_worker(registry, make)
    closing = asyncio.create_task(registry.aclose())
    await asyncio.sleep(0.2)
    assert not closing.done()  # waiting for the backend being made, and the loop runs
    held.go.set()
    await asyncio.wait_for(closing, 10)
    worker.join()
    assert [b.closed for b in made] == [1]
    with pytest.raises(BackendError) as refused:
        registry.backend("deepseek-chat", "cloud")
    assert refused.value.kind == "cancelled"  # never retried: the router's step fails
    assert "shutting down" in str(refused.value)
    assert len(made) == 1
    # a probe after it is a runtime down, not an error (the HTTP client is not made again)
    url = f"http://127.0.0.1:{closed_port()}/v1"
    closed = BackendRegistry(policy, local_only=False, runtime_urls={"vllm": url})
    await closed.aclose()
    assert await closed.runtime_up("vllm") is False
    assert closed._http is None


async def test_a_made_backend_is_not_handed_out_after_close(policy: Policy) -> None:
    registry = BackendRegistry(policy, local_only=False)
    registry.backend("deepseek-chat", "cloud")
    await registry.aclose()
    with pytest.raises(BackendError) as refused:
        registry.backend("deepseek-chat", "cloud")  # (made before: closed now)
    assert refused.value.kind == "cancelled"


async def test_the_client_being_made_when_the_registry_closes_is_closed_too(
    policy: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.backends.http as http

    entered, go = threading.Event(), threading.Event()
    made: list[Any] = []
    real = http.make_async_client_httpx2

    def held(**kw: Any) -> Any:
        entered.set()
        go.wait(timeout=10)
        made.append(real(**kw))
        return made[-1]

    monkeypatch.setattr(http, "make_async_client_httpx2", held)
    registry = BackendRegistry(policy, local_only=False)
    worker = threading.Thread(target=lambda: registry._client)
    worker.start()
    assert entered.wait(timeout=10)
    closing = asyncio.create_task(registry.aclose())
    await asyncio.sleep(0.2)
    assert not closing.done()  # waiting for the client being made
    go.set()
    await asyncio.wait_for(closing, 10)
    worker.join()
    assert len(made) == 1 and made[0].is_closed
    registry._http = None  # as if it had never been made: it is not made now
    with pytest.raises(BackendError, match="shutting down"):
        _ = registry._client
    assert len(made) == 1


async def test_closing_waits_for_a_stuck_maker_only_so_long(
    policy: Policy, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import app.backends.registry as registry_module

    monkeypatch.setattr(registry_module, "CLOSE_WAIT_S", 0.2)
    registry = BackendRegistry(policy, local_only=False)

    def closing(model_id: str, runtime: str) -> Any:
        return Closing(model_id)

    registry._make = closing  # type: ignore[method-assign]
    made = registry.backend("deepseek-chat", "cloud")
    assert isinstance(made, Closing)
    held, worker = making_in_a_worker(registry)
    try:
        with caplog.at_level("WARNING", logger="app.backends.registry"):
            await asyncio.wait_for(registry.aclose(), 10)  # (a stuck import: gives up)
        assert "left unclosed" in caplog.text
        assert made.closed == 1  # what was made is closed all the same
    finally:
        held.go.set()
        worker.join()


# A fresh interpreter, as `switchyard serve` starts: the anthropic SDK is not imported
# yet. Its import is made as slow as the loop lets it be: it is over once the loop has
# taken three turns, or after five seconds when it takes none (the import is then on the
# loop's own thread, and the gateway's other clients wait with it).
FIRST_ESCALATION = """
    import asyncio, importlib.abc, json, sys, threading, time

    from app.backends.base import BackendError, ChatRequest, Message
    from app.backends.registry import BackendRegistry
    from app.policy import load_policy
    from app.router.service import Router
    from app.router.types import Decision

    preloaded = "anthropic" in sys.modules
    turns = 0
    seen = {}

    class SlowSdk(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "anthropic" and not seen:
                before, give_up = turns, time.monotonic() + 5
                while turns < before + 3 and time.monotonic() < give_up:
                    time.sleep(0.001)
                seen["turns"] = turns - before
                seen["on_loop"] = threading.get_ident() == threading.main_thread().ident
            return None

    sys.meta_path.insert(0, SlowSdk())

    async def others(stop):
        global turns
        while not stop.is_set():
            turns += 1
            await asyncio.sleep(0)

    async def main():
        policy = load_policy().policy
        registry = BackendRegistry(policy, local_only=False)
        router = Router(policy, session="s", audit=None, ledger=None, approvals=None,
                        backends=registry)
        d = Decision(role="architect", action="escalate", policy_version=policy.version,
                     target="claude-sonnet-4.6", provider="anthropic", runtime="cloud")
        request = ChatRequest(messages=[Message(role="user", content="hi")], max_tokens=8)
        stop = asyncio.Event()
        ticking = asyncio.create_task(others(stop))
        try:
            await router.call(d, request, None, None)
        except BackendError as exc:  # no key: nothing is sent
            error = exc.kind
        stop.set()
        await ticking
        await registry.aclose()
        print(json.dumps({"preloaded": preloaded, "error": error, **seen}))

    asyncio.run(main())
"""


def test_the_first_escalation_to_anthropic_imports_its_sdk_off_the_loop(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FIRST_ESCALATION)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    said = json.loads(out.stdout.splitlines()[-1])
    assert said["preloaded"] is False  # the router and the registry do not import it
    assert said["error"] == "no_key"
    assert said["on_loop"] is False
    assert said["turns"] >= 3  # the loop served others while the SDK was imported


class PlainEnviron(dict[str, str]):
    """An environment mapping without os.environ's inner dict of bytes."""


@pytest.mark.parametrize("environ", ["process", "plain"])
async def test_a_key_set_or_unset_later_is_seen_on_the_next_cloud_step(
    policy: Policy, monkeypatch: pytest.MonkeyPatch, environ: str
) -> None:
    """unavailable() is worked out again when a key variable changes (it is remembered
    between cloud steps otherwise): read from the environment's own dict of bytes, or
    through the mapping when ``os.environ`` has none."""
    if environ == "plain":
        monkeypatch.setattr(os, "environ", PlainEnviron(os.environ))
    names = sorted({p.api_key_env for p in policy.providers.values() if p.api_key_env})
    for name in names:
        monkeypatch.delenv(name, raising=False)
    registry = BackendRegistry(policy, local_only=False)
    cloud = {m for m, model in policy.models.items() if model.provider != "local"}
    try:
        assert set(registry.unavailable()) == cloud
        missing = registry.unavailable()
        missing.clear()  # a caller's copy: the next answer is whole
        assert set(registry.unavailable()) == cloud
        key = policy.providers["openai"].api_key_env
        assert key is not None
        monkeypatch.setenv(key, "sk-test-0123456789abcdef")
        openai = {m for m in cloud if policy.models[m].provider == "openai"}
        assert openai and set(registry.unavailable()) == cloud - openai
        monkeypatch.setenv(key, "")  # set but empty: no key
        assert set(registry.unavailable()) == cloud
        for name in names:
            monkeypatch.setenv(name, "sk-test-0123456789abcdef")
        assert registry.unavailable() == {}
    finally:
        await registry.aclose()


@pytest.mark.parametrize(
    ("listed", "qwen_not_served", "smollm_not_served"),
    [
        # the launcher's server for the embedded model: every other local model is not
        # served there (the server answers any request with SmolLM2)
        (["smollm2-135m"], True, False),
        # a server started by hand lists its GGUF's file name: not judged
        (["qwen2.5-coder-7b-instruct-q4_k_m.gguf"], False, False),
        # the role's own model, by its id or its served name
        (["qwen2.5-coder-7b"], False, True),
        (["Qwen/Qwen2.5-Coder-7B-Instruct"], False, True),
        ([], False, False),  # (lists nothing: not judged)
    ],
)
async def test_a_server_listing_another_catalog_model_does_not_serve_the_roles(
    policy: Policy,
    fake_openai_factory: Any,
    listed: list[str],
    qwen_not_served: bool,
    smollm_not_served: bool,
) -> None:
    """A llama.cpp server answers every request with the one model it loaded: the router
    recorded qwen2.5-coder-32b for replies SmolLM2 wrote on a server ``local serve`` made
    (an audit). The probe's listing says which catalog models a runtime does not serve."""
    server = fake_openai_factory("llamacpp", models=listed)
    registry = BackendRegistry(
        policy, local_only=True, runtime_urls={"llamacpp_server": server.base_url}
    )
    try:
        assert await registry.runtime_up("llamacpp_server") is True
        keys = registry.not_served()
        assert ("runtime:llamacpp_server:qwen2.5-coder-7b" in keys) is qwen_not_served
        assert ("runtime:llamacpp_server:smollm2-135m" in keys) is smollm_not_served
        assert all(value is False for value in keys.values())
    finally:
        await registry.aclose()
