"""Stop sequences applied to streamed text, knowing which one matched (pure).

llama-cpp-python applies ``stop`` itself but reports only ``finish_reason: stop``, the
same as the end of the model's turn, so a client could not be told which sequence ended
the reply (Anthropic's ``stop_sequence``). The in-process backend applies them here
instead: text that could be the start of a stop sequence is held back until the next
piece shows whether it is one, so no part of a stop sequence is ever released.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["StopScanner"]


class StopScanner:
    """Feed pieces of text; get back what may be released; ``matched`` once a stop hit."""

    def __init__(self, stops: Iterable[str]) -> None:
        self.stops = [s for s in stops if s]
        #: the stop sequence that ended the text, once one has
        self.matched: str | None = None
        self._held = ""

    def feed(self, piece: str) -> str:
        """The text that can be released now; after a match, the text before the stop
        sequence, and nothing ever again."""
        if self.matched is not None:
            return ""
        text = self._held + piece
        self._held = ""
        # the sequence a token-by-token reader would see first: the one that ends first
        hit: tuple[int, int, str] | None = None
        for stop in self.stops:
            at = text.find(stop)
            if at >= 0:
                key = (at + len(stop), at, stop)
                if hit is None or key[:2] < hit[:2]:
                    hit = key
        if hit is not None:
            self.matched = hit[2]
            return text[: hit[1]]
        hold = max((_overlap(text, stop) for stop in self.stops), default=0)
        self._held = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold]

    def flush(self) -> str:
        """What is still held back, at the end of the text (nothing after a match)."""
        held, self._held = self._held, ""
        return "" if self.matched is not None else held


def _overlap(text: str, stop: str) -> int:
    """The longest end of ``text`` that is a proper start of ``stop``."""
    for k in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:k]):
            return k
    return 0
