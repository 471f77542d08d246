"""A schema sent with tools holds the final answer only: no backend is constrained to it
while a tool may be called (app/backends/openai_request.py), and the structured owner
lets a reply that calls one pass (app/router/structured.py); with ``tool_choice`` none no
tool can be called, and the schema holds every reply as before (a review)."""

from __future__ import annotations

import pytest

from app.backends.base import ChatRequest, Message, ToolSpec, tools_callable
from app.backends.openai_request import chat_messages, chat_params

SCHEMA = {"type": "object", "properties": {"goal": {"type": "string"}}}


def request(choice: str | None) -> ChatRequest:
    return ChatRequest(
        messages=[Message(role="user", content="plan it")],
        json_schema=SCHEMA,
        tools=[ToolSpec(name="read_file")],
        tool_choice=choice,
    )


@pytest.mark.parametrize(("choice", "free"), [(None, True), ("auto", True), ("none", False)])
def test_the_schema_constrains_a_backend_only_when_no_tool_can_be_called(
    choice: str | None, free: bool
) -> None:
    req = request(choice)
    assert tools_callable(req) is free
    params = chat_params(
        req,
        "vllm",
        reasoning_effort=None,
        structured_field="structured_outputs",
    )
    assert ("structured_outputs" in str(params.get("extra_body"))) is not free
    told = "\n".join(str(m["content"]) for m in chat_messages(req, "vllm"))
    assert ("final answer" in told) is free
