"""Retrieval quality on a repository's own history: Stage0 vs the best bm25s baseline.

For each of the N most recent qualifying commits (default 200):

- query: the commit message (subject and body; ``Signed-off-by:``-style trailers
  dropped);
- truth: the non-test Python source files the commit modified (status M, so each one
  exists in the parent tree);
- corpus: every file of the parent commit's tree, read through git (``ls-tree`` and
  ``cat-file``): the repository is never checked out, written or modified.

A commit qualifies when it is not a merge, touches at most ``MAX_FILES`` files (mass
edits such as reformatting or licence headers say nothing about where a change
belongs) and modifies at least one non-test ``.py`` file. A test file is one under a
``test``/``tests``/``testing`` directory, or named ``test_*.py``, ``*_test.py`` or
``conftest.py``.

Every system ranks the files of the same tree for the same query; a chunk ranker's
file ranks as its best chunk. Reported: R@1, R@5, R@10 (the share of a commit's truth
files in the top k files, averaged over commits) and MRR (1 / rank of the first truth
file). The goal: Stage0's MRR at least :data:`MRR_GOAL` times the best baseline's.

Also reported, closer to what a brief holds: at chunk level, a truth chunk is one of
a truth file's chunks that overlaps a line the commit changed (``git diff -U0``, the
parent's side); cMRR is 1 / rank of the first truth chunk, cHit@15 the share of
commits with one in the top 15 chunks. For Stage0, "brief" is the share of commits
where ``query()`` (MMR, both lanes, the policy's budget) picked a truth chunk.

- Stage0: the index's relevance ranking (before MMR, which picks a diverse few and
  is not a ranking; the file lane included), one row per weighting asked for, and
  the p50 of ``query()`` as the first query of each commit's new index (its lazily
  built matrices included; ``bench.stage0_bench`` times warm queries). Its time
  column counts the index, that first query (MMR included) and the ranking;
- the baselines (bench/retrieval_baselines.py), all ``bm25s.BM25()`` with its
  defaults (Lucene BM25, k1 1.5, b 0.75): whole files with the path prepended and the
  code-aware tokenizer (snake_case and camelCase split); Stage0's chunks the same way,
  max-pooled per file; and Stage0's chunks with ``bm25s.tokenize(texts,
  stopwords="en")`` as bm25s's README shows it;
- ``--ablations`` adds that last one with each chunk's path prepended.

Stage0's file lane was tuned on :data:`TUNED_ON` only; every other repository is
reported as untouched (the output and the JSON say which). Of the untouched ones,
:data:`SEEN_BEFORE_SPLIT` had been measured with an earlier Stage0 before that split
was declared (not tuned on since); the rest were first measured after the file lane
was final.

One Stage0 cache (keyed by content) serves all commits, so each parent tree only
tokenizes the files that changed since the previous one.

Run: python -m bench.retrieval_quality --repo GIT_DIR [--n 200] [--weighting hybrid,tfidf,bm25]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from bench._common import percentile, print_machine, print_ratio, write_result
from bench.retrieval_baselines import ChunkRanker, FileRanker

MAX_FILES = 20
#: Repositories (``owner+name`` as the mirror names them) Stage0's file lane was tuned on;
#: every other one is reported as untouched.
TUNED_ON = frozenset(
    {
        "pallets+click",
        "psf+requests",
        "encode+httpx",
        "encode+starlette",
        "pallets+jinja",
        "more-itertools+more-itertools",
    }
)
#: Untouched repositories whose figures were looked at (with an earlier Stage0) before
#: :data:`TUNED_ON` was declared; the file lane was not tuned on them.
SEEN_BEFORE_SPLIT = frozenset(
    {"python-attrs+attrs", "encode+uvicorn", "marshmallow-code+marshmallow"}
)
#: Where Stage0's earlier choices (hybrid weighting, path ×8: app/stage0/index.py) were
#: measured; a repository in none of these sets was never looked at while tuning Stage0.
EARLIER_CHOICES_ON = frozenset(
    {"pallets+click", "psf+requests", "python-attrs+attrs", "encode+httpx"}
)
#: The goal: Stage0's file-level MRR at least this many times the best baseline's.
MRR_GOAL = 1.1
BASELINE_FILES = "bm25s files+path, code tok"
BASELINE_CHUNKS = "bm25s chunks+path, code tok"
KS = (1, 5, 10)
CHUNK_K = 15
_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+")
_TRAILER = re.compile(r"^[A-Za-z][A-Za-z-]*-by:\s|^Co-authored-by:\s", re.I)
_TEST_DIRS = {"test", "tests", "testing"}


@dataclass
class Case:
    commit: str
    parent: str
    query: str
    truth: list[str]


@dataclass
class Scores:
    name: str
    ranks: list[list[int]] = field(default_factory=list)  # per case: rank of each truth file
    chunk_ranks: list[int] = field(default_factory=list)  # per case: first truth chunk's rank
    brief_hits: list[bool] = field(default_factory=list)  # Stage0: a truth chunk was picked
    seconds: float = 0.0

    query_seconds: list[float] = field(default_factory=list)  # Stage0: query() (MMR) each

    def add(
        self, scores: Any, paths: Sequence[str], case: Case, truth_rows: set[int] | None
    ) -> None:
        """One case's scores, by chunk (``paths`` says whose) or by file (no truth rows:
        no chunk-level figures)."""
        pos = {f: i + 1 for i, f in enumerate(files_by_best_chunk(scores, paths))}
        self.ranks.append([pos.get(t, 0) for t in case.truth])
        if truth_rows is not None:
            self.chunk_ranks.append(first_truth_rank(scores, truth_rows))

    def recall(self, k: int) -> float:
        per = [sum(1 for r in rs if 0 < r <= k) / len(rs) for rs in self.ranks]
        return sum(per) / len(per) if per else 0.0

    def mrr(self) -> float:
        per = [1.0 / min(r for r in rs if r > 0) if any(rs) else 0.0 for rs in self.ranks]
        return sum(per) / len(per) if per else 0.0

    def chunk_mrr(self) -> float:
        per = [1.0 / r if r else 0.0 for r in self.chunk_ranks]
        return sum(per) / len(per) if per else 0.0

    def chunk_hit(self, k: int) -> float:
        per = [1.0 if 0 < r <= k else 0.0 for r in self.chunk_ranks]
        return sum(per) / len(per) if per else 0.0

    def row(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            **{f"r@{k}": round(self.recall(k), 4) for k in KS},
            "mrr": round(self.mrr(), 4),
            "seconds": round(self.seconds, 2),
        }
        if self.chunk_ranks:
            out["chunk_mrr"] = round(self.chunk_mrr(), 4)
            out[f"chunk_hit@{CHUNK_K}"] = round(self.chunk_hit(CHUNK_K), 4)
        if self.brief_hits:
            out["brief_hit"] = round(sum(self.brief_hits) / len(self.brief_hits), 4)
        if self.query_seconds:
            # the first query of each commit's new index: lazily built matrices included
            out["first_query_p50_ms"] = round(percentile(self.query_seconds, 50) * 1000, 3)
        return out


def first_truth_rank(scores: Any, truth_rows: set[int]) -> int:
    """1-based rank of the best-ranked truth chunk (ties by row, i.e. path then line);
    0 when no truth chunk scores above zero."""
    import numpy as np

    order = np.argsort(-scores, kind="stable")
    for rank, row in enumerate(order.tolist(), start=1):
        if scores[row] <= 0:
            return 0
        if row in truth_rows:
            return rank
    return 0


def changed_lines(repo: Path, case: Case) -> dict[str, list[tuple[int, int]]]:
    """Line ranges of the parent's version of each truth file that the commit touched
    (a pure insertion counts as the lines around it)."""
    out: dict[str, list[tuple[int, int]]] = {}
    diff = git(repo, "diff", "-U0", "--no-renames", case.parent, case.commit, "--", *case.truth)
    path = None
    for line in diff.splitlines():
        if line.startswith("--- "):
            path = line[6:] if line.startswith("--- a/") else None
        elif line.startswith("@@") and path is not None:
            m = _HUNK.match(line)
            if m:
                start, count = int(m.group(1)), int(m.group(2) or "1")
                span = (start, start + count - 1) if count else (start, start + 1)
                out.setdefault(path, []).append(span)
    return out


def truth_chunk_rows(refs: Sequence[Any], spans: dict[str, list[tuple[int, int]]]) -> set[int]:
    return {
        i
        for i, r in enumerate(refs)
        if any(r.start <= hi and lo <= r.end for lo, hi in spans.get(r.path, ()))
    }


def is_test_path(path: str) -> bool:
    p = PurePosixPath(path)
    if any(part.lower() in _TEST_DIRS for part in p.parts[:-1]):
        return True
    name = p.name.lower()
    return name.startswith("test_") or name.endswith("_test.py") or name == "conftest.py"


def clean_message(message: str) -> str:
    lines = [ln for ln in message.strip().splitlines() if not _TRAILER.match(ln.strip())]
    return "\n".join(lines).strip()


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, check=True, text=False
    ).stdout
    return out.decode("utf-8", "replace")


def collect_cases(repo: Path, n: int, rev: str = "HEAD") -> list[Case]:
    """The ``n`` most recent qualifying commits reachable from ``rev``."""
    log = git(
        repo,
        "log",
        "--no-merges",
        "--no-renames",
        "--name-status",
        "--format=%x1e%H%x1f%P%x1f%B%x1f",
        rev,
    )
    cases: list[Case] = []
    for record in log.split("\x1e"):
        if not record.strip():
            continue
        commit, parents, message, files = record.split("\x1f", 3)
        parent_list = parents.split()
        if len(parent_list) != 1:
            continue  # a root commit has no parent tree to search
        changes = [ln.split("\t") for ln in files.strip().splitlines() if "\t" in ln]
        if not changes or len(changes) > MAX_FILES:
            continue
        truth = sorted(
            p[1] for p in changes if p[0] == "M" and p[1].endswith(".py") and not is_test_path(p[1])
        )
        query = clean_message(message)
        if truth and query:
            cases.append(Case(commit, parent_list[0], query, truth))
        if len(cases) >= n:
            break
    return cases


def files_by_best_chunk(scores: Any, paths: Sequence[str]) -> list[str]:
    """Files ordered by their best chunk's score (ties by path); unmatched files last."""
    best: dict[str, float] = {}
    for score, path in zip(scores.tolist(), paths, strict=True):
        if score > best.get(path, float("-inf")):
            best[path] = score
    return [p for p, s in sorted(best.items(), key=lambda kv: (-kv[1], kv[0])) if s > 0]


def evaluate(
    repo: Path,
    cases: Sequence[Case],
    weightings: Sequence[str],
    ablations: bool,
    progress: Callable[[str], None],
) -> list[Scores]:
    from app.policy import load_policy
    from app.stage0.build import load_texts
    from app.stage0.cache import Stage0Cache
    from app.stage0.engine import Stage0

    policy = load_policy().policy
    rows = [Scores(f"stage0 ({w})") for w in weightings]
    systems: list[tuple[Scores, ChunkRanker]] = [
        (Scores(BASELINE_CHUNKS), ChunkRanker(with_path=True, code=True)),
        (Scores("bm25s"), ChunkRanker()),
    ]
    if ablations:
        systems.append((Scores("bm25s + path in text"), ChunkRanker(with_path=True)))
    files_row = Scores(BASELINE_FILES)
    files_ranker = FileRanker(repo)
    with tempfile.TemporaryDirectory(prefix="stage0-rq-") as tmp:
        cache = Stage0Cache(Path(tmp) / "cache.sqlite")
        text_memo: dict[str, str] = {}
        for n, case in enumerate(cases, start=1):
            spans = changed_lines(repo, case)
            truth_rows: set[int] = set()
            index = None
            for w, scores in zip(weightings, rows, strict=True):
                t0 = time.perf_counter()
                s0 = Stage0(repo, policy, rev=case.parent, cache=cache, weighting=w)
                s0.refresh()
                index = s0.index
                # query() first, so that it builds the matrices and scores the query itself
                # (the index keeps its last query's scores: the ranking below reads them)
                t1 = time.perf_counter()
                picked = {c.id for c in s0.query(case.query).selected}
                t2 = time.perf_counter()
                rel = index.relevance(case.query)
                scores.seconds += time.perf_counter() - t0  # the query()'s MMR included
                scores.query_seconds.append(t2 - t1)
                truth_rows = truth_chunk_rows(index.refs, spans)
                scores.add(rel, [r.path for r in index.refs], case, truth_rows)
                scores.brief_hits.append(any(index.refs[r].id in picked for r in truth_rows))
            assert index is not None
            ids = [r.id for r in index.refs]
            paths = [r.path for r in index.refs]
            missing = [i for i, cid in enumerate(ids) if cid not in text_memo]
            for row, text in load_texts(cache, index, missing).items():
                text_memo[ids[row]] = text
            texts = [text_memo[cid] for cid in ids]
            for scores, ranker in systems:
                t0 = time.perf_counter()
                chunk_scores = ranker.scores(ids, paths, texts, case.query)
                scores.seconds += time.perf_counter() - t0
                scores.add(chunk_scores, paths, case, truth_rows)
            # a file's blob is the first part of its chunks' cache key
            files = sorted({(r.path, r.key.split(":", 1)[0]) for r in index.refs})
            t0 = time.perf_counter()
            file_scores = files_ranker.scores(files, case.query)
            files_row.seconds += time.perf_counter() - t0
            files_row.add(file_scores, [p for p, _ in files], case, None)
            if n % 20 == 0 or n == len(cases):
                progress(f"  {n}/{len(cases)} commits")
        cache.close()
    return [*rows, files_row, *(s for s, _ in systems)]


def best_baseline(rows: Sequence[Scores]) -> Scores:
    """The baseline with the highest file-level MRR (ties: the first listed)."""
    baselines = [s for s in rows if not s.name.startswith("stage0")]
    return max(baselines, key=lambda s: s.mrr())


def print_table(repo: str, cases: int, rows: Sequence[Scores]) -> None:
    print(f"\n{repo}: {cases} commits")
    head = f"{'system':<28} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'MRR':>6}"
    print(f"{head} │ {'cMRR':>6} {'cHit@15':>7} {'brief':>6} {'time':>7}")

    def cell(r: dict[str, Any], key: str, width: int) -> str:
        return f"{r[key]:>{width}.3f}" if key in r else f"{'-':>{width}}"

    for s in rows:
        r = s.row()
        print(
            f"{s.name:<28} {r['r@1']:>6.3f} {r['r@5']:>6.3f} {r['r@10']:>6.3f} {r['mrr']:>6.3f}"
            f" │ {cell(r, 'chunk_mrr', 6)} {cell(r, f'chunk_hit@{CHUNK_K}', 7)}"
            f" {cell(r, 'brief_hit', 6)} {r['seconds']:>6.1f}s"
        )
    print(
        "file level: R@k, MRR · chunk level: cMRR (first chunk overlapping a changed line), "
        f"cHit@{CHUNK_K} · brief: a changed chunk among those query() picks"
    )


def split_of(label: str) -> str:
    """``tuned`` for a repository Stage0's file lane was tuned on, else ``untouched``."""
    return "tuned" if label in TUNED_ON else "untouched"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", required=True, type=Path, help="git repository (bare is fine)")
    ap.add_argument("--n", type=int, default=200, help="commits to evaluate (most recent)")
    ap.add_argument("--rev", default="HEAD", help="newest commit to start from")
    ap.add_argument("--weighting", default="hybrid,tfidf,bm25", help="Stage0 weightings to compare")
    ap.add_argument("--ablations", action="store_true", help="add bm25s with paths in text")
    ap.add_argument("--name", help="result name (default: retrieval_quality_<repo dir>)")
    args = ap.parse_args(argv)
    repo = args.repo.resolve()
    label = repo.parent.name if repo.name in {"repo", ".git"} else repo.name
    print_machine()
    load = os.getloadavg()
    weightings = [w.strip() for w in args.weighting.split(",") if w.strip()]
    cases = collect_cases(repo, args.n, args.rev)
    split = split_of(label)
    print(
        f"{repo}: {len(cases)} qualifying commits (asked for {args.n}); "
        f"{split}{' (seen before the split)' if label in SEEN_BEFORE_SPLIT else ''} "
        f"(Stage0's file lane was tuned on {', '.join(sorted(TUNED_ON))})",
        flush=True,
    )
    if not cases:
        return 1
    rows = evaluate(repo, cases, weightings, args.ablations, lambda m: print(m, flush=True))
    print_table(label, len(cases), rows)
    best = best_baseline(rows)
    goals = {}
    for s in rows:
        if s.name.startswith("stage0"):
            r = print_ratio(
                f"mrr {label} ({split}) {s.name}",
                s.mrr(),
                best.mrr(),
                f"the best baseline, {best.name}",
                higher_is_better=True,
            )
            goals[s.name] = {"ratio_vs_best": round(r, 4), "reached": r >= MRR_GOAL}
            p50 = percentile(s.query_seconds, 50) * 1000
            print(
                f"{s.name} query() p50, the first query of each commit's new index "
                f"(its matrices built inside; bench.stage0_bench times warm queries): {p50:.2f} ms"
            )
            mark = "reached" if r >= MRR_GOAL else "NOT reached"
            print(f"goal {s.name}: file MRR ≥ {MRR_GOAL}× the best baseline: {mark} ({r:.2f}×)")
    name = args.name or f"retrieval_quality_{label}"
    path = write_result(
        name,
        {
            "repo": label,
            "split": split,
            "tuned_on": sorted(TUNED_ON),
            "seen_before_split": label in SEEN_BEFORE_SPLIT,
            "earlier_choices_measured_on": label in EARLIER_CHOICES_ON,
            "head": git(repo, "rev-parse", args.rev).strip(),
            "commits": len(cases),
            "max_files": MAX_FILES,
            "rows": [s.row() for s in rows],
            "best_baseline": best.name,
            "goal": {"mrr_ratio": MRR_GOAL, "by_weighting": goals},
            "loadavg": [round(x, 2) for x in load],
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
