"""The conversation P1's ``--conversation KB`` sends, the same on both sides (it imports
nothing of Switchyard: LiteLLM's side, in its own venv, imports it too).

A coding agent sends its whole conversation again on every turn: its last reply and the
tool results that followed are new, the rest was sent before; Claude Code's requests are
tens of KB. Here each request carries a system prompt (a fifth of the size), the latest
turns of the conversation (the user's, a file read say, and the assistant's in turn),
and a new question. The window moves on by two turns per request, so each request brings
two turns no side has seen, as an agent at that context size does (older turns drop out,
as when a client compacts). The messages are parsed afresh from JSON for each request,
as a server parses each body (untimed on both sides: a request is timed from its
messages as dicts to the routed reply).
"""

from __future__ import annotations

import json
from typing import Any


def _paragraph(i: int) -> str:
    return (
        f"def handler_{i}(request, tokens):\n"
        f"    kept = [t for t in tokens if t.kind == 'name_{i}']  # step {i} of the plan\n"
        f"    return {{'id': {i}, 'kept': len(kept), 'tail': tokens[-1:]}}\n\n"
    )


def _text(first: int, chars: int) -> str:
    text, i = "", first
    while len(text) < chars:
        text += _paragraph(i)
        i += 1
    return text[:chars]


class Conversation:
    """About ``kb`` KB of conversation in turns of ``turn_chars`` characters."""

    def __init__(self, kb: int, turn_chars: int = 4000) -> None:
        size = kb * 1000
        self.system = _text(0, size // 5)
        self.turn_chars = turn_chars
        # an even number of turns: the window starts with the user's, ends with a reply
        self.turns = max(2, (size - len(self.system)) // turn_chars // 2 * 2)

    def _turn(self, i: int) -> str:
        return _text(1_000_000 + i * 10_000, self.turn_chars)

    def messages(self, request: int) -> list[dict[str, Any]]:
        """Request ``request``'s messages (the window two turns on from the last one's),
        parsed afresh."""
        first = 2 * request
        turns = [
            {"role": "user" if i % 2 == 0 else "assistant", "content": self._turn(i)}
            for i in range(first, first + self.turns)
        ]
        question = {"role": "user", "content": f"request {request}: what should change next?"}
        asked = [{"role": "system", "content": self.system}, *turns, question]
        out: list[dict[str, Any]] = json.loads(json.dumps(asked))
        return out
