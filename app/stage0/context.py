"""context_estimate: the tokens a request would carry (a librarian trigger input)."""

from __future__ import annotations

from collections.abc import Iterable

from app.router.cost import estimate_tokens


def context_estimate(texts: Iterable[str]) -> int:
    """Estimated tokens of all ``texts`` together (empty texts count for nothing).

    Uses the router's tokenizer-free estimate, so the number compares directly with
    the ``context_estimate`` signal thresholds in the policy.
    """
    return sum(estimate_tokens(t) for t in texts if t)
