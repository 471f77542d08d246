"""The system message a cloud model is given with a JSON schema (it has no constrained
decoding of ours): the whole schema, in text. Apart from the provider code so that the
router can count what it sends (the reservation covers the schema's tokens too)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from app.backends.base import ChatRequest, tools_callable


def json_only_instruction(schema: Mapping[str, Any]) -> str:
    """The system message that asks a model without constrained decoding for JSON."""
    return (
        "Reply with a single JSON object and nothing else: no prose, no Markdown fences. "
        "It must validate against this JSON Schema:\n"
        + json.dumps(schema, sort_keys=True, separators=(",", ":"))
    )


def final_answer_instruction(schema: Mapping[str, Any]) -> str:
    """The system message for a request with tools and a schema: the schema is the final
    answer's, and a reply that calls a tool is free of it (OpenAI's structured output
    with tools, as Codex's ``--output-schema`` sends them on every turn)."""
    return (
        "When you give your final answer (not when you call a tool), reply with a single "
        "JSON object and nothing else: no prose, no Markdown fences. It must validate "
        "against this JSON Schema:\n" + json.dumps(schema, sort_keys=True, separators=(",", ":"))
    )


def schema_note(request: ChatRequest) -> str | None:
    """The note a cloud request with ``request.json_schema`` carries (None: no schema, or
    a system message of the caller's says it already: ``ask --schema`` spells it for a
    local model that may not decode to it, and a cloud one was sent it twice, a user
    audit)."""
    if request.json_schema is None:
        return None
    if tools_callable(request):
        note = final_answer_instruction(request.json_schema)
    else:
        note = json_only_instruction(request.json_schema)
    if any(m.role == "system" and note in m.content for m in request.messages):
        return None
    return note
