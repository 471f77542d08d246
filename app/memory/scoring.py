"""The pure parts of memory search: the dynamic score and the blend of the three parts.

A hit's score is ``w_tfidf·tfidf + w_embedding·embedding + w_dynamic·dynamic`` with the
weights of the policy's ``[memory]`` table. Each part lies in [0, 1]:

- ``tfidf``: cosine similarity of the query and the memory under TF-IDF (sublinear tf);
- ``embedding``: cosine similarity of their vectors under the current model, floored at 0
  (0 when no embedder is available, and the hit says so);
- ``dynamic``: ``0.5·recency + 0.3·usage + 0.2·priority`` where
  ``recency = 0.5 ** (age_days / half_life_days)`` with the age counted from the last use
  (or from creation, for a memory never used), ``usage = n / (n + 3)`` for ``n`` recorded
  uses, and ``priority = p / 10`` for a priority ``p`` in 0…10.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from app.policy.schema import Memory as MemoryPolicy

RECENCY_SHARE = 0.5
USAGE_SHARE = 0.3
PRIORITY_SHARE = 0.2
#: uses at which the usage part reaches one half
USAGE_HALF = 3
PRIORITY_MIN = 0
PRIORITY_MAX = 10
#: scores are rounded to this many decimals before ranking, so float noise cannot flip a
#: tie that the id should break
DECIMALS = 6

SECONDS_PER_DAY = 86_400.0


def age_days(now: datetime, since: datetime) -> float:
    """Days from ``since`` to ``now``; never negative (a clock set back counts as 0)."""
    return max(0.0, (now - since).total_seconds() / SECONDS_PER_DAY)


def recency(age: float, half_life_days: float) -> float:
    """1 now, 1/2 after one half-life, 1/4 after two …"""
    if half_life_days <= 0:
        raise ValueError("half_life_days must be > 0")
    return float(0.5 ** (max(0.0, age) / half_life_days))


def usage(use_count: int) -> float:
    n = max(0, use_count)
    return n / (n + USAGE_HALF)


def priority(p: int) -> float:
    return min(max(p, PRIORITY_MIN), PRIORITY_MAX) / PRIORITY_MAX


@dataclass(frozen=True)
class Dynamic:
    recency: float
    usage: float
    priority: float

    @property
    def score(self) -> float:
        return round(
            RECENCY_SHARE * self.recency
            + USAGE_SHARE * self.usage
            + PRIORITY_SHARE * self.priority,
            DECIMALS,
        )


def dynamic(
    *,
    now: datetime,
    created: datetime,
    used: datetime | None,
    use_count: int,
    priority_value: int,
    half_life_days: float,
) -> Dynamic:
    last_touch = used if used is not None and used > created else created
    return Dynamic(
        recency=round(recency(age_days(now, last_touch), half_life_days), DECIMALS),
        usage=round(usage(use_count), DECIMALS),
        priority=round(priority(priority_value), DECIMALS),
    )


def blend(weights: MemoryPolicy, *, tfidf: float, embedding: float, dynamic_score: float) -> float:
    return round(
        weights.weight_tfidf * tfidf
        + weights.weight_embedding * embedding
        + weights.weight_dynamic * dynamic_score,
        DECIMALS,
    )
