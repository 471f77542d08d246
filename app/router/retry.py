"""Retries and health: pure backoff arithmetic plus a small cooldown book.

A local deployment that fails is marked down at once and re-checked after its cooldown;
it is never retried slowly before the runtime fallback (a known LiteLLM failure mode).
"""

from __future__ import annotations

from dataclasses import dataclass

from app.clock import Clock, SystemClock
from app.policy.schema import Policy, RetryKind, RetryRule

# Error kinds that map onto another kind's rule, or never retry.
_RULE_FOR: dict[str, RetryKind] = {
    "rate_limited": "rate_limited",
    "server_error": "server_error",
    "timeout": "timeout",
    "connect": "connect",
    "context_length": "context_length",
    "bad_output": "bad_output",
    "auth": "auth",
    "no_key": "auth",
}


def rule_for(policy: Policy, kind: str) -> RetryRule | None:
    """The retry rule for an error kind; None for kinds that never retry (cancel, local_only)."""
    name = _RULE_FOR.get(kind)
    if name is None:
        return None
    return policy.retries.get(name)


def backoff_delay(rule: RetryRule, attempt: int, retry_after: float | None) -> float | None:
    """Seconds to wait before retry number ``attempt`` (1-based), or None to give up.

    Exponential from ``backoff_s`` and capped; a server's Retry-After wins when the rule
    honours it, and a Retry-After longer than the cap means: do not wait, move on.
    """
    if attempt > rule.max_retries:
        return None
    if rule.honour_retry_after and retry_after is not None:
        wait = max(0.0, retry_after)
        return wait if wait <= rule.max_backoff_s else None
    delay: float = rule.backoff_s * 2.0 ** (attempt - 1)
    return min(delay, rule.max_backoff_s)


@dataclass
class _Down:
    until: float
    reason: str


class HealthBook:
    """Which runtimes and models are in cooldown. Keys: ``runtime:<id>`` or a model id."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._down: dict[str, _Down] = {}

    def mark_down(self, key: str, cooldown_s: float, reason: str) -> None:
        self._down[key] = _Down(self._clock.monotonic() + cooldown_s, reason)

    def mark_up(self, key: str) -> None:
        self._down.pop(key, None)

    def is_up(self, key: str) -> bool:
        down = self._down.get(key)
        if down is None:
            return True
        if self._clock.monotonic() >= down.until:
            del self._down[key]  # cooldown over: the next probe decides
            return True
        return False

    def reason(self, key: str) -> str | None:
        return self._down[key].reason if not self.is_up(key) else None

    def down(self) -> dict[str, bool]:
        """The health map for RouterState: every key currently in cooldown → False."""
        return {k: False for k in list(self._down) if not self.is_up(k)}
