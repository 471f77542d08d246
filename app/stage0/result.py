"""What a Stage0 query returns (pydantic; JSON with stable snake_case keys).

Floats are rounded to :data:`PLACES` decimals so that the JSON is byte-identical from
run to run; nothing in it depends on time, the cache's state or the machine.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PLACES = 6

Lane = Literal["chunks", "code"]
Status = Literal["picked", "budget", "redundancy", "rank", "below_prefilter"]


def rnd(x: float) -> float:
    return round(float(x), PLACES) + 0.0  # + 0.0: never "-0.0"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TermWeight(_Frozen):
    term: str
    weight: float


class SelectedChunk(_Frozen):
    id: str
    path: str
    start: int
    end: int
    kind: str
    symbol: str | None
    lane: Lane
    relevance: float
    redundancy: float
    mmr: float
    tokens: int
    text: str

    @property
    def location(self) -> str:
        return f"{self.path}:{self.start}-{self.end}"


class ExplainEntry(_Frozen):
    id: str
    path: str
    start: int
    end: int
    symbol: str | None
    lane: Lane
    rank: int  # by relevance among the chunks that match at all, 1-based
    relevance: float
    redundancy: float
    mmr: float | None
    status: Status
    pick: int | None
    tokens: int
    reason: str
    top_terms: list[TermWeight]
    matched_terms: list[TermWeight]


class LaneExplain(_Frozen):
    lane: Lane
    matched: int  # chunks with relevance > 0
    candidates: int  # after the pre-filter
    below_prefilter: int
    #: matched, but already picked by the lane before (the code lane skips what the
    #: chunks lane took): matched = candidates + below_prefilter + already_picked
    already_picked: int = 0
    k: int
    budget: int
    used: int
    entries: list[ExplainEntry]


class CorpusInfo(_Frozen):
    hash: str
    files: int
    chunks: int
    code_units: int
    skipped: dict[str, int]


class QueryParams(_Frozen):
    weighting: str
    mmr_lambda: float
    prefilter: int
    top_k: int
    code_top_k: int
    token_budget: int  # the policy's
    budget_tokens: int  # the one applied (after the reader's context window)
    context_window: int | None
    chunk_lines: int
    chunk_overlap: int


class QueryResult(_Frozen):
    query: str
    params: QueryParams
    corpus: CorpusInfo
    chunks: list[SelectedChunk]
    code_units: list[SelectedChunk]
    #: chunks with relevance > 0 (so an empty pick tells "nothing matches" from "nothing
    #: fits the budget")
    matched: int
    budget_used: int
    explain: list[LaneExplain] | None = Field(default=None)

    @property
    def selected(self) -> list[SelectedChunk]:
        """Both lanes, main lane first, each in pick order."""
        return [*self.chunks, *self.code_units]
