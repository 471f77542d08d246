"""Tool use in the Anthropic fake: the checks the Messages API makes (in its words), ids
in its style, and ``tool_use`` blocks as a reply carries them.

Checks (400 ``invalid_request_error``):

* ``tools`` entries have a ``name`` and an object ``input_schema``;
* ``tool_choice`` is ``auto``/``any``/``none`` or ``tool`` naming a defined tool, and
  only with ``tools``;
* ``tool_use``/``tool_result`` blocks need ``tools`` defined;
* a ``tool_use`` has an object ``input``; every ``tool_use`` is answered by a
  ``tool_result`` in the next message, and every ``tool_result`` answers a ``tool_use``
  of the previous one; in a user message the results come before any text;
* text blocks are not empty.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tests.fakes.script import ScriptedCall, count_words

__all__ = ["check_tools", "content_words", "tool_ids"]


def check_tools(body: dict[str, Any]) -> str | None:
    """Why the API would refuse ``body``'s tools or tool blocks, or None."""
    tools = body.get("tools")
    names: set[str] = set()
    if tools is not None:
        if not isinstance(tools, list):
            return "tools: Input should be a valid list"
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                return f"tools.{i}.name: Field required"
            schema = tool.get("input_schema")
            if not isinstance(schema, dict) or schema.get("type") != "object":
                return f"tools.{i}.custom.input_schema.type: Input should be 'object'"
            names.add(tool["name"])
    choice = body.get("tool_choice")
    if choice is not None:
        if not tools:
            return "tool_choice may only be specified while providing tools."
        kind = choice.get("type") if isinstance(choice, dict) else None
        if kind not in ("auto", "any", "tool", "none"):
            return "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'"
        if kind == "tool" and choice.get("name") not in names:
            return f"Tool '{choice.get('name')}' not found in provided tools"
    return _check_blocks(body.get("messages") or [], bool(tools))


def _check_blocks(messages: list[Any], has_tools: bool) -> str | None:
    previous_uses: set[str] = set()
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        blocks = content if isinstance(content, list) else []
        uses: set[str] = set()
        answered: set[str] = set()
        seen_other = False
        for k, block in enumerate(blocks):
            kind = block.get("type") if isinstance(block, dict) else None
            if kind in ("tool_use", "tool_result") and not has_tools:
                return (
                    "Requests which include `tool_use` or `tool_result` blocks must define tools."
                )
            if kind == "text" and not block.get("text"):
                return f"messages.{i}.content.{k}.text: text content blocks must be non-empty"
            if kind == "tool_use":
                if not isinstance(block.get("input"), dict):
                    return (
                        f"messages.{i}.content.{k}.tool_use.input: Input should be a valid "
                        "dictionary"
                    )
                uses.add(block["id"])
            elif kind == "tool_result":
                ident = block.get("tool_use_id")
                if ident not in previous_uses:
                    return (
                        f"messages.{i}.content.{k}: unexpected `tool_use_id` found in "
                        f"`tool_result` blocks: {ident}. Each `tool_result` block must have a "
                        "corresponding `tool_use` block in the previous message."
                    )
                if seen_other:
                    return (
                        f"messages.{i}: `tool_result` blocks must come first in the content "
                        "of a user message"
                    )
                answered.add(ident)
            else:
                seen_other = True
        missing = previous_uses - answered
        if missing:
            return (
                f"messages.{i - 1}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(sorted(missing))}. Each `tool_use` block must "
                "have a corresponding `tool_result` block in the next message."
            )
        previous_uses = uses
    return None


def tool_ids(seq: int, calls: tuple[ScriptedCall, ...]) -> list[str]:
    """Each call's id: the scripted one, else ``toolu_01…`` as the API makes them."""
    return [
        call.id or "toolu_01" + hashlib.sha256(f"{seq}:{i}".encode()).hexdigest()[:22]
        for i, call in enumerate(calls)
    ]


def use_input(call: ScriptedCall) -> Any:
    """A call's ``input`` in a non-streamed reply (scripted text that is not JSON stays
    text, which a real reply never is: the client must cope)."""
    if isinstance(call.arguments, dict):
        return call.arguments
    try:
        return json.loads(call.arguments)
    except ValueError:
        return call.arguments


def content_words(content: Any) -> int:
    """The fake's count of a message's content: text, tool inputs and tool results."""
    if isinstance(content, str):
        return count_words(content)
    total = 0
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "tool_use":
            total += count_words(f"{block.get('name', '')} {json.dumps(block.get('input'))}")
        elif block.get("type") == "tool_result":
            total += content_words(block.get("content", ""))
        else:
            total += count_words(str(block.get("text", "")))
    return total
