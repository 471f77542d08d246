"""Maximal Marginal Relevance under a token budget (pure, deterministic).

Each round picks the candidate with the highest ``λ·relevance − (1−λ)·redundancy``,
where redundancy is its largest cosine similarity to a chunk already picked. A pick
that would overflow the token budget is dropped ("budget") and the round goes on with
the next best, so a smaller chunk can still fit. Ties (scores equal to 12 decimals) go
to the earlier ``tie`` key: path, then start line.

Every candidate ends with a status:

- ``picked``: selected, in pick order;
- ``budget``: its turn came but it did not fit in what was left of the budget;
- ``redundancy``: relevance alone would have picked it (its relevance rank is within
  ``k``) but similarity to chunks already picked pushed it out;
- ``rank``: not reached: ``k`` chunks were picked before its turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np

PICKED = "picked"
BUDGET = "budget"
REDUNDANCY = "redundancy"
RANK = "rank"
BELOW_PREFILTER = "below_prefilter"

_PLACES = 12


class Rows(Protocol):
    """``rows[i]``: candidate ``i``'s similarity to every candidate (a dense matrix, or
    rows computed when read)."""

    def __getitem__(self, i: int, /) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class Candidate:
    relevance: float
    cost: int  # tokens it adds to the brief
    tie: tuple[str, int, int, str]  # path, start, end, id


@dataclass(frozen=True, slots=True)
class Outcome:
    index: int  # position in the candidate list (relevance order)
    status: str
    relevance: float
    redundancy: float  # at pick/drop time; for the others, against the final picks
    mmr: float
    pick: int | None  # 1-based pick order
    left: int  # budget tokens left when it was decided (the final left for the others)


@dataclass(frozen=True, slots=True)
class Selection:
    picked: list[int]  # candidate positions in pick order
    outcomes: list[Outcome]  # one per candidate, in candidate order
    used: int  # tokens used


def relevance_order(
    relevance: Sequence[float], ties: Sequence[tuple[str, int, int, str]]
) -> list[int]:
    """Positions sorted by relevance (desc), ties by path then line."""
    return sorted(range(len(relevance)), key=lambda i: (-round(relevance[i], _PLACES), ties[i]))


def mmr_select(
    candidates: Sequence[Candidate],
    similarity: Rows,
    *,
    lam: float,
    k: int,
    budget: int,
) -> Selection:
    """Pick up to ``k`` candidates within ``budget`` tokens.

    ``candidates`` are in relevance order (see :func:`relevance_order`) and
    ``similarity[i, j]`` is the cosine between candidates ``i`` and ``j``.
    """
    import numpy as np

    n = len(candidates)
    rel = np.asarray([c.relevance for c in candidates], dtype=np.float64)
    tie_rank = np.empty(n, dtype=np.int64)
    tie_rank[sorted(range(n), key=lambda i: candidates[i].tie)] = np.arange(n)
    redundancy = np.zeros(n)
    open_ = np.ones(n, dtype=bool)
    decided: dict[int, Outcome] = {}
    picked: list[int] = []
    used = 0
    while len(picked) < k and open_.any():
        scores = lam * rel - (1 - lam) * redundancy
        rounded = np.where(open_, np.round(scores, _PLACES), -np.inf)
        tied = np.flatnonzero(open_ & (rounded == rounded.max()))
        best = int(tied[np.argmin(tie_rank[tied])])
        open_[best] = False
        if used + candidates[best].cost > budget:
            decided[best] = Outcome(
                best,
                BUDGET,
                float(rel[best]),
                float(redundancy[best]),
                float(scores[best]),
                None,
                budget - used,
            )
            continue
        picked.append(best)
        used += candidates[best].cost
        decided[best] = Outcome(
            best,
            PICKED,
            float(rel[best]),
            float(redundancy[best]),
            float(scores[best]),
            len(picked),
            budget - used,
        )
        if n:
            redundancy = np.maximum(redundancy, similarity[best])
    outcomes = []
    for i in range(n):
        if i in decided:
            outcomes.append(decided[i])
            continue
        status = REDUNDANCY if i < k else RANK
        score = lam * float(rel[i]) - (1 - lam) * float(redundancy[i])
        outcomes.append(
            Outcome(i, status, float(rel[i]), float(redundancy[i]), score, None, budget - used)
        )
    return Selection(picked, outcomes, used)
