"""A cloud reply whose JSON spells a lone UTF-16 surrogate (``"\\ud800"``): Python decodes
it into a string no UTF-8 writer takes, and the gateway crashed writing the answer it had
been billed for (a bare 500 for a whole reply, a stream cut off: a gateway audit). Now the
backend's edge mends it: the lone half is U+FFFD, a pair spelt as two escapes in one
string is its character, and the call is answered and audited as any other."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from app.backends.base import ChatResult, Delta, ToolCall, ToolCallDelta, Usage
from app.backends.whole_text import whole, whole_delta, whole_result
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.openai_server import FakeOpenAIServer
from tests.integration.cloud_kit import Asked, cloud_session, codes, gateway, lines_of, start_fakes

#: what the provider meant: a lone high half, then an emoji spelt as its two halves
SENT = "bad \ud800 half, whole \ud83d\ude00 pair"
SHOWN = "bad \ufffd half, whole \U0001f600 pair"


def test_a_lone_half_is_u_fffd_and_a_pair_its_character() -> None:
    assert whole(SENT) == SHOWN
    assert whole("plain ascii") == "plain ascii"
    assert whole("déjà vu \U0001f600") == "déjà vu \U0001f600"
    assert whole("\udc00") == "\ufffd"
    clean = Delta(text="ok")
    assert whole_delta(clean) is clean  # nothing copied when nothing is wrong
    mended = whole_delta(
        Delta(text="\ud800", tool_calls=[ToolCallDelta(index=0, arguments='{"a":"\udfff"}')])
    )
    assert mended.text == "\ufffd" and mended.tool_calls[0].arguments == '{"a":"\ufffd"}'
    usage = Usage(tokens_in=1, tokens_out=1)
    result = ChatResult(
        text=SENT,
        tool_calls=[ToolCall(id="c", name="f", arguments='"\ud800"')],
        usage=usage,
        finish_reason="stop",
        model="m",
    )
    fixed = whole_result(result)
    assert fixed.text == SHOWN and fixed.tool_calls[0].arguments == '"\ufffd"'
    ok = result.model_copy(update={"text": "fine", "tool_calls": []})
    assert whole_result(ok) is ok


async def test_the_gateway_answers_a_reply_that_spells_a_lone_surrogate(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    fake_anthropic_factory: Callable[..., FakeAnthropicServer],
) -> None:
    fakes = start_fakes(fake_openai_factory, fake_anthropic_factory)
    fakes.deepseek.script.queue(SENT, SENT)
    ask = [{"role": "user", "content": "fix it"}]
    async with (
        cloud_session(tmp_path, monkeypatch, fakes, Asked()) as session,
        gateway(session) as url,
        httpx.AsyncClient(base_url=url, timeout=60) as http,
    ):
        body = {"model": "implementer+escalate", "messages": ask}
        answered = await http.post("/v1/chat/completions", json=body)
        assert answered.status_code == 200, answered.text
        assert answered.json()["choices"][0]["message"]["content"] == SHOWN
        async with http.stream(
            "POST", "/v1/chat/completions", json={**body, "stream": True}
        ) as streamed:
            assert streamed.status_code == 200
            chunks = [
                json.loads(line[6:])
                async for line in streamed.aiter_lines()
                if line.startswith("data: ") and line != "data: [DONE]"
            ]
        lines = await lines_of(session)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert "\ud800" not in text and "bad \ufffd half" in text, text
    said = codes(lines)
    calls = [c for c in said if c[:2] == ("call", "deepseek-chat")]
    assert len(calls) == 2, said  # both answered by the cloud, each with its call line
    assert said[-1] == ("request", None, ["GATEWAY_DONE"]), said
