"""Tool calls as every adapter handles them: streamed fragments assembled, ids, counting.

* :class:`ToolCallAssembler` takes a stream's call fragments as the API sends them and
  gives back normalised :class:`~app.backends.base.ToolCallDelta` s and, at the end, the
  complete :class:`~app.backends.base.ToolCall` list. Normalised means: calls are numbered
  0, 1, … in the order they first appear (whatever index the server used); the first
  fragment of a call carries its id and name, the later ones argument text only (a
  server that repeats the id or name in every chunk, or sends arguments before the name,
  is evened out); joining a call's argument fragments gives exactly its
  :attr:`ToolCall.arguments`. A call the server gave no id gets one from
  :func:`call_id`; a call with no argument text at all has the arguments ``{}``.
* :func:`call_id`: a deterministic id from a seed (a hash of the request) and the index:
  the same request gives the same ids, as GR-004 wants of everything we decide.
* :func:`arguments_object`: a call's arguments as the JSON object APIs such as
  Anthropic's want, or None when the text is not one.
* :func:`request_texts`: what a request carries, for counting tokens locally: the
  messages, the calls they hold, and the tools on offer (the router's
  ``context_estimate`` counts the same texts).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.backends.base import ChatRequest, ToolCall, ToolCallDelta, ToolSpec
from app.tokens import count_text

__all__ = [
    "IncompleteToolCall",
    "ToolCallAssembler",
    "arguments_object",
    "call_id",
    "call_texts",
    "calls_tokens",
    "request_seed",
    "request_texts",
    "tools_text",
]


class IncompleteToolCall(ValueError):
    """A streamed call that never got its name: not a call anyone can run."""


def request_seed(request: ChatRequest) -> str:
    """A short hash of what the model was asked (messages and tools), for call ids."""
    payload = json.dumps(
        [
            [m.model_dump(mode="json") for m in request.messages],
            [t.model_dump(mode="json") for t in request.tools],
        ],
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def call_id(seed: str, index: int) -> str:
    """The id of the ``index``-th call in the reply to the request ``seed`` names."""
    digest = hashlib.sha256(f"{seed}:{index}".encode()).hexdigest()
    return f"call_{digest[:24]}"


def arguments_object(arguments: str) -> dict[str, Any] | None:
    """``arguments`` as a JSON object (``{}`` for empty text), or None when it is not one."""
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def tools_text(tools: list[ToolSpec]) -> str:
    """The tools on offer as one compact JSON text (how the router counts them too)."""
    return json.dumps([t.model_dump() for t in tools], separators=(",", ":"))


def call_texts(calls: list[ToolCall]) -> list[str]:
    """One text per call, name and arguments, for counting."""
    return [f"{c.name} {c.arguments}" for c in calls]


def calls_tokens(calls: list[ToolCall]) -> int:
    """The tokens a model spent writing ``calls`` (by the shared counter)."""
    return sum(count_text(t) for t in call_texts(calls))


def request_texts(request: ChatRequest) -> list[str]:
    """The texts of a request, each counted as a message by ``count_messages``."""
    texts = [m.content for m in request.messages]
    texts += [t for m in request.messages for t in call_texts(m.tool_calls)]
    if request.tools:
        texts.append(tools_text(request.tools))
    return texts


@dataclass
class _Partial:
    id: str | None = None
    name: str | None = None
    #: argument text that came before the name (held until the call is announced)
    early: list[str] = field(default_factory=list)
    arguments: list[str] = field(default_factory=list)
    announced: bool = False


@dataclass
class ToolCallAssembler:
    """Streamed call fragments in, normalised deltas and complete calls out."""

    #: what generated ids are made from (see :func:`request_seed`), or how to make it:
    #: hashing a long conversation costs a millisecond, and most servers send their ids
    seed: str | Callable[[], str] = ""
    _calls: dict[int, _Partial] = field(default_factory=dict)
    #: the server's index → ours (0, 1, … by first appearance)
    _order: dict[int, int] = field(default_factory=dict)

    @property
    def started(self) -> bool:
        return bool(self._calls)

    def feed(
        self, index: int | None, ident: str | None, name: str | None, arguments: str
    ) -> list[ToolCallDelta]:
        """One fragment as the server sent it; the normalised delta it makes, if any.

        ``index`` None (servers that send none) means a new call when the fragment has
        an id not seen yet, else the latest call.
        """
        ours = self._position(index, ident)
        part = self._calls.setdefault(ours, _Partial())
        if ident and part.id is None:
            part.id = ident
        if name and part.name is None:
            part.name = name
        if not part.announced:
            if part.name is None:
                if arguments:
                    part.early.append(arguments)
                return []
            part.announced = True
            part.id = part.id or call_id(self._seed(), ours)
            first = "".join(part.early) + arguments
            part.early.clear()
            if first:
                part.arguments.append(first)
            return [ToolCallDelta(index=ours, id=part.id, name=part.name, arguments=first)]
        if not arguments:
            return []
        part.arguments.append(arguments)
        return [ToolCallDelta(index=ours, arguments=arguments)]

    def _seed(self) -> str:
        if callable(self.seed):
            self.seed = self.seed()
        return self.seed

    def has_arguments(self, index: int) -> bool:
        """Whether the call at our ``index`` has any argument text yet."""
        part = self._calls.get(index)
        return part is not None and bool(part.arguments or part.early)

    def calls(self, *, named_only: bool = False) -> list[ToolCall]:
        """The complete calls, in order. Raises IncompleteToolCall for a nameless one
        (``named_only``: leaves it out, for a reply cut off before it got its name)."""
        out: list[ToolCall] = []
        for ours in sorted(self._calls):
            part = self._calls[ours]
            if part.name is None or part.id is None:
                if named_only:
                    continue
                raise IncompleteToolCall(f"tool call {ours} never got a name")
            out.append(
                ToolCall(id=part.id, name=part.name, arguments="".join(part.arguments) or "{}")
            )
        return out

    def _position(self, index: int | None, ident: str | None) -> int:
        if index is None:
            if not ident and self._calls:
                return max(self._calls)
            for ours, part in self._calls.items():
                if part.id == ident:
                    return ours
            index = -1 - len(self._order)  # a key of its own, never a server's index
        if index not in self._order:
            self._order[index] = len(self._order)
        return self._order[index]
