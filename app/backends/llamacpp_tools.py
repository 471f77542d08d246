"""Tool calls for the in-process model, which has no tool format of its own.

Prompting (Hermes/Qwen style): the tools go into the system prompt with a short, fixed
instruction; the model calls a tool by writing ``<tool_call>{"name": …, "arguments":
{…}}</tool_call>``. The conversation is rendered in text the model can read: an
assistant's calls as those same blocks after its text, a tool's result as a user
message "Tool result for <name> (<id>): …" ("Tool error for …" when it is one).

Reading the reply (:class:`ReplyReader`): text streams as it comes, except what could
still be the start of a ``<tool_call>`` block, which is held back; a block that closes
with JSON naming a tool on offer becomes one tool-call delta (id, name and the whole
arguments); anything else in a block (bad JSON, a tool not offered, a block cut off by
``max_tokens``) is given back as the text the model wrote. Whitespace between and after
calls is dropped. Ids come from a hash of the request and the call's index
(:func:`app.backends.tool_calls.call_id`), so the same request gives the same ids.

Forcing a call: with ``tool_choice`` "required" or a tool's name, decoding is
constrained by a llama.cpp grammar to ``{"name": …, "arguments": …}`` (one alternative
per tool, each with that tool's argument schema), so the reply IS a call; it is read
whole when the generation ends (one call: a grammar-forced reply makes no parallel
calls). With "none", or a JSON schema and no forced call, the tools are not shown and
no block is read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from app.backends.base import ChatRequest, Delta, Message, ToolCall, ToolCallDelta, ToolSpec
from app.backends.tool_calls import call_id, request_seed

__all__ = ["CLOSE", "OPEN", "ReplyReader", "ToolPlan", "plan_tools"]

OPEN = "<tool_call>"
CLOSE = "</tool_call>"

_INSTRUCTION = (
    "You can call tools. To call one, reply with a block like this, one block per call:\n"
    '<tool_call>{"name": "<tool name>", "arguments": {<the arguments as JSON>}}</tool_call>\n'
    "Each result comes back in a message of its own. The tools:"
)


@dataclass(frozen=True)
class ToolPlan:
    """How one request is put to the model and how its reply is read."""

    #: the chat as the model's template takes it (system, user, assistant; text only)
    messages: list[dict[str, str]]
    #: the tools whose calls are read from the reply (empty: none are)
    names: frozenset[str] = frozenset()
    #: the JSON schema decoding is constrained to when a call is forced
    forced_schema: dict[str, Any] | None = None
    #: what call ids are made from
    seed: str = ""


def plan_tools(request: ChatRequest) -> ToolPlan:
    choice = request.tool_choice
    offered = [] if choice == "none" else list(request.tools)
    if request.json_schema is not None and choice in (None, "auto"):
        offered = []  # the reply is held to the JSON schema's grammar: no block could be read
    if choice not in (None, "auto", "none", "required"):
        offered = [t for t in offered if t.name == choice] or offered
    messages = _render(request.messages, offered)
    forced = None
    if offered and choice not in (None, "auto"):
        forced = _call_schema(offered)
    return ToolPlan(
        messages=messages,
        names=frozenset(t.name for t in offered),
        forced_schema=forced,
        seed=request_seed(request),
    )


def _render(history: list[Message], offered: list[ToolSpec]) -> list[dict[str, str]]:
    names = {c.id: c.name for m in history for c in m.tool_calls}
    out: list[dict[str, str]] = []
    for m in history:
        if m.role == "tool":
            what = "Tool error" if m.is_error else "Tool result"
            ident = m.tool_call_id or "?"
            label = f"{names[ident]} ({ident})" if ident in names else ident
            out.append({"role": "user", "content": f"{what} for {label}: {m.content}"})
        elif m.tool_calls:
            blocks = [_block(c) for c in m.tool_calls]
            out.append({"role": m.role, "content": "\n".join(filter(None, [m.content, *blocks]))})
        else:
            out.append({"role": m.role, "content": m.content})
    if offered:
        listed = "\n".join(
            json.dumps(
                {"name": t.name, "description": t.description, "parameters": t.parameters},
                ensure_ascii=False,
            )
            for t in offered
        )
        note = f"{_INSTRUCTION}\n{listed}"
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{note}"}
        else:
            out.insert(0, {"role": "system", "content": note})
    return out


def _block(call: ToolCall) -> str:
    try:
        arguments: Any = json.loads(call.arguments)
    except ValueError:
        arguments = call.arguments  # shown as written
    body = json.dumps({"name": call.name, "arguments": arguments}, ensure_ascii=False)
    return f"{OPEN}{body}{CLOSE}"


def _call_schema(offered: list[ToolSpec]) -> dict[str, Any]:
    alternatives = [
        {
            "type": "object",
            "properties": {"name": {"const": t.name}, "arguments": t.parameters},
            "required": ["name", "arguments"],
        }
        for t in offered
    ]
    return alternatives[0] if len(alternatives) == 1 else {"anyOf": alternatives}


@dataclass
class ReplyReader:
    """The model's text pieces in, deltas out (see the module docstring)."""

    plan: ToolPlan
    #: the visible text so far (what the text deltas add up to)
    text: list[str] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    _held: str = ""
    _in_block: bool = False

    @property
    def reading(self) -> bool:
        return bool(self.plan.names)

    def feed(self, piece: str) -> list[Delta]:
        if not self.reading:
            return self._say(piece)
        self._held += piece
        if self.plan.forced_schema is not None:
            return []  # the whole reply is one call: read at the end
        out: list[Delta] = []
        while True:
            if self._in_block:
                at = self._held.find(CLOSE)
                if at < 0:
                    return out
                body, self._held = self._held[:at], self._held[at + len(CLOSE) :]
                self._in_block = False
                out += self._call(body) or self._say(OPEN + body + CLOSE)
                continue
            at = self._held.find(OPEN)
            if at >= 0:
                before, self._held = self._held[:at], self._held[at + len(OPEN) :]
                self._in_block = True
                out += self._say(before)
                continue
            keep = _partial_open(self._held)
            ready = self._held[: len(self._held) - keep]
            if self.calls and not ready.strip():
                return out  # whitespace after a call: held (and dropped at the end)
            self._held = self._held[len(ready) :]
            return out + self._say(ready)

    def close(self) -> list[Delta]:
        """What is still held when the generation ends."""
        held, self._held = self._held, ""
        if self.plan.forced_schema is not None:
            return self._call(held) or self._say(held)
        if self._in_block:
            self._in_block = False
            return self._say(OPEN + held)  # a block cut off: the text as written
        return [] if self.calls and not held.strip() else self._say(held)

    def _say(self, text: str) -> list[Delta]:
        if not text or (self.calls and not text.strip()):
            return []  # whitespace between and after calls is not a reply
        self.text.append(text)
        return [Delta(text=text)]

    def _call(self, body: str) -> list[Delta]:
        try:
            value = json.loads(body)
        except ValueError:
            return []
        if not isinstance(value, dict):
            return []
        # small models often say "parameters", as the tool list does
        name, arguments = value.get("name"), value.get("arguments", value.get("parameters", {}))
        if isinstance(arguments, str):  # some models quote the arguments
            try:
                arguments = json.loads(arguments)
            except ValueError:
                return []
        if name not in self.plan.names or not isinstance(arguments, dict):
            return []
        index = len(self.calls)
        call = ToolCall(
            id=call_id(self.plan.seed, index),
            name=str(name),
            arguments=json.dumps(arguments, ensure_ascii=False),
        )
        self.calls.append(call)
        delta = ToolCallDelta(index=index, id=call.id, name=call.name, arguments=call.arguments)
        return [Delta(tool_calls=[delta])]


def _partial_open(text: str) -> int:
    """How many characters at the end of ``text`` could begin ``<tool_call>``."""
    for size in range(min(len(OPEN) - 1, len(text)), 0, -1):
        if OPEN.startswith(text[-size:]):
            return size
    return 0
