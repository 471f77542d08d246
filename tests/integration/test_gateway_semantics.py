"""What each protocol's fields mean, carried to the backend as the real APIs mean them: an
audit of the gateway with the openai and anthropic SDKs found requests served with a
200 whose meaning had changed on the way (instructions carried over, a structured
output ignored, text parts run together, a temperature invented). A real `switchyard
serve` on loopback; what the fake vLLM received and what the client got are asserted."""

from __future__ import annotations

from typing import Any

from tests.integration import test_gateway
from tests.integration.test_gateway import REPLY, Gateway

# the gateway test module's own: a real `switchyard serve` before loopback fakes,
# every escalation denied
fakes = test_gateway.fakes
gw = test_gateway.gw


def sent_messages(gw: Gateway) -> list[dict[str, Any]]:
    """The messages of the last request the fake vLLM received."""
    return list(gw.vllm.chat_requests[-1]["messages"])


def test_a_previous_responses_instructions_are_not_carried_over(gw: Gateway) -> None:
    """A chained request with new instructions reached vLLM as [system A, user, assistant,
    system B, user]: OpenAI carries no previous response's instructions over. System
    and developer messages sent in ``input`` are the conversation's, and stay in it."""
    client = gw.openai
    first = client.responses.create(
        model="tutor",
        instructions="You are A.",
        input=[
            {"role": "developer", "content": "Answer in English."},
            {"role": "user", "content": "what is a closure?"},
        ],
    )
    second = client.responses.create(
        model="tutor",
        instructions="You are B.",
        input="and a generator?",
        previous_response_id=first.id,
    )
    assert [(m["role"], m["content"]) for m in sent_messages(gw)] == [
        ("system", "You are B."),
        ("system", "Answer in English."),
        ("user", "what is a closure?"),
        ("assistant", REPLY),
        ("user", "and a generator?"),
    ]
    # a third turn with no instructions has none: B's are not kept either
    client.responses.create(model="tutor", input="and a coroutine?", previous_response_id=second.id)
    assert [m["content"] for m in sent_messages(gw)] == [
        "Answer in English.",
        "what is a closure?",
        REPLY,
        "and a generator?",
        REPLY,
        "and a coroutine?",
    ]
