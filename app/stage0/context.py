"""context_estimate: the tokens a request would carry (a librarian trigger input)."""

from __future__ import annotations

from collections.abc import Iterable

from app.tokens import count_text


def context_estimate(texts: Iterable[str]) -> int:
    """Estimated tokens of all ``texts`` together (empty texts count for nothing).

    Uses the one shared counter (:mod:`app.tokens`), so the number compares directly
    with the ``context_estimate`` signal thresholds in the policy.
    """
    return sum(count_text(t) for t in texts if t)
