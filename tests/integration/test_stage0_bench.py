"""bench.stage0_bench's one-lane side counts the relevance it claims to count."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.policy.schema import Policy
from app.stage0.engine import Stage0
from bench.stage0_bench import one_lane
from tests.integration.test_stage0_corpus import make_repo


def test_one_lane_scores_the_query_itself_after_query_ran_with_the_same_text(
    tmp_path: Path, policy: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(tmp_path)
    with Stage0(repo, policy) as s0:
        text = "reserve an amount before the cloud call"
        s0.query(text)  # what the harness times just before, with the same text
        index = s0.index
        scored: list[str] = []
        inner = index.query_counts

        def counting(query: str) -> Any:
            scored.append(query)  # a query's counts are made only when it is scored
            return inner(query)

        monkeypatch.setattr(index, "query_counts", counting)
        assert one_lane(s0, text) > 0
        assert scored == [text]
