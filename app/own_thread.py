"""Run OpenMP work on a thread of its own (a leaf).

llama.cpp's CPU backend and torch are both built with OpenMP, and libgomp keeps a team
of worker threads for every thread that has run a parallel region, for as long as that
thread lives. A team left on a long-lived thread (the main thread, or one of asyncio's
executor threads after ``asyncio.to_thread``) slows every later parallel region of the
process on any other thread. Measured on 2 cores at 2 llama.cpp threads
(``bench/decode_bench.py``, its "after an embedding" rows): one MiniLM embedding with
torch's encode on the executor thread took the in-process backend's decode to 74
tokens/s for as long as that thread lived, against 117 when the encode ran on a thread
of its own; a raw llama.cpp decode left on the main thread took it to 67 against 124
alone (28 with OMP_WAIT_POLICY=ACTIVE, whose idle workers never stop spinning), which
is why the benches run their raw llama-cpp-python and sentence-transformers sides
through :func:`on_own_thread` too (both sides then decode alike: 131 and 123).
Decoding at 1 thread (the default on 2 cores) has no team and loses nothing. Reading a
prompt on 2 threads (``batch_threads()``) after such an embedding was not slowed either
(256 against 254 tokens/s): a batch's large operations leave little to wait for.
Decoding on 2 threads or more (the default on 3 cores and more) is what it slows.

Why a team elsewhere matters: torch ships its own ``libgomp.so.1`` and llama.cpp links
the system's, but the loader keeps one library per soname, so the process has one
OpenMP runtime (checked: with both loaded, /proc/self/maps lists torch's copy only).
Once that runtime's threads outnumber the cores, libgomp's documentation says it
throttles the spinning at its barriers (100 turns with no wait policy set, then it
sleeps; GOMP_SPINCOUNT in libgomp's manual), and ggml waits at a barrier after every
operation of the graph; that last step is the likely cause, not a measured one.

The in-process backend already generates on a thread per request
(:mod:`app.backends.llamacpp`); the embedder's torch calls go through :func:`on_own_thread`.
The price is torch's set-up on each new thread: one short text took 14 ms on a new
thread against 10 ms on a warm one here; a batch of 512 texts, 2.05-2.08 s either way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def on_own_thread(fn: Callable[[], T], *, name: str = "switchyard openmp call") -> T:
    """``fn()`` on a new thread that ends with it; its result, or its exception, here.

    Blocks the calling thread until ``fn`` returns (call it from a worker thread, e.g.
    inside ``asyncio.to_thread``, never on the event loop). A thread costs ~0.1 ms to
    start: for calls of milliseconds and more, such as a batch of embeddings.
    """
    out: list[T] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:  # raised again on the caller's thread
            failed.append(exc)

    worker = threading.Thread(target=run, name=name, daemon=True)
    worker.start()
    worker.join()
    if failed:
        raise failed[0]
    return out[0]
