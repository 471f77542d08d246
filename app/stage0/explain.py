"""The explain-scoring lane: why each chunk was picked or dropped, with its terms.

No model is involved: the "explanation" is the arithmetic itself: the chunk's top
TF-IDF terms, each query term's contribution to its relevance, its redundancy penalty
(largest cosine to a chunk already picked) and its MMR score. The relevance shown is
the chunk's own (what MMR weighs); its rank is by relevance with the file lane, which
orders the candidates (app/stage0/filelane.py).
"""

from __future__ import annotations

from app.counted import counted
from app.stage0.index import Index
from app.stage0.mmr import BELOW_PREFILTER, BUDGET, PICKED, RANK, REDUNDANCY, Outcome
from app.stage0.result import ExplainEntry, Lane, TermWeight, rnd

#: Chunks below the pre-filter listed by name (the rest are only counted).
BELOW_PREFILTER_SHOWN = 10
TOP_TERMS = 8


def reason(
    status: str, *, rank: int, pick: int | None, cost: int, left: int, k: int, prefilter: int
) -> str:
    if status == PICKED:
        return f"picked #{pick}: highest MMR score among the candidates left"
    if status == BUDGET:
        return f"dropped (budget): needs {cost} tokens, {left} left in the budget"
    if status == REDUNDANCY:
        return (
            f"dropped (redundancy): relevance rank {rank} is within k={k}, but its similarity"
            " to chunks already picked lowered its MMR score below theirs"
        )
    if status == RANK:
        picked = f"{counted(k, 'chunk')} {'was' if k == 1 else 'were'} picked"
        return f"dropped (rank): {picked} before its turn (relevance rank {rank})"
    if status == BELOW_PREFILTER:
        return f"dropped (below prefilter): relevance rank {rank} > prefilter {prefilter}"
    raise ValueError(status)


def entry(
    index: Index,
    row: int,
    query: str,
    lane: Lane,
    *,
    rank: int,
    outcome: Outcome | None,
    relevance: float,
    cost: int,
    k: int,
    prefilter: int,
) -> ExplainEntry:
    ref = index.refs[row]
    status = outcome.status if outcome is not None else BELOW_PREFILTER
    pick = outcome.pick if outcome is not None else None
    left = outcome.left if outcome is not None else 0
    return ExplainEntry(
        id=ref.id,
        path=ref.path,
        start=ref.start,
        end=ref.end,
        symbol=ref.symbol,
        lane=lane,
        rank=rank,
        relevance=rnd(relevance),
        redundancy=rnd(outcome.redundancy) if outcome is not None else 0.0,
        mmr=rnd(outcome.mmr) if outcome is not None else None,
        status=status,
        pick=pick,
        tokens=cost,
        reason=reason(status, rank=rank, pick=pick, cost=cost, left=left, k=k, prefilter=prefilter),
        top_terms=[TermWeight(term=t, weight=rnd(w)) for t, w in index.top_terms(row, TOP_TERMS)],
        matched_terms=[
            TermWeight(term=t, weight=rnd(w)) for t, w in index.contributions(query, row, own=True)
        ],
    )
