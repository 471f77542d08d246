"""The Stage0 façade: ``Stage0(repo, policy).query(text)`` and ``.brief(task, out_dir)``.

Two lanes share one token budget:

- ``chunks``: MMR over every chunk (code, docs, config): ``top_k`` picks (a query's
  ``k`` replaces it);
- ``code``: the "Shadow Code Brain", MMR over code units only (functions, methods,
  classes) with their own idf: ``code_top_k`` picks (a query's ``code_k``) among units
  the first lane did not take, within what the first lane left of the budget.

So a query returns up to ``k + code_k`` pieces; a caller that wants at most N in all
asks for ``k=N, code_k=0`` (or splits N between the lanes).

The budget is the policy's ``token_budget`` (or the caller's), shrunk to half of the
context window of the model that will read the brief when that is given (the other
half is left for the prompt around it and the answer); a brief also subtracts what its
constitution, spec and memories take.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from app.audit.masking import mask_text
from app.errors import SwitchyardError
from app.paths import repo_state_dir
from app.policy.schema import Policy
from app.stage0 import explain as explain_mod
from app.stage0.build import BuildReport, CacheDropped, build_index, load_texts
from app.stage0.cache import Stage0Cache
from app.stage0.corpus import (
    Progress,
    check_repo,
    read_blobs,
    read_worktree,
    scan_tree,
    scan_worktree,
)
from app.stage0.index import DEFAULT_WEIGHTING, ChunkRef, Index
from app.stage0.mmr import Candidate, Outcome, Selection, mmr_select
from app.stage0.result import (
    CorpusInfo,
    Lane,
    LaneExplain,
    QueryParams,
    QueryResult,
    SelectedChunk,
    rnd,
)
from app.tokens import count_text

if TYPE_CHECKING:
    import numpy as np

    from app.stage0.brief import Brief

#: Share of the reader's context window a brief may fill.
READER_SHARE = 0.5
#: Tokens the brief adds around each chunk (its location line and code fence).
CHUNK_OVERHEAD = 6


def effective_budget(
    policy_budget: int, requested: int | None = None, context_window: int | None = None
) -> int:
    """The token budget after the reader's context window."""
    budget = policy_budget if requested is None else requested
    if context_window is not None:
        budget = min(budget, int(context_window * READER_SHARE))
    return max(0, budget)


def chunk_cost(ref: ChunkRef) -> int:
    return ref.tokens + _location_tokens(ref.path, ref.start, ref.end) + CHUNK_OVERHEAD


@lru_cache(maxsize=1 << 16)
def _location_tokens(path: str, start: int, end: int) -> int:
    # Counted once per chunk, not once per query: a query weighs ~300 candidates.
    return count_text(f"{path}:{start}-{end}")


def ranked_rows(relevance: np.ndarray, refs: Sequence[ChunkRef], limit: int) -> list[int]:
    """Rows with relevance > 0, best first (ties by path, line), the first ``limit``
    plus every row tied with the last of them (so the cut never depends on sort order)."""
    import numpy as np

    matched = np.flatnonzero(relevance > 0)
    return _ranked(matched, relevance[matched], refs, limit)[0]


def _ranked(
    matched: np.ndarray, relevance: np.ndarray, refs: Sequence[ChunkRef], limit: int
) -> tuple[list[int], dict[int, tuple[str, int, int, str]]]:
    """:func:`ranked_rows` from the rows above zero (ascending) and their relevance, and
    the rows' sort keys (path, lines, id)."""
    import numpy as np

    rounded = np.round(relevance, 12)
    if len(matched) > limit:
        cut = np.partition(rounded, len(rounded) - limit)[len(rounded) - limit]
        kept = rounded >= cut
        matched, rounded = matched[kept], rounded[kept]
    rows = matched.tolist()
    ties = {r: refs[r].sort_key() for r in rows}
    # numpy's rounding, as for the cut (Python's round(v, 12) costs ~0.7 µs a value)
    keys = {r: (-v, ties[r]) for r, v in zip(rows, rounded.tolist(), strict=True)}
    return sorted(rows, key=keys.__getitem__), ties


@dataclass
class _Lane:
    index: Index
    rows: list[int]  # candidate rows, relevance order
    selection: Selection
    explain: LaneExplain | None
    matched: int  # rows with relevance > 0


class Stage0:
    """Deterministic retrieval over one repository (no LLM anywhere).

    ``rev=None`` reads the working tree (tracked + untracked-not-ignored files);
    ``rev="<commit>"`` reads that commit's tree through git without checking it out.
    The per-content cache lives in ``REPO/.switchyard/stage0/`` unless ``cache`` or
    ``cache_dir`` says otherwise (the benchmark shares one cache across commits).
    """

    def __init__(
        self,
        repo: Path | str,
        policy: Policy,
        *,
        rev: str | None = None,
        cache: Stage0Cache | None = None,
        cache_dir: Path | None = None,
        weighting: str = DEFAULT_WEIGHTING,
        progress: Progress | None = None,
    ) -> None:
        self.repo = check_repo(Path(repo), worktree=rev is None)
        self.policy = policy
        self.config = policy.stage0
        self.rev = rev
        self.weighting = weighting
        self.progress = progress
        self._owns_cache = cache is None
        if cache is None:
            folder = cache_dir if cache_dir is not None else repo_state_dir(self.repo, "stage0")
            cache = Stage0Cache(folder / "cache.sqlite")
        self.cache = cache
        self._index: Index | None = None
        self._code: Index | None = None
        self.report = BuildReport()

    def close(self) -> None:
        if self._owns_cache:
            self.cache.close()

    def __enter__(self) -> Stage0:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ── index ────────────────────────────────────────────────────────────────────────
    def refresh(self) -> BuildReport:
        """Scan the files again and rebuild the index (changed contents only re-read). A
        cache file whose pages cannot be read is started again from nothing, once."""
        try:
            return self._refresh()
        except sqlite3.DatabaseError as exc:
            self._reset_if_damaged(exc)
            return self._refresh()

    def _reset_if_damaged(self, exc: sqlite3.DatabaseError) -> None:
        """Start the cache again when its file is damaged; a busy, full or read-only one
        is no reason to delete what another Switchyard may be using: one clear line."""
        if isinstance(exc, sqlite3.OperationalError):
            raise SwitchyardError(f"the Stage0 cache cannot be used now: {exc}") from None
        self.cache.reset()

    def _refresh(self) -> BuildReport:
        cfg = self.config
        repo = self.repo
        if self.rev is None:
            scan = scan_worktree(
                repo, cfg.max_file_bytes, self.cache.stats(), progress=self.progress
            )

            def reader(wanted: list[tuple[str, str]]) -> dict[str, bytes]:
                return read_worktree(repo, wanted, cfg.max_file_bytes, scan.on_disk)

        else:
            scan = scan_tree(repo, self.rev, cfg.max_file_bytes)

            def reader(wanted: list[tuple[str, str]]) -> dict[str, bytes]:
                return read_blobs(repo, (b for _, b in wanted))

        index, report = build_index(
            scan,
            self.cache,
            chunk_lines=cfg.chunk_lines,
            overlap=cfg.chunk_overlap,
            reader=reader,
            weighting=self.weighting,
            progress=self.progress,
        )
        if self.rev is None:
            # A file listed but not indexed loses its stat row: the next scan reads it.
            unread = set(report.unread)
            present = (e.path for e in scan.entries if e.path not in unread)
            self.cache.update_stats(scan.stats, present)
            # Only here: a prune at a commit (a run's brief) took the working tree's and
            # other bases' contents from a Stage0 between its build and its query (the
            # tutor's, another run's), which then failed (a review). A base's contents
            # stay until the working tree's next build prunes them.
            self.cache.prune(report.keys)
        self._index = index
        self._code = index.subset([i for i, r in enumerate(index.refs) if r.is_code_unit])
        self.report = report
        return report

    @property
    def index(self) -> Index:
        if self._index is None:
            self.refresh()
        assert self._index is not None
        return self._index

    @property
    def code_index(self) -> Index:
        if self._code is None:
            self.refresh()
        assert self._code is not None
        return self._code

    def corpus_info(self) -> CorpusInfo:
        index = self.index
        return CorpusInfo(
            hash=self.report.corpus_hash,
            files=self.report.files,
            chunks=len(index),
            code_units=len(self.code_index),
            skipped=dict(sorted(self.report.skipped.items())),
        )

    # ── query ────────────────────────────────────────────────────────────────────────
    def query(
        self,
        text: str,
        k: int | None = None,
        budget_tokens: int | None = None,
        explain: bool = False,
        *,
        code_k: int | None = None,
        context_window: int | None = None,
        reserve: int = 0,
    ) -> QueryResult:
        """The chunks (and code units) for ``text`` by MMR within the token budget.

        ``text`` is masked first, as the corpus was: a secret typed in a query matches
        what it masks to, and the result (which echoes the query) holds none.

        ``k``: picks of the chunks lane (default: the policy's ``top_k``); ``code_k``:
        picks of the code lane on top of them (default ``code_top_k``; 0: none);
        ``context_window``: of the model that will read the result (shrinks the budget);
        ``reserve``: tokens the caller's own sections take out of that budget.
        """
        text = mask_text(text)[0]
        try:
            return self._query(text, k, budget_tokens, explain, code_k, context_window, reserve)
        except CacheDropped:
            # emptied under us by another process's masking: ours again, built again, once
            self.cache.check_masking()
            self.refresh()
        except sqlite3.DatabaseError as exc:  # pages that cannot be read: made again
            self._reset_if_damaged(exc)
            self.refresh()
        return self._query(text, k, budget_tokens, explain, code_k, context_window, reserve)

    def _query(
        self,
        text: str,
        k: int | None,
        budget_tokens: int | None,
        explain: bool,
        code_k: int | None,
        context_window: int | None,
        reserve: int,
    ) -> QueryResult:
        cfg = self.config
        top_k = cfg.top_k if k is None else k
        code_top_k = cfg.code_top_k if code_k is None else code_k
        budget = effective_budget(cfg.token_budget, budget_tokens, context_window)
        for_chunks = max(0, budget - reserve)
        main = self._lane(self.index, "chunks", text, top_k, for_chunks, set(), explain)
        taken = {self.index.refs[main.rows[i]].id for i in main.selection.picked}
        left = for_chunks - main.selection.used
        code = self._lane(self.code_index, "code", text, code_top_k, left, taken, explain)
        params = QueryParams(
            weighting=self.weighting,
            mmr_lambda=cfg.mmr_lambda,
            prefilter=cfg.prefilter,
            top_k=top_k,
            code_top_k=code_top_k,
            token_budget=cfg.token_budget,
            budget_tokens=budget,
            context_window=context_window,
            chunk_lines=cfg.chunk_lines,
            chunk_overlap=cfg.chunk_overlap,
        )
        lanes = [lane.explain for lane in (main, code) if lane.explain is not None]
        return QueryResult(
            query=text,
            params=params,
            corpus=self.corpus_info(),
            chunks=self._selected(main, "chunks"),
            code_units=self._selected(code, "code"),
            matched=main.matched,
            budget_used=main.selection.used + code.selection.used,
            explain=lanes if explain else None,
        )

    def _lane(
        self,
        index: Index,
        lane: Lane,
        text: str,
        k: int,
        budget: int,
        exclude: set[str],
        explain: bool,
    ) -> _Lane:
        import numpy as np

        cfg = self.config
        above, relevance, own_above = index.matched(text)
        matched = len(above)
        want = cfg.prefilter + len(exclude) + (explain_mod.BELOW_PREFILTER_SHOWN if explain else 0)
        refs = index.refs
        in_order, ties = _ranked(above, relevance, refs, want)
        ranked = [r for r in in_order if refs[r].id not in exclude] if exclude else in_order
        rows, below = ranked[: cfg.prefilter], ranked[cfg.prefilter :]
        costs = index.costs
        for r in rows:
            if r not in costs:
                costs[r] = chunk_cost(refs[r])
        # each candidate's own relevance (MMR weighs it), found among the rows above zero
        own = own_above[np.searchsorted(above, rows)].tolist() if rows else []
        candidates = [Candidate(v, costs[r], ties[r]) for r, v in zip(rows, own, strict=True)]
        sim = index.similarity_rows(rows)
        selection = mmr_select(candidates, sim, lam=cfg.mmr_lambda, k=k, budget=budget)
        info = None
        if explain:
            own_of = index.own_relevance(text)  # of the rows below the pre-filter too
            shown: list[tuple[int, Outcome | None, int]] = [
                (row, selection.outcomes[i], candidates[i].cost) for i, row in enumerate(rows)
            ]
            shown += [
                (row, None, chunk_cost(index.refs[row]))
                for row in below[: explain_mod.BELOW_PREFILTER_SHOWN]
            ]
            entries = [
                explain_mod.entry(
                    index,
                    row,
                    text,
                    lane,
                    rank=rank,
                    outcome=outcome,
                    relevance=float(own_of[row]),
                    cost=cost,
                    k=k,
                    prefilter=cfg.prefilter,
                )
                for rank, (row, outcome, cost) in enumerate(shown, start=1)
            ]
            excluded = sum(1 for r in above.tolist() if index.refs[r].id in exclude)
            info = LaneExplain(
                lane=lane,
                matched=matched,
                candidates=len(rows),
                below_prefilter=max(0, matched - excluded - len(rows)),
                already_picked=excluded,
                k=k,
                budget=budget,
                used=selection.used,
                entries=entries,
            )
        return _Lane(index, rows, selection, info, matched)

    def _selected(self, lane: _Lane, name: Lane) -> list[SelectedChunk]:
        rows = [lane.rows[i] for i in lane.selection.picked]
        texts = load_texts(self.cache, lane.index, rows)
        out = []
        for pos, row in zip(lane.selection.picked, rows, strict=True):
            ref = lane.index.refs[row]
            outcome = lane.selection.outcome(pos)
            out.append(
                SelectedChunk(
                    id=ref.id,
                    path=ref.path,
                    start=ref.start,
                    end=ref.end,
                    kind=ref.kind,
                    symbol=ref.symbol,
                    lane=name,
                    relevance=rnd(outcome.relevance),
                    redundancy=rnd(outcome.redundancy),
                    mmr=rnd(outcome.mmr),
                    tokens=chunk_cost(ref),
                    text=texts[row],
                )
            )
        return out

    # ── brief ────────────────────────────────────────────────────────────────────────
    def brief(
        self,
        task: str,
        out_dir: Path | str | None = None,
        *,
        spec: Path | str | None = None,
        memories: Sequence[str] = (),
        risks: Sequence[str] = (),
        approach: Sequence[str] = (),
        budget_tokens: int | None = None,
        context_window: int | None = None,
    ) -> Brief:
        """Build the task brief; with ``out_dir``, write TASK_BRIEF.md and brief.json."""
        from app.stage0.brief import make_brief, write_brief

        brief = make_brief(
            self,
            task,
            spec=Path(spec) if spec is not None else None,
            memories=memories,
            risks=risks,
            approach=approach,
            budget_tokens=budget_tokens,
            context_window=context_window,
        )
        if out_dir is not None:
            write_brief(brief, Path(out_dir))
        return brief
