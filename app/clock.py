"""Injected time. Decisions never read the wall clock themselves (GR-004)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Aware UTC datetime."""
        ...

    def monotonic(self) -> float: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock tests move by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
        self._mono = 0.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._mono += seconds


#: the whole UTC seconds :func:`iso` spelled lately (their fields), and their text
_seconds: dict[tuple[int, ...], str] = {}
#: each millisecond's three digits (a format spec in an f-string costs ~150 ns more, on
#: five stamps a routed request: issue 20)
_MILLIS = tuple(f"{ms:03d}" for ms in range(1000))


def iso(dt: datetime) -> str:
    """``dt`` in UTC to the millisecond (truncated, as ``isoformat`` does), ``…Z``.

    A request writes several stamps within one second, and a reservation's expiry a few
    minutes on: each second's text is made once (a single remembered second missed on
    every stamp after an expiry, issue 20).
    """
    if dt.tzinfo is not UTC:
        return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    key = (dt.second, dt.minute, dt.hour, dt.day, dt.month, dt.year)
    text = _seconds.get(key)
    if text is None:
        if len(_seconds) >= 16:
            _seconds.clear()
        text = _seconds[key] = dt.isoformat()[:19]
    return f"{text}.{_MILLIS[dt.microsecond // 1000]}Z"
