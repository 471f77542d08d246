"""The conversation P1's ``--conversation KB`` sends, the same on both sides (it imports
nothing of Switchyard: LiteLLM's side, in its own venv, imports it too).

A coding agent sends its whole conversation again on every turn with one new question at
the end; Claude Code's requests are tens of KB. Each request's messages are fresh strings,
parsed from JSON as a server parses every request's body (untimed on both sides: the
request is timed from its messages as dicts to the routed reply).
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


def conversation_json(kb: int, turn_chars: int = 4000) -> str:
    """About ``kb`` KB of conversation as JSON: a system prompt of a fifth of it, then
    turns of about ``turn_chars`` characters, the user's (a file read, say) and the
    assistant's in turn."""
    size = kb * 1000
    text, i = "", 0
    messages: list[dict[str, str]] = []
    role = "system"
    while sum(len(m["content"]) for m in messages) + len(text) < size:
        text += _paragraph(i)
        i += 1
        if len(text) >= (size // 5 if role == "system" else turn_chars):
            messages.append({"role": role, "content": text})
            role, text = ("user" if role != "user" else "assistant"), ""
    if text:
        messages.append({"role": role, "content": text})
    return json.dumps(messages)


def messages(base: str, turn: int) -> list[dict[str, Any]]:
    """The conversation parsed afresh, with turn ``turn``'s question last."""
    out: list[dict[str, Any]] = json.loads(base)
    out.append({"role": "user", "content": f"turn {turn}: what should change next?"})
    return out
