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
from functools import cached_property
from typing import TYPE_CHECKING, NamedTuple, Protocol

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


class Candidate(NamedTuple):
    """A tuple: a query makes ~300 of them (a frozen dataclass costs 3× as much to make)."""

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


@dataclass(frozen=True)
class Selection:
    picked: list[int]  # candidate positions in pick order
    used: int  # tokens used
    decided: dict[int, Outcome]  # the candidates whose turn came (picked or over budget)
    lam: float
    k: int
    left: int  # budget tokens left at the end
    relevance: list[float]  # of each candidate
    redundancy: list[float]  # of each candidate, against the final picks

    def outcome(self, i: int) -> Outcome:
        """Candidate ``i``'s outcome (made when asked: a query reads the picks' only)."""
        hit = self.decided.get(i)
        if hit is not None:
            return hit
        rel, red = self.relevance[i], self.redundancy[i]
        status = REDUNDANCY if i < self.k else RANK
        score = self.lam * rel - (1 - self.lam) * red
        return Outcome(i, status, rel, red, score, None, self.left)

    @cached_property
    def outcomes(self) -> list[Outcome]:
        """One per candidate, in candidate order."""
        return [self.outcome(i) for i in range(len(self.relevance))]


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
    rel = np.fromiter((c.relevance for c in candidates), dtype=np.float64, count=n)
    # Worked in tie order (path, then line), so the first of equal scores is the tie's
    # winner: one argmax per round.
    ties = [c.tie for c in candidates]
    order = np.asarray(sorted(range(n), key=ties.__getitem__), dtype=np.int64)
    lam_rel = lam * rel[order]
    redundancy = np.zeros(n)  # in tie order
    closed = np.zeros(n, dtype=bool)  # in tie order
    left_open = n
    decided: dict[int, Outcome] = {}
    picked: list[int] = []
    used = 0
    # (the arrays' own methods: numpy's module functions wrap them, ~1 µs a call here)
    while len(picked) < k and left_open:
        scores = lam_rel - (1 - lam) * redundancy
        rounded = scores.round(_PLACES)
        rounded[closed] = -np.inf
        at = int(rounded.argmax())
        best = int(order[at])
        closed[at] = True
        left_open -= 1
        if used + candidates[best].cost > budget:
            decided[best] = Outcome(
                best,
                BUDGET,
                float(rel[best]),
                float(redundancy[at]),
                float(scores[at]),
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
            float(redundancy[at]),
            float(scores[at]),
            len(picked),
            budget - used,
        )
        np.maximum(redundancy, similarity[best][order], out=redundancy)
    final = np.empty(n)
    final[order] = redundancy
    return Selection(picked, used, decided, lam, k, budget - used, rel.tolist(), final.tolist())
