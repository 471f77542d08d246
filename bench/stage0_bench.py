"""Stage0 vs bm25s on the Python standard library that ships with this interpreter.

The stdlib (``sysconfig.get_paths()["stdlib"]``, without ``site-packages`` and
``__pycache__``) is not a git repository, and Stage0 reads what git lists; so the
benchmark copies it into a temporary directory (mtimes kept), runs ``git init`` and
commits it. Nothing else is special-cased: Stage0 runs exactly as on a user's repo.

Both systems get the same chunks (Stage0's chunker) of the same files:

- cold index: Stage0 from an empty cache (list, read, hash, chunk, tokenize, write the
  cache, assemble, weight) vs bm25s (read, chunk, ``bm25s.tokenize``, ``BM25.index``);
- warm re-index after one file changed: Stage0 in a new object (as after a restart;
  one file re-read and re-tokenized, the rest from the cache) vs bm25s re-tokenizing
  only that file's chunks (its other tokens kept in memory: the most generous
  baseline, bm25s has no incremental index) and indexing everything again;
- query + MMR: the p50 over a fixed query set of the same work on both sides:
  relevance over every chunk (for Stage0, the file lane too), the pre-filter's 150,
  MMR (Stage0's similarity rows for those candidates, for both); and, for Stage0
  alone, its whole ``query()`` (two lanes, each TF-IDF + BM25 + the file lane, MMR,
  texts read back, the result model). The goal: query + MMR p50 ≤ 5 ms; the whole
  ``query()`` is held to the same bound and reported beside it.

Run: python -m bench.stage0_bench [--repeat 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench._common import ms, percentile, print_machine, print_ratio, write_result

QUERIES = (
    "json decode error with line and column",
    "thread pool executor shutdown wait",
    "parse http cookie header",
    "tarfile extract members safely filter",
    "asyncio event loop run until complete",
    "format a datetime with strftime",
    "unittest mock patch object attribute",
    "subprocess run capture output timeout",
    "zipfile read compressed member",
    "argparse add mutually exclusive group",
    "logging handler rotating file",
    "sqlite3 connection commit rollback",
    "email message parse multipart",
    "pathlib glob recursive pattern",
    "heapq merge sorted iterables",
    "csv dialect sniffer delimiter",
    "socket create connection timeout",
    "decimal context rounding precision",
    "urllib parse quote unquote",
    "shutil copy tree ignore patterns",
)
TOUCHED = "json/decoder.py"
#: The goal for query + MMR (one lane, the same work as the bm25s side), p50.
QUERY_GOAL_S = 0.005


def copy_stdlib(dest: Path) -> Path:
    src = Path(sysconfig.get_paths()["stdlib"])
    repo = dest / "stdlib"
    shutil.copytree(
        src,
        repo,
        symlinks=True,
        ignore=shutil.ignore_patterns("site-packages", "__pycache__", "*.pyc"),
    )
    git = ["git", "-C", str(repo), "-c", "user.name=bench", "-c", "user.email=b@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "stdlib", "--no-verify"], check=True)
    return repo


def _prepare(s0: Any) -> None:
    """Force the lazily computed matrices a first query would need."""
    for index in (s0.index, s0.code_index):
        index.relevance("prepare the weighted matrices")
        _ = index.tfidf  # the texts alone: MMR similarity


def stage0_cold(repo: Path, cache_dir: Path, policy: Any) -> tuple[float, Any]:
    from app.stage0.engine import Stage0

    shutil.rmtree(cache_dir, ignore_errors=True)
    t0 = time.perf_counter()
    s0 = Stage0(repo, policy, cache_dir=cache_dir)
    s0.refresh()
    _prepare(s0)
    return time.perf_counter() - t0, s0


def stage0_warm(repo: Path, cache_dir: Path, policy: Any) -> tuple[float, Any]:
    from app.stage0.engine import Stage0

    t0 = time.perf_counter()
    s0 = Stage0(repo, policy, cache_dir=cache_dir)
    s0.refresh()
    _prepare(s0)
    return time.perf_counter() - t0, s0


class Bm25sSide:
    """bm25s over Stage0's chunks, with tokens remembered per file for the warm run."""

    def __init__(self, repo: Path, paths: Sequence[str], chunk_lines: int, overlap: int) -> None:
        self.repo = repo
        self.paths = list(paths)
        self.chunk_lines = chunk_lines
        self.overlap = overlap
        self.tokens: dict[str, list[list[str]]] = {}
        self.chunks: dict[str, list[Any]] = {}
        self.retriever: Any = None

    def _file(self, path: str) -> None:
        import bm25s

        from app.stage0.chunker import chunk_text
        from app.stage0.corpus import decode

        chunks = chunk_text(
            path, decode((self.repo / path).read_bytes()), self.chunk_lines, self.overlap
        )
        self.chunks[path] = chunks
        self.tokens[path] = bm25s.tokenize(
            [c.text for c in chunks], stopwords="en", return_ids=False, show_progress=False
        )

    def _index(self) -> None:
        import bm25s
        from bm25s.tokenization import Tokenized

        vocab: dict[str, int] = {}
        ids = [
            [vocab.setdefault(t, len(vocab)) for t in doc]
            for path in self.paths
            for doc in self.tokens[path]
        ]
        self.retriever = bm25s.BM25()
        self.retriever.index(Tokenized(ids=ids, vocab=vocab), show_progress=False)

    def cold(self) -> float:
        t0 = time.perf_counter()
        for path in self.paths:
            self._file(path)
        self._index()
        return time.perf_counter() - t0

    def warm(self, changed: str) -> float:
        t0 = time.perf_counter()
        self._file(changed)
        self._index()
        return time.perf_counter() - t0

    def query(self, text: str, s0: Any, prefilter: int) -> float:
        import bm25s
        import numpy as np

        from app.stage0.engine import chunk_cost
        from app.stage0.mmr import Candidate, mmr_select

        t0 = time.perf_counter()
        q = bm25s.tokenize([text], stopwords="en", return_ids=False, show_progress=False)[0]
        q = [t for t in q if t in self.retriever.vocab_dict]
        if q:
            scores = self.retriever.get_scores(q)
            order = np.argsort(-scores, kind="stable")[:prefilter]
            top = [int(r) for r in order if scores[r] > 0]
            refs = s0.index.refs
            best = float(scores[top[0]]) if top else 1.0
            cands = [
                Candidate(float(scores[r]) / best, chunk_cost(refs[r]), refs[r].sort_key())
                for r in top
            ]
            cfg = s0.config
            mmr_select(
                cands,
                s0.index.similarity_rows(top),
                lam=cfg.mmr_lambda,
                k=cfg.top_k,
                budget=cfg.token_budget,
            )
        return time.perf_counter() - t0


def one_lane(s0: Any, text: str) -> float:
    """Seconds for what the bm25s side does: relevance, the pre-filter, MMR (one lane)."""
    from app.stage0.engine import chunk_cost, ranked_rows
    from app.stage0.mmr import Candidate, mmr_select

    index, cfg = s0.index, s0.config
    # The index keeps its last query's scores, and the harness has just run query() with
    # the same text: without this, the relevance would come from that cache, uncounted.
    index._last = None
    t0 = time.perf_counter()
    rel = index.relevance(text)
    own = index.own_relevance(text)  # what MMR weighs (the file lane orders the rows)
    rows = ranked_rows(rel, index.refs, cfg.prefilter)[: cfg.prefilter]
    cands = [
        Candidate(float(own[r]), chunk_cost(index.refs[r]), index.refs[r].sort_key()) for r in rows
    ]
    mmr_select(
        cands,
        index.similarity_rows(rows),
        lam=cfg.mmr_lambda,
        k=cfg.top_k,
        budget=cfg.token_budget,
    )
    return time.perf_counter() - t0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="query passes (p50 over all)")
    ap.add_argument("--keep", type=Path, help="keep the stdlib copy in DIR (reused if present)")
    args = ap.parse_args(argv)

    from app.policy import load_policy

    info = print_machine()
    policy = load_policy().policy
    with tempfile.TemporaryDirectory(prefix="stage0-bench-") as tmp:
        base = args.keep or Path(tmp)
        repo = base / "stdlib"
        if not repo.exists():
            t0 = time.perf_counter()
            repo = copy_stdlib(base)
            print(f"stdlib copied and committed in {time.perf_counter() - t0:.1f} s: {repo}")
        cache_dir = Path(tmp) / "cache"

        cold_s0, s0 = stage0_cold(repo, cache_dir, policy)
        rep = s0.report
        print(
            f"corpus: {rep.files} files, {rep.chunks} chunks, {len(s0.code_index)} code units, "
            f"skipped {dict(sorted(rep.skipped.items()))}"
        )
        paths = sorted({r.path for r in s0.index.refs})
        bm = Bm25sSide(repo, paths, s0.config.chunk_lines, s0.config.chunk_overlap)
        cold_bm = bm.cold()
        s0.close()

        warm_nochange, s0 = stage0_warm(repo, cache_dir, policy)
        assert s0.report.read == [] and s0.report.tokenized == [], s0.report
        s0.close()
        target = repo / TOUCHED
        target.write_text(target.read_text() + "\n# touched by the benchmark\n")
        warm_s0, s0 = stage0_warm(repo, cache_dir, policy)
        assert s0.report.tokenized == [TOUCHED], s0.report.tokenized
        warm_bm = bm.warm(TOUCHED)

        for q in QUERIES:  # one untimed pass: first-call costs (imports, caches)
            s0.query(q)
            one_lane(s0, q)
            bm.query(q, s0, s0.config.prefilter)
        lat_s0: list[float] = []
        lat_lane: list[float] = []
        lat_bm: list[float] = []
        for _ in range(args.repeat):
            for q in QUERIES:
                t0 = time.perf_counter()
                s0.query(q)
                lat_s0.append(time.perf_counter() - t0)
                lat_lane.append(one_lane(s0, q))
                lat_bm.append(bm.query(q, s0, s0.config.prefilter))
        s0.close()

    load = os.getloadavg()
    p50_s0, p50_lane, p50_bm = (percentile(x, 50) for x in (lat_s0, lat_lane, lat_bm))
    print()
    print(f"{'':40} {'stage0':>12} {'bm25s':>12}")
    print(f"{'cold index':40} {cold_s0:>10.2f} s {cold_bm:>10.2f} s")
    print(f"{'warm re-index (1 file touched)':40} {ms(warm_s0):>12} {ms(warm_bm):>12}")
    print(f"{'warm re-index (nothing changed)':40} {ms(warm_nochange):>12} {'n/a':>12}")
    print(f"{'query + MMR p50 (one lane, same work)':40} {ms(p50_lane):>12} {ms(p50_bm):>12}")
    print(f"{'query() p50 (two lanes, texts, result)':40} {ms(p50_s0):>12} {'n/a':>12}")
    print(f"{'query() p90':40} {ms(percentile(lat_s0, 90)):>12} {'n/a':>12}")
    print()
    r_cold = print_ratio("stage0 cold index", cold_s0, cold_bm, "bm25s")
    r_warm = print_ratio("stage0 warm re-index (1 file)", warm_s0, warm_bm, "bm25s")
    r_restart = print_ratio(
        "stage0 warm re-index (1 file)", warm_s0, cold_bm, "bm25s re-indexing after a restart"
    )
    r_query = print_ratio("stage0 query+MMR p50 (one lane)", p50_lane, p50_bm, "bm25s")
    r_full = print_ratio("stage0 query() p50 (two lanes)", p50_s0, p50_bm, "bm25s one lane")
    reached = p50_lane <= QUERY_GOAL_S
    print(
        f"goal query + MMR p50 ≤ {ms(QUERY_GOAL_S)}: {'reached' if reached else 'NOT reached'}"
        f" ({ms(p50_lane)}; load average {load[0]:.2f})"
    )
    # the same bound on everything a caller waits for: both lanes, texts, the result
    full_reached = p50_s0 <= QUERY_GOAL_S
    print(
        f"goal query() p50 (two lanes, texts, result) ≤ {ms(QUERY_GOAL_S)}: "
        f"{'reached' if full_reached else 'NOT reached'} ({ms(p50_s0)}; load average {load[0]:.2f})"
    )
    path = write_result(
        "stage0_bench",
        {
            "corpus": {
                "files": rep.files,
                "chunks": rep.chunks,
                "skipped": dict(rep.skipped),
                "python": sys.version.split()[0],
            },
            "seconds": {
                "stage0_cold": cold_s0,
                "bm25s_cold": cold_bm,
                "stage0_warm_one_file": warm_s0,
                "bm25s_warm_one_file": warm_bm,
                "stage0_warm_nothing_changed": warm_nochange,
                "stage0_query_p50": p50_s0,
                "stage0_one_lane_p50": p50_lane,
                "bm25s_query_p50": p50_bm,
                "stage0_query_mean": statistics.fmean(lat_s0),
                "bm25s_query_mean": statistics.fmean(lat_bm),
            },
            "ratios": {
                "cold": r_cold,
                "warm_one_file": r_warm,
                "warm_one_file_vs_bm25s_restart": r_restart,
                "query_one_lane_p50": r_query,
                "query_two_lanes_p50": r_full,
            },
            "queries": list(QUERIES),
            "goal": {
                "query_mmr_p50_s": QUERY_GOAL_S,
                "reached": reached,
                "full_query_reached": full_reached,
            },
            "loadavg": [round(x, 2) for x in load],
            "cores": info["cores"],
            "pid": os.getpid(),
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
