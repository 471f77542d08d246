"""The embedded model, loaded once per process and shared (llama.cpp in-process).

llama.cpp's context is not re-entrant: each shared model has a lock, and one generation
runs on it at a time. ``llama_cpp`` is imported only here, when a model is first loaded.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.backends.base import BackendError

INSTALL_HINT = "pip install 'switchyard[local]'"


@dataclass(eq=False)
class SharedModel:
    """One loaded llama.cpp model; ``lock`` is held for the whole of a generation."""

    path: Path
    n_ctx: int
    n_threads: int
    n_threads_batch: int
    llama: Any
    load_s: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: the GGUF's own chat template, to count prompt tokens exactly as they are sent
    formatter: Any | None = None
    grammars: dict[str, Any] = field(default_factory=dict)

    def count_prompt(self, messages: list[dict[str, str]]) -> int:
        tokens = self.prompt_tokens(messages)
        if tokens is not None:
            return len(tokens)
        # A built-in chat format we cannot render: count the contents plus a few
        # tokens of role markup per message (an estimate; the window check keeps slack).
        return sum(len(self.tokens(m["content"])) + 4 for m in messages) + 3

    def prompt_tokens(self, messages: list[dict[str, str]]) -> list[int] | None:
        """The prompt's tokens exactly as the chat completion will read them, or None
        when the model's chat format cannot be rendered here."""
        if self.formatter is None:
            return None
        rendered = self.formatter(messages=messages)
        tokens: list[int] = self.llama.tokenize(
            rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True
        )
        return tokens

    def read_prompt(self, tokens: list[int], stop: threading.Event) -> bool:
        """Evaluate all of ``tokens`` but the last, ``PROMPT_CHUNK`` at a time, checking
        ``stop`` between chunks; False when stopped. Call it holding ``lock``.

        llama.cpp reads a prompt in one C call per 512 tokens that nothing interrupts: a
        6k-token prompt held the model ~80 s after its client had gone, and a server
        stopping waited for it. The chat completion that follows finds this prefix in the
        KV cache (llama-cpp-python reuses the longest common prefix) and reads only the
        last token before sampling."""
        llama = self.llama
        todo = tokens[:-1]
        cached = llama.input_ids[: llama.n_tokens].tolist() if llama.n_tokens else []
        common = 0
        for a, b in zip(cached, todo, strict=False):
            if a != b:
                break
            common += 1
        if common == 0:
            llama.reset()
        else:
            llama.n_tokens = common  # eval() drops the KV cache past it
        for start in range(common, len(todo), PROMPT_CHUNK):
            if stop.is_set():
                return False
            llama.eval(todo[start : start + PROMPT_CHUNK])
        return not stop.is_set()

    def tokens(self, text: str) -> list[int]:
        result: list[int] = self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        return result


#: prompt tokens read per llama.cpp call while a stop can still come between calls
PROMPT_CHUNK = 128

_MODELS: dict[tuple[str, int, int, int], SharedModel] = {}
_MODELS_LOCK = threading.Lock()
_LOADS = 0


def load_count() -> int:
    """How many times a model file was loaded in this process (tests: load once)."""
    return _LOADS


def loaded_models() -> list[SharedModel]:
    with _MODELS_LOCK:
        return list(_MODELS.values())


def unload_all(timeout: float = -1) -> None:
    """Free every shared model, waiting for a running generation to finish first
    (at most ``timeout`` seconds each; a model still busy then is left alone)."""
    with _MODELS_LOCK:
        models = list(_MODELS.values())
        _MODELS.clear()
    for m in models:
        if not m.lock.acquire(timeout=timeout):
            continue
        try:
            with contextlib.suppress(Exception):
                m.llama.close()
        finally:
            m.lock.release()


def _close_at_exit() -> None:
    # Llama.__del__ at interpreter teardown finds llama.cpp's bindings already gone and
    # prints a traceback; closing while the modules are intact avoids it.
    unload_all(timeout=2.0)


def load_shared(path: Path, n_ctx: int, n_threads: int, n_threads_batch: int) -> SharedModel:
    """Load (or reuse) a model. Blocking: call it from a worker thread.

    ``n_threads`` decode a token at a time; ``n_threads_batch`` read the prompt, which is
    one large batch per call (app/backends/llamacpp.py says why the two differ by
    default)."""
    global _LOADS
    key = (str(path.resolve()), n_ctx, n_threads, n_threads_batch)
    # The process-wide lock makes "load once" hold when two backends start together;
    # loading a second, different model simply waits.
    with _MODELS_LOCK:
        shared = _MODELS.get(key)
        if shared is not None:
            return shared
        try:
            import llama_cpp
        except ImportError:
            raise BackendError(
                "connect", f"llama-cpp-python is not installed ({INSTALL_HINT})"
            ) from None
        keep_stdio()
        started = time.perf_counter()
        try:
            llama = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx,  # 0 lets llama.cpp take the trained window
                n_threads=n_threads,
                n_threads_batch=n_threads_batch,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise BackendError("server_error", f"cannot load {path.name}: {exc}") from None
        shared = SharedModel(
            path=path,
            # llama.cpp may pad the context, but llama-cpp-python sizes its own buffers
            # by the number we passed: that one is the real limit.
            n_ctx=min(int(llama.n_ctx()), n_ctx) if n_ctx else int(llama.n_ctx()),
            n_threads=n_threads,
            n_threads_batch=n_threads_batch,
            llama=llama,
            load_s=time.perf_counter() - started,
            formatter=chat_formatter(llama_cpp, llama),
        )
        if not _MODELS:
            atexit.register(_close_at_exit)
        _MODELS[key] = shared
        _LOADS += 1
        return shared


class _Unsilenced:
    """What llama-cpp-python's ``suppress_stdout_stderr`` becomes: nothing."""

    def __init__(self, disable: bool = True) -> None:
        pass

    def __enter__(self) -> _Unsilenced:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def keep_stdio() -> None:
    """Keep llama-cpp-python from pointing the whole process's stdout and stderr at
    /dev/null while it loads a model quietly (``verbose=False``). Done on a worker thread,
    that swallowed whatever the rest of the process wrote meanwhile: the workbench's frames
    (Textual draws on stderr), ``run``'s "run stopped; its evidence bundle was sealed", the
    gateway's lines. llama.cpp's own messages go through its log callback, which
    ``verbose=False`` already quiets (checked: a load and a completion print nothing)."""
    import llama_cpp._internals as internals
    import llama_cpp.llama as module

    for m in (internals, module):
        if getattr(m, "suppress_stdout_stderr", None) is not None:
            m.suppress_stdout_stderr = _Unsilenced  # type: ignore[attr-defined]


def chat_formatter(llama_cpp: Any, llama: Any) -> Any | None:
    """The Jinja formatter llama-cpp-python builds from the GGUF's template, rebuilt
    here with public calls so we can count the prompt's tokens before generating."""
    template = llama.metadata.get("tokenizer.chat_template")
    if llama.chat_format != "chat_template.default" or not template:
        return None
    eos, bos = llama.token_eos(), llama.token_bos()
    text = llama.detokenize
    return llama_cpp.llama_chat_format.Jinja2ChatFormatter(
        template=template,
        eos_token=text([eos], special=True).decode("utf-8", "replace") if eos >= 0 else "",
        bos_token=text([bos], special=True).decode("utf-8", "replace") if bos >= 0 else "",
        stop_token_ids=[eos],
    )
