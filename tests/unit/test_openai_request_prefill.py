"""A prefill (a final assistant turn) as each OpenAI-compatible flavor is sent it
(app/backends/openai_request.py): vLLM is told to continue it, beside any structured
output it is given in the same ``extra_body``."""

from __future__ import annotations

from app.backends.base import ChatRequest, Message, ToolCall
from app.backends.openai_request import chat_params

ASKED = Message(role="user", content="Name a colour.")


def params(*messages: Message, flavor: str = "vllm", schema: bool = False) -> dict[str, object]:
    request = ChatRequest(
        messages=list(messages), json_schema={"type": "object"} if schema else None
    )
    return chat_params(
        request,
        flavor,  # type: ignore[arg-type]
        reasoning_effort=None,
        structured_field="structured_outputs",
    )


def test_vllm_continues_a_final_assistant_turn_with_text() -> None:
    prefill = Message(role="assistant", content="The colour is")
    assert params(ASKED, prefill)["extra_body"] == {
        "continue_final_message": True,
        "add_generation_prompt": False,
    }
    assert params(ASKED, prefill, schema=True)["extra_body"] == {
        "structured_outputs": {"json": {"type": "object"}},
        "continue_final_message": True,
        "add_generation_prompt": False,
    }


def test_nothing_else_is_a_prefill() -> None:
    call = Message(role="assistant", tool_calls=[ToolCall(id="c", name="f")])
    for messages in ([ASKED], [ASKED, Message(role="assistant")], [ASKED, call]):
        assert "extra_body" not in params(*messages)
    # llama.cpp's server continues one by itself; the others have no such field
    prefill = Message(role="assistant", content="The colour is")
    for flavor in ("llamacpp", "ollama", "openai", "deepseek", "moonshot"):
        assert "continue_final_message" not in str(params(ASKED, prefill, flavor=flavor))
