"""MMR: deterministic ties (path, then line), the budget, redundancy and statuses."""

from __future__ import annotations

import numpy as np

from app.stage0.engine import effective_budget
from app.stage0.mmr import Candidate, mmr_select, relevance_order


def _c(rel: float, path: str, start: int, cost: int = 10) -> Candidate:
    return Candidate(rel, cost, (path, start, start + 1, f"{path}:{start}"))


def test_equal_scores_go_to_the_earlier_path_then_the_earlier_line() -> None:
    cands = [_c(0.5, "b.py", 1), _c(0.5, "a.py", 9), _c(0.5, "a.py", 3)]
    sel = mmr_select(cands, np.zeros((3, 3)), lam=0.7, k=3, budget=1000)
    assert [cands[i].tie[:2] for i in sel.picked] == [("a.py", 3), ("a.py", 9), ("b.py", 1)]


def test_the_order_of_the_input_does_not_matter() -> None:
    cands = [_c(0.5, "b.py", 1), _c(0.5, "a.py", 9), _c(0.9, "c.py", 1), _c(0.5, "a.py", 3)]
    forward = mmr_select(cands, np.eye(4), lam=0.7, k=4, budget=1000)
    rev = list(reversed(cands))
    backward = mmr_select(rev, np.eye(4), lam=0.7, k=4, budget=1000)
    assert [cands[i].tie for i in forward.picked] == [rev[i].tie for i in backward.picked]


def test_relevance_order_breaks_ties_by_path_and_line() -> None:
    ties = [("b", 1, 1, ""), ("a", 5, 5, ""), ("a", 2, 2, "")]
    assert relevance_order([0.3, 0.3, 0.3], ties) == [2, 1, 0]
    assert relevance_order([0.1, 0.2, 0.3], ties) == [2, 1, 0]


def test_redundancy_lowers_a_near_duplicate_below_a_different_chunk() -> None:
    cands = [_c(1.0, "a.py", 1), _c(0.95, "a.py", 20), _c(0.6, "b.py", 1)]
    sim = np.array([[1.0, 0.99, 0.0], [0.99, 1.0, 0.0], [0.0, 0.0, 1.0]])
    sel = mmr_select(cands, sim, lam=0.7, k=2, budget=1000)
    assert sel.picked == [0, 2]
    dup = sel.outcomes[1]
    assert dup.status == "redundancy"
    assert dup.redundancy == 0.99
    assert round(dup.mmr, 6) == round(0.7 * 0.95 - 0.3 * 0.99, 6)
    assert sel.outcomes[2].status == "picked" and sel.outcomes[2].pick == 2


def test_lambda_one_is_pure_relevance() -> None:
    cands = [_c(1.0, "a.py", 1), _c(0.95, "a.py", 20), _c(0.6, "b.py", 1)]
    sim = np.ones((3, 3))
    assert mmr_select(cands, sim, lam=1.0, k=2, budget=1000).picked == [0, 1]


def test_a_chunk_over_the_budget_is_dropped_and_a_smaller_one_still_fits() -> None:
    cands = [_c(1.0, "a.py", 1, cost=60), _c(0.9, "b.py", 1, cost=50), _c(0.8, "c.py", 1, cost=30)]
    sel = mmr_select(cands, np.eye(3), lam=0.7, k=3, budget=100)
    assert sel.picked == [0, 2]
    assert sel.used == 90
    assert sel.outcomes[1].status == "budget"
    assert sel.outcomes[1].left == 40


def test_candidates_past_k_are_dropped_by_rank() -> None:
    cands = [_c(1.0 - i / 10, f"f{i}.py", 1) for i in range(5)]
    sel = mmr_select(cands, np.eye(5), lam=0.7, k=2, budget=1000)
    assert [o.status for o in sel.outcomes] == ["picked", "picked", "rank", "rank", "rank"]


def test_zero_budget_picks_nothing() -> None:
    sel = mmr_select([_c(1.0, "a.py", 1)], np.eye(1), lam=0.7, k=5, budget=0)
    assert sel.picked == [] and sel.outcomes[0].status == "budget"


def test_the_budget_shrinks_to_the_readers_context_window() -> None:
    assert effective_budget(8000) == 8000
    assert effective_budget(8000, requested=3000) == 3000
    assert effective_budget(8000, context_window=8192) == 4096
    assert effective_budget(8000, context_window=131072) == 8000
    assert effective_budget(8000, requested=-5) == 0
