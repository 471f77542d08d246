"""Scripted model replies shared by the fakes: a queue, or a callable, or a default.

A reply is text, optionally reasoning before it, and optionally tool calls after it
(:class:`ScriptedCall`): each fake streams those calls the way its real API does, the
arguments cut into :func:`fragments`.
"""

from __future__ import annotations

import json
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Responder",
    "Script",
    "Scripted",
    "ScriptedCall",
    "count_words",
    "fragments",
    "pieces",
]


@dataclass(frozen=True)
class ScriptedCall:
    """A tool call the fake's model makes.

    ``arguments`` is a JSON object (sent as ``json.dumps`` of it) or the exact text to
    send (which need not be valid JSON). ``id`` None: the fake makes one in its API's
    style.
    """

    name: str
    arguments: dict[str, Any] | str = "{}"
    id: str | None = None

    @property
    def arguments_text(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments)


@dataclass(frozen=True)
class Scripted:
    """One reply: the answer text, for reasoning models the reasoning before it, and the
    tool calls after it (a reply with calls finishes as the API says: ``tool_calls`` /
    ``tool_use``)."""

    text: str
    reasoning: str | None = None
    tool_calls: tuple[ScriptedCall, ...] = ()


#: ``callable(request_json) -> str | Scripted``
Responder = Callable[[dict[str, Any]], "str | Scripted"]


class Script:
    """Where a fake's next reply text comes from.

    Order: the queue (``queue(...)``) first, then the responder (``respond_with(fn)``),
    then ``default``.
    """

    def __init__(self, default: str = "Hello from the fake.") -> None:
        self.default = default
        self._queue: deque[Scripted] = deque()
        self._responder: Responder | None = None
        self._lock = threading.Lock()

    def queue(self, *replies: str | Scripted) -> None:
        with self._lock:
            self._queue.extend(_as_scripted(r) for r in replies)

    def extend(self, replies: Iterable[str | Scripted]) -> None:
        self.queue(*replies)

    def respond_with(self, fn: Responder | None) -> None:
        self._responder = fn

    def next(self, body: dict[str, Any]) -> Scripted:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        if self._responder is not None:
            return _as_scripted(self._responder(body))
        return Scripted(self.default)


def _as_scripted(reply: str | Scripted) -> Scripted:
    return reply if isinstance(reply, Scripted) else Scripted(str(reply))


_PIECE = re.compile(r"\S+\s*|\s+")


def pieces(text: str) -> list[str]:
    """Split a reply into stream pieces (a word and the space after it); joins back exactly."""
    return _PIECE.findall(text)


def fragments(text: str, size: int) -> list[str]:
    """``text`` cut every ``size`` characters, as the APIs stream a call's arguments
    (mid-word, mid-string, mid-escape); joins back exactly."""
    return [text[i : i + size] for i in range(0, len(text), size)]


def count_words(text: str) -> int:
    """The fakes' own token count: whitespace-separated words (deliberately not ours)."""
    return len(text.split())
