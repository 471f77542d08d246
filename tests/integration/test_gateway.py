"""`switchyard serve` end to end: a real server subprocess on loopback, the openai and
anthropic SDKs as real clients, loopback fakes behind it (vLLM for the local roles, the
OpenAI and Anthropic clouds), real SQLite for the audit and the ledger."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.policy import policy_pointing
from tests.reliability.kit import LOCAL_MODELS, audit_lines, closed_port

REPLY = "The loop stops one short; use range(len(tokens))."


@dataclass
class Gateway:
    url: str
    proc: subprocess.Popen[str]
    vllm: FakeOpenAIServer
    cloud: FakeOpenAIServer
    claude: FakeAnthropicServer

    @property
    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="anything", max_retries=0)

    @property
    def anthropic(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key="anything", max_retries=0)


def start_gateway(
    tmp_path: Path,
    vllm: FakeOpenAIServer,
    cloud: FakeOpenAIServer,
    claude: FakeAnthropicServer,
    *args: str,
    env: dict[str, str] | None = None,
) -> Gateway:
    policy = policy_pointing(tmp_path, openai=cloud.base_url, anthropic=claude.url)
    full_env = {
        **os.environ,
        "SWITCHYARD_VLLM_URL": vllm.base_url,
        "SWITCHYARD_LLAMACPP_SERVER_URL": f"http://127.0.0.1:{closed_port()}/v1",
        "SWITCHYARD_POLICY": str(policy),
        "OPENAI_API_KEY": "sk-gateway-test-openai-0123456789",
        "ANTHROPIC_API_KEY": "sk-ant-gateway-test-0123456789",
        **(env or {}),
    }
    # --port 0 and the address it says: a port picked free here and bound by serve a
    # second later could be taken meanwhile (another pytest-xdist worker's server)
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", "0", *args],
        env=full_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = said_until_listening(proc)[-1].split()[4]
    return Gateway(url, proc, vllm, cloud, claude)


def said_until_listening(proc: subprocess.Popen[str]) -> list[str]:
    """The lines ``switchyard serve`` wrote to its stderr up to its "listening on" line
    (the last); an AssertionError when it exits before, and its end when it has not
    listened within a minute."""
    assert proc.stderr is not None
    said: list[str] = []
    hung = threading.Timer(60, proc.kill)
    hung.start()
    try:
        while not said or "listening on" not in said[-1]:
            said.append(proc.stderr.readline())
            if not said[-1]:  # (the end of its output: serve exited)
                proc.wait(30)
                raise AssertionError(f"serve exited: {''.join(said)}{proc.stderr.read()}")
    finally:
        hung.cancel()
    return said


@pytest.fixture
def fakes(
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    fake_anthropic_factory: Callable[..., FakeAnthropicServer],
) -> tuple[FakeOpenAIServer, FakeOpenAIServer, FakeAnthropicServer]:
    vllm = fake_openai_factory("vllm", models=LOCAL_MODELS, default_reply=REPLY)
    cloud = fake_openai_factory("openai", default_reply="A plan from GPT.")
    claude = fake_anthropic_factory(default_reply="Advice from Claude.")
    return vllm, cloud, claude


def _gateway(
    tmp_path: Path, fakes: tuple[Any, Any, Any], *args: str, **kw: Any
) -> Iterator[Gateway]:
    gw = start_gateway(tmp_path, *fakes, *args, **kw)
    try:
        yield gw
    finally:
        gw.proc.terminate()
        try:
            gw.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            gw.proc.kill()


@pytest.fixture
def gw(tmp_path: Path, fakes: tuple[Any, Any, Any]) -> Iterator[Gateway]:
    yield from _gateway(tmp_path, fakes, "--approve", "deny")


@pytest.fixture
def gw_allow(tmp_path: Path, fakes: tuple[Any, Any, Any]) -> Iterator[Gateway]:
    yield from _gateway(tmp_path, fakes, "--approve", "allow")


def lines_of(kind: str | None = None) -> list[dict[str, Any]]:
    return [ln for ln in audit_lines() if kind is None or ln["kind"] == kind]


# ── the openai SDK: chat and responses ───────────────────────────────────────────────────


def test_chat_non_stream_and_stream_are_served_locally_and_audited(gw: Gateway) -> None:
    client = gw.openai
    reply = client.chat.completions.create(
        model="implementer", messages=[{"role": "user", "content": "why does parse drop one?"}]
    )
    assert reply.choices[0].message.content == REPLY
    assert reply.choices[0].finish_reason == "stop" and reply.usage and reply.usage.total_tokens > 0
    pieces, usage = [], None
    for chunk in client.chat.completions.create(
        model="implementer",
        messages=[{"role": "user", "content": "again"}],
        stream=True,
        stream_options={"include_usage": True},
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage
    assert "".join(pieces) == REPLY and len(pieces) > 1 and usage is not None
    requests = lines_of("request")
    assert [ln["reason_codes"] for ln in requests] == [["GATEWAY_REQUEST"], ["GATEWAY_DONE"]] * 2
    assert requests[0]["values"]["client"].startswith("OpenAI/Python")
    assert requests[1]["values"]["model"] == "qwen2.5-coder-32b"
    route = lines_of("route")[0]
    assert route["role"] == "implementer" and route["run"] == requests[0]["run"]
    assert gw.vllm.chat_requests[0]["model"] == "Qwen/Qwen2.5-Coder-32B-Instruct-AWQ"


def test_a_chat_reply_carries_the_models_reasoning(gw: Gateway) -> None:
    """The backend's reasoning was dropped on the way to a Chat client (an audit): it
    goes out as ``reasoning_content``, streamed and whole, before the answer."""
    from tests.fakes.script import Scripted

    client = gw.openai
    for _ in range(2):
        gw.vllm.script.queue(Scripted(text=REPLY, reasoning="the bound stops one short"))
    whole = client.chat.completions.create(
        model="implementer", messages=[{"role": "user", "content": "why?"}]
    )
    message = whole.choices[0].message
    assert message.content == REPLY
    assert getattr(message, "reasoning_content", None) == "the bound stops one short"
    thought, text = [], []
    for chunk in client.chat.completions.create(
        model="implementer", messages=[{"role": "user", "content": "why?"}], stream=True
    ):
        delta = chunk.choices[0].delta if chunk.choices else None
        if delta is not None and getattr(delta, "reasoning_content", None):
            assert not text  # the thinking comes before the answer
            thought.append(delta.reasoning_content)
        if delta is not None and delta.content:
            text.append(delta.content)
    assert "".join(thought) == "the bound stops one short" and "".join(text) == REPLY


def test_responses_non_stream_and_stream(gw: Gateway) -> None:
    client = gw.openai
    done = client.responses.create(model="auto", input="fix it", instructions="be brief")
    assert done.output_text == REPLY and done.status == "completed"
    kinds: list[str] = []
    with client.responses.stream(model="architect", input="plan it") as stream:
        for event in stream:
            kinds.append(event.type)
        final = stream.get_final_response()
    assert final.output_text == REPLY
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert "response.content_part.added" in kinds and "response.output_text.delta" in kinds
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    sent = gw.vllm.chat_requests[0]["messages"]
    assert sent[0] == {"role": "system", "content": "be brief"}


def test_a_responses_reply_cut_at_its_limit_is_incomplete_not_completed(gw: Gateway) -> None:
    """OpenAI says ``incomplete`` (reason ``max_output_tokens``) for a reply cut off at its
    limit. It was ``completed``: a client took a cut reply (a patch, say) for a whole one."""
    client = gw.openai
    cut = client.responses.create(model="auto", input="fix it", max_output_tokens=2)
    assert cut.status == "incomplete"
    assert cut.incomplete_details is not None
    assert cut.incomplete_details.reason == "max_output_tokens"
    assert cut.output_text and cut.output_text != REPLY
    with client.responses.stream(model="auto", input="fix it", max_output_tokens=2) as stream:
        kinds = [event.type for event in stream]
    assert kinds[-1] == "response.incomplete" and "response.completed" not in kinds
    whole = client.responses.create(model="auto", input="fix it")
    assert whole.status == "completed" and whole.incomplete_details is None


def test_previous_response_id_continues_within_the_server_or_is_refused(gw: Gateway) -> None:
    client = gw.openai
    first = client.responses.create(model="tutor", input="what is a closure?")
    client.responses.create(model="tutor", input="and a generator?", previous_response_id=first.id)
    sent = gw.vllm.chat_requests[-1]["messages"]
    assert [m["content"] for m in sent] == ["what is a closure?", REPLY, "and a generator?"]
    with pytest.raises(openai.BadRequestError, match="previous_response_id"):
        client.responses.create(model="tutor", input="x", previous_response_id="resp_unknown")


def test_structured_output_goes_through_the_one_owner(
    tmp_path: Path,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    fake_anthropic_factory: Callable[..., FakeAnthropicServer],
) -> None:
    vllm = fake_openai_factory(
        "vllm", models=LOCAL_MODELS, replies=["not json", json.dumps({"goal": "fix parse"})]
    )
    fakes = (vllm, fake_openai_factory("openai"), fake_anthropic_factory())
    for gw in _gateway(tmp_path, fakes, "--approve", "deny"):
        schema = {
            "type": "object",
            "properties": {"goal": {"type": "string"}},
            "required": ["goal"],
        }
        reply = gw.openai.chat.completions.create(
            model="architect",
            messages=[{"role": "user", "content": "plan"}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "plan", "schema": schema},
            },
        )
        assert json.loads(reply.choices[0].message.content or "") == {"goal": "fix parse"}
        sent = vllm.chat_requests[0]
        assert sent["structured_outputs"]["json"] == schema  # constrained decoding on vLLM
        assert [ln["reason_codes"] for ln in lines_of("repair")] == [["GR012_REPAIR"]]


def test_a_schema_with_tools_holds_the_final_answer_not_each_tool_call(
    tmp_path: Path,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    fake_anthropic_factory: Callable[..., FakeAnthropicServer],
) -> None:
    """Codex's ``--output-schema`` sends its schema and its tools on every turn: the
    schema constrained vLLM's every reply (no tool could be called), a tool call was then
    checked against the schema, repaired and refused with a 502, five times over (an
    audit with the real client). The schema is the final answer's: a reply that calls a
    tool passes as it is, and the final text is checked."""
    from tests.fakes.script import Scripted, ScriptedCall

    vllm = fake_openai_factory("vllm", models=LOCAL_MODELS)
    vllm.script.queue(Scripted(text="", tool_calls=(ScriptedCall("read_file", {"path": "a.py"}),)))
    vllm.script.queue(json.dumps({"goal": "fix parse"}))
    fakes = (vllm, fake_openai_factory("openai"), fake_anthropic_factory())
    schema = {"type": "object", "properties": {"goal": {"type": "string"}}, "required": ["goal"]}
    tools = [
        {
            "type": "function",
            "name": "read_file",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
        }
    ]
    fmt = {"format": {"type": "json_schema", "name": "out", "schema": schema}}
    for gw in _gateway(tmp_path, fakes, "--approve", "deny"):
        first = gw.openai.responses.create(
            model="implementer",
            input="plan it",
            tools=tools,
            text=fmt,  # type: ignore[arg-type]
        )
        (call,) = [item for item in first.output if item.type == "function_call"]
        assert call.name == "read_file"
        sent = vllm.chat_requests[0]
        assert "structured_outputs" not in sent and sent["tools"]  # no constraint: tools free
        assert "final answer" in sent["messages"][0]["content"]  # the schema, told
        second = gw.openai.responses.create(
            model="implementer",
            input=[
                {"type": "function_call", "call_id": call.call_id, "name": "read_file",
                 "arguments": call.arguments},
                {"type": "function_call_output", "call_id": call.call_id, "output": "x = 1"},
            ],
            tools=tools,  # type: ignore[arg-type]
            text=fmt,  # type: ignore[arg-type]
        )  # fmt: skip
        assert json.loads(second.output_text) == {"goal": "fix parse"}
        assert not lines_of("repair")


# ── the anthropic SDK ────────────────────────────────────────────────────────────────────


def test_messages_stream_non_stream_and_count_tokens(gw: Gateway) -> None:
    client = gw.anthropic
    msg = client.messages.create(
        model="claude-sonnet-4-5",  # Claude Code's own name: an alias of the implementer
        max_tokens=256,
        system=[{"type": "text", "text": "You are terse."}],
        messages=[{"role": "user", "content": "why?"}],
    )
    assert msg.content[0].type == "text" and msg.content[0].text == REPLY
    assert msg.stop_reason == "end_turn" and msg.usage.output_tokens > 0
    events: list[str] = []
    with client.messages.stream(
        model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        for event in stream:
            events.append(event.type)
        final = stream.get_final_message()
    assert final.content[0].text == REPLY  # type: ignore[union-attr]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert "content_block_delta" in events and "message_delta" in events
    served = [ln["role"] for ln in lines_of("route")]
    assert served == ["implementer", "tutor"]
    counted = client.messages.count_tokens(
        model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hello there"}]
    )
    assert counted.input_tokens > 0
    # a model no request could name is the 404 /v1/messages gives it (any name was counted)
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(
            model="gpt-4o", messages=[{"role": "user", "content": "hello there"}]
        )


def test_an_older_claude_codes_model_names_are_served_by_family(gw: Gateway) -> None:
    """``claude-3-7-sonnet-latest``, ``claude-3-5-sonnet-20241022`` and
    ``claude-3-opus-20240229`` were 404s while ``claude-3-5-haiku*`` was served: an older
    Claude Code's ``/model`` choice failed (a user audit). Each is its family's role."""
    client = gw.anthropic
    names = ["claude-3-7-sonnet-latest", "claude-3-5-sonnet-20241022", "claude-3-opus-20240229"]
    for name in names:
        msg = client.messages.create(
            model=name, max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )
        assert msg.model == name and msg.content[0].text == REPLY  # type: ignore[union-attr]
        assert client.models.retrieve(name).id == name
    assert [ln["role"] for ln in lines_of("route")] == ["implementer", "implementer", "architect"]


# ── translation across protocols, with approvals ─────────────────────────────────────────


def test_an_openai_client_reaches_the_anthropic_cloud_and_back(gw_allow: Gateway) -> None:
    """Chat Completions in, Anthropic Messages out (the tutor escalates to Haiku on the
    user's request: the model id's suffix), with the approval and the budget audited."""
    reply = gw_allow.openai.chat.completions.create(
        model="tutor+escalate", messages=[{"role": "user", "content": "explain closures"}]
    )
    assert reply.choices[0].message.content == "Advice from Claude."
    sent = gw_allow.claude.requests[-1]
    assert sent.path.startswith("/v1/messages") and sent.json["model"] == "claude-haiku-4-5"
    kinds = [ln["kind"] for ln in lines_of()]
    assert "escalation" in kinds and "approval" in kinds and "call" in kinds
    call = next(ln for ln in lines_of("call") if ln["to"] == "claude-haiku-4.5")
    assert call["values"]["cost_usd"] > 0


def test_an_anthropic_client_reaches_the_openai_cloud_and_back(gw_allow: Gateway) -> None:
    msg = gw_allow.anthropic.messages.create(
        model="architect",
        max_tokens=300,
        messages=[{"role": "user", "content": "plan the fix"}],
        extra_headers={"x-switchyard-signal": "confidence=0.5"},
    )
    assert msg.content[0].text == "A plan from GPT."  # type: ignore[union-attr]
    assert gw_allow.cloud.chat_requests[-1]["model"] == "gpt-5.1"
    # the reservation covered the client's max_tokens, and was settled from the usage
    escalation = lines_of("escalation")[0]
    assert "ARCHITECT_LOW_CONFIDENCE" in escalation["reason_codes"]


def test_each_signal_header_counts_when_the_header_is_sent_twice(gw_allow: Gateway) -> None:
    """``x-switchyard-signal`` is repeatable: the second header was dropped (the first
    said 0.9, the second asked for the cloud, and the request stayed local)."""
    with httpx.Client(base_url=gw_allow.url, timeout=60) as http:
        reply = http.post(
            "/v1/chat/completions",
            json={"model": "architect", "messages": [{"role": "user", "content": "plan"}]},
            headers=[
                ("x-switchyard-signal", "confidence=0.9"),
                ("x-switchyard-signal", "user_request=true"),
            ],
        )
    assert reply.status_code == 200
    assert reply.json()["choices"][0]["message"]["content"] == "A plan from GPT."
    (escalation,) = lines_of("escalation")
    assert "USER_REQUEST" in escalation["reason_codes"]
    assert escalation["values"]["inputs"]["signals"]["user_request"] is True
    assert escalation["values"]["inputs"]["signals"]["confidence"] == 0.9


def test_a_clients_context_estimate_raises_the_count_but_never_lowers_it(
    gw_allow: Gateway,
) -> None:
    """The router prices a call and reserves the budget on ``context_estimate``: a
    client's ``context_estimate=1`` let a 91k-token prompt past a $0.01 cap and past the
    window's check (an audit found it). The client may still raise it."""
    prompt = "plan the fix for the parser's loop bound " * 40
    with httpx.Client(base_url=gw_allow.url, timeout=60) as http:
        for path, body in (
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": prompt}]}),
            ("/v1/messages", {"max_tokens": 50, "messages": [{"role": "user", "content": prompt}]}),
        ):
            for said in ("1", "500000"):
                reply = http.post(
                    path,
                    json={"model": "architect", **body},
                    headers={"x-switchyard-signal": f"context_estimate={said},confidence=0.9"},
                )
                assert reply.status_code == 200, reply.text
    served = [ln for ln in lines_of("route") if ln["role"] == "architect"]
    estimates = [ln["values"]["inputs"]["signals"]["context_estimate"] for ln in served]
    assert len(estimates) == 4, estimates
    low_chat, high_chat, low_messages, high_messages = estimates
    assert low_chat > 300 and low_messages > 300  # the prompt's own count, not 1
    assert high_chat == high_messages == 500000


def test_a_responses_client_reaches_the_anthropic_cloud(gw_allow: Gateway) -> None:
    done = gw_allow.openai.responses.create(
        model="tutor", input="why?", extra_headers={"x-switchyard-escalate": "1"}
    )
    assert done.output_text == "Advice from Claude."


def test_headless_deny_serves_the_escalation_locally(gw: Gateway) -> None:
    raw = gw.anthropic.messages.with_raw_response.create(
        model="architect+escalate", max_tokens=100, messages=[{"role": "user", "content": "x"}]
    )
    msg = raw.parse()
    assert msg.content[0].text == REPLY  # type: ignore[union-attr]
    assert gw.cloud.chat_requests == [] and gw.claude.requests == []
    assert [ln["kind"] for ln in lines_of("denial")]
    # the body names the id asked for; the headers say who served it (the client asked
    # for the cloud and could not tell it was served locally)
    assert msg.model == "architect+escalate"
    assert raw.headers["x-switchyard-escalated"] == "false"
    assert raw.headers["x-switchyard-runtime"] != "cloud" and raw.headers["x-switchyard-model"]


def test_a_whole_reply_says_who_served_it(gw_allow: Gateway) -> None:
    ask = {"messages": [{"role": "user", "content": "x"}]}
    raw = gw_allow.openai.chat.completions.with_raw_response.create(
        model="architect+escalate", **ask
    )
    assert raw.parse().choices[0].message.content == "A plan from GPT."
    (call,) = [ln for ln in lines_of("call") if ln["role"] == "architect"]
    assert raw.headers["x-switchyard-escalated"] == "true"
    assert raw.headers["x-switchyard-model"] == call["to"]
    assert raw.headers["x-switchyard-runtime"] == "cloud"
    raw = gw_allow.openai.responses.with_raw_response.create(model="implementer", input="x")
    assert raw.headers["x-switchyard-escalated"] == "false"


def test_local_only_holds_for_every_route(tmp_path: Path, fakes: tuple[Any, Any, Any]) -> None:
    for gw in _gateway(tmp_path, fakes, "--approve", "allow", "--local-only"):
        for model in ("architect+escalate", "tutor+escalate", "implementer+escalate"):
            reply = gw.openai.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "x"}]
            )
            assert reply.choices[0].message.content == REPLY
        assert gw.cloud.chat_requests == [] and gw.claude.requests == []
        skips = [ln for ln in lines_of("skip") if "SKIP_LOCAL_ONLY" in ln["reason_codes"]]
        assert skips


# ── faults ───────────────────────────────────────────────────────────────────────────────


def test_a_cloud_429_is_retried_and_a_cut_stream_moves_on(gw_allow: Gateway) -> None:
    gw_allow.cloud.fail_next("429", 1, retry_after=0)
    reply = gw_allow.openai.chat.completions.create(
        model="architect+escalate", messages=[{"role": "user", "content": "x"}]
    )
    assert reply.choices[0].message.content == "A plan from GPT."
    assert any("RETRY_RATE_LIMITED" in ln["reason_codes"] for ln in lines_of("retry"))
    gw_allow.cloud.fail_next("500", 5)
    reply = gw_allow.openai.chat.completions.create(
        model="architect+escalate", messages=[{"role": "user", "content": "y"}]
    )
    # GPT failed on every try: the chain's next step (DeepSeek) has no key, so the
    # architect is served locally, every move audited
    assert reply.choices[0].message.content == REPLY
    skipped = [ln for ln in lines_of("skip") if "SKIP_FAILED" in ln["reason_codes"]]
    assert skipped and skipped[0]["to"] == "gpt-5.1-high"


def test_a_client_that_disconnects_mid_stream_cancels_and_settles(
    tmp_path: Path,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    fake_anthropic_factory: Callable[..., FakeAnthropicServer],
) -> None:
    slow = fake_openai_factory("openai", default_reply=" ".join(["word"] * 60), event_delay=0.1)
    vllm = fake_openai_factory("vllm", models=LOCAL_MODELS, default_reply=REPLY)
    for gw in _gateway(tmp_path, (vllm, slow, fake_anthropic_factory()), "--approve", "allow"):

        async def go(url: str) -> None:
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                body = {
                    "model": "architect+escalate",
                    "stream": True,
                    "messages": [{"role": "user", "content": "plan"}],
                }
                async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
                    async for line in resp.aiter_lines():
                        if '"content"' in line:
                            break  # the first token: hang up

        asyncio.run(go(gw.url))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            closing = [ln for ln in lines_of("request") if ln["values"].get("status") == 499]
            if closing:
                break
            time.sleep(0.1)
        assert closing and closing[0]["values"]["outcome"] == "client went away", [
            (ln["kind"], ln["reason_codes"], ln["detail"]) for ln in lines_of()
        ]
        budget = [ln for ln in lines_of("budget") if "CALL_CANCELLED" in ln["reason_codes"]]
        assert budget and budget[0]["to"] == "gpt-5.1-high"


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_stopping_the_server_mid_stream_closes_and_settles_the_request(
    tmp_path: Path,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    fake_anthropic_factory: Callable[..., FakeAnthropicServer],
    signal_name: str,
) -> None:
    """Ctrl-C with a stream in flight: the server waited for the stream to end (a minute
    and more), and a second Ctrl-C ended it with tracebacks ("the audit log is closed"),
    no closing line, and the cloud reservation left to expire at its full estimate."""
    import signal
    import threading

    slow = fake_openai_factory("openai", default_reply=" ".join(["word"] * 600), event_delay=0.1)
    vllm = fake_openai_factory("vllm", models=LOCAL_MODELS, default_reply=REPLY)
    for gw in _gateway(tmp_path, (vllm, slow, fake_anthropic_factory()), "--approve", "allow"):
        streaming = threading.Event()
        seen: list[str] = []

        def client(url: str, streaming: threading.Event, seen: list[str]) -> None:
            body = {
                "model": "architect+escalate",
                "stream": True,
                "messages": [{"role": "user", "content": "plan"}],
            }
            try:
                with (
                    httpx.Client(base_url=url, timeout=60) as http,
                    http.stream("POST", "/v1/chat/completions", json=body) as resp,
                ):
                    for line in resp.iter_lines():
                        seen.append(line)
                        if '"content"' in line:
                            streaming.set()
            except httpx.HTTPError:
                pass  # the server went away: what the client sees is not the point here

        reader = threading.Thread(target=client, args=(gw.url, streaming, seen), daemon=True)
        reader.start()
        assert streaming.wait(30), "the stream never started"
        gw.proc.send_signal(getattr(signal, signal_name))
        _, err = gw.proc.communicate(timeout=30)
        # stopped as the signal says, once the session is closed: 128 + the signal
        assert gw.proc.returncode == 128 + getattr(signal, signal_name), err
        assert f"switchyard serve: stopped ({signal_name})" in err
        assert "Traceback" not in err and "is closed" not in err, err
        reader.join(10)
        # the pieces came every 0.1 s: no keep-alive is due, and the stop sent one just
        # before its error event (an audit)
        assert not [line for line in seen if line.startswith(": keep-alive")], seen[-5:]
        closing = [ln for ln in lines_of("request") if ln["values"].get("status") == 503]
        assert len(closing) == 1, [(ln["kind"], ln["detail"]) for ln in lines_of()]
        assert closing[0]["values"]["outcome"] == "error: the server is stopping"
        settled = [ln for ln in lines_of("budget") if "CALL_CANCELLED" in ln["reason_codes"]]
        assert len(settled) == 1 and settled[0]["to"] == "gpt-5.1-high"
        assert not lines_of("retry")


def test_ctrl_c_on_an_idle_server_stops_it(tmp_path: Path, fakes: tuple[Any, Any, Any]) -> None:
    """With no request served yet, Ctrl-C cancelled the closing of the session's stores
    half-way: the process hung on the database's thread, and a second Ctrl-C ended it
    with a traceback."""
    import signal

    for gw in _gateway(tmp_path, fakes, "--approve", "deny"):
        time.sleep(0.5)
        gw.proc.send_signal(signal.SIGINT)
        _, err = gw.proc.communicate(timeout=30)
        assert gw.proc.returncode == 130, err
        assert "Traceback" not in err and "switchyard serve: stopped (SIGINT)" in err


# ── abuse ────────────────────────────────────────────────────────────────────────────────


def test_off_loopback_without_a_token_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "needs a token" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_token_is_required_of_every_request_when_set(
    tmp_path: Path, fakes: tuple[Any, Any, Any]
) -> None:
    for gw in _gateway(tmp_path, fakes, "--approve", "deny", "--token", "s3cret-token-0001"):
        with pytest.raises(openai.AuthenticationError):
            gw.openai.chat.completions.create(
                model="tutor", messages=[{"role": "user", "content": "x"}]
            )
        with pytest.raises(anthropic.AuthenticationError):
            gw.anthropic.messages.create(
                model="tutor", max_tokens=10, messages=[{"role": "user", "content": "x"}]
            )
        ok = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="s3cret-token-0001")
        assert ok.chat.completions.create(
            model="tutor", messages=[{"role": "user", "content": "x"}]
        )
        ok2 = anthropic.Anthropic(base_url=gw.url, api_key="s3cret-token-0001")
        assert ok2.messages.create(
            model="tutor", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
        assert "s3cret-token-0001" not in json.dumps(audit_lines())
        with httpx.Client(base_url=gw.url, timeout=60) as http:
            body = {
                "model": "tutor",
                "max_tokens": 10,
                "messages": [{"role": "user", "content": "x"}],
            }
            # Claude Code with ANTHROPIC_API_KEY in the shell and the gateway's token as
            # ANTHROPIC_AUTH_TOKEN sends both: the key alone was compared
            both = {"x-api-key": "sk-ant-other", "authorization": "Bearer s3cret-token-0001"}
            assert http.post("/v1/messages", json=body, headers=both).status_code == 200
            # a wrong token is final: said so, or Claude Code retries it for minutes
            wrong = http.post("/v1/messages", json=body, headers={"x-api-key": "nope"})
            assert wrong.status_code == 401 and wrong.headers["x-should-retry"] == "false"


def test_bad_input_gets_each_protocols_error_shape(
    tmp_path: Path, fakes: tuple[Any, Any, Any]
) -> None:
    for gw in _gateway(tmp_path, fakes, "--approve", "deny", "--max-body-mb", "0.01"):
        with httpx.Client(base_url=gw.url, timeout=10) as http:
            big = http.post("/v1/chat/completions", content=b"x" * 20_000)
            assert big.status_code == 413 and big.json()["error"]["type"] == "invalid_request_error"
            bad = http.post("/v1/messages", content=b"{not json")
            assert bad.status_code == 400 and bad.json()["type"] == "error"
            assert bad.json()["error"]["type"] == "invalid_request_error"
            unknown = http.post(
                "/v1/chat/completions",
                json={"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]},
            )
            assert unknown.status_code == 404
            message = unknown.json()["error"]["message"]
            assert (
                "architect" in message and "implementer" in message and "claude-sonnet*" in message
            )
            image = http.post(
                "/v1/messages",
                json={
                    "model": "tutor",
                    "max_tokens": 10,
                    "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}],
                },
            )
            assert (
                image.status_code == 400
                and "'image' is not supported" in image.json()["error"]["message"]
            )
            # a misspelt type: the grammar and the check after would have accepted anything
            typo = http.post(
                "/v1/chat/completions",
                json={
                    "model": "tutor",
                    "messages": [{"role": "user", "content": "x"}],
                    "response_format": {
                        "type": "json_schema",
                        "json_schema": {"name": "t", "schema": {"type": "objet"}},
                    },
                },
            )
            assert typo.status_code == 400
            assert typo.json()["error"]["message"].startswith(
                "response_format.json_schema.schema.type: 'objet' is not a JSON schema type"
            )
            # n choices would be n routed requests: refused, not answered with one
            many = http.post(
                "/v1/chat/completions",
                json={"model": "tutor", "n": 3, "messages": [{"role": "user", "content": "x"}]},
            )
            assert many.status_code == 400
            assert "serves one choice per request (got 3)" in many.json()["error"]["message"]
        assert gw.vllm.chat_requests == []
        rejected = [ln for ln in lines_of("request") if "GATEWAY_REJECTED" in ln["reason_codes"]]
        assert [ln["values"]["status"] for ln in rejected] == [413, 400, 404, 400, 400, 400]


def test_a_prompt_too_long_for_every_model_is_a_400_to_shorten_not_a_503_to_retry(
    gw: Gateway,
) -> None:
    """vLLM's fake refuses the prompt for its size and the real embedded model counts it
    past its 8192 tokens: each protocol gets its own 'too long', streamed or not, as an
    HTTP 400 before any output (Codex and Claude Code then stop and say so; on a 503 they
    retried for a minute and blamed the server)."""
    gw.vllm.fail_next("context_length", 6, path="/v1/chat/completions")
    long = "tokens " * 9_000
    asked = [{"role": "user", "content": long}]
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as chat:
            gw.openai.chat.completions.create(model="architect", messages=asked, stream=stream)  # type: ignore[call-overload]
        assert chat.value.code == "context_length_exceeded"
        assert "prompt is too long" in chat.value.message
        assert "the window is 8192" in chat.value.message
    schema = {"type": "object", "properties": {"goal": {"type": "string"}}}
    with pytest.raises(openai.BadRequestError) as structured:  # the structured owner's path
        gw.openai.chat.completions.create(
            model="architect",
            messages=asked,  # type: ignore[arg-type]
            response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}},
        )
    assert structured.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as responses:  # Codex's stream
        gw.openai.responses.create(model="architect", input=long, stream=True)
    assert responses.value.code == "context_length_exceeded"
    for stream in (False, True):
        with pytest.raises(anthropic.BadRequestError) as messages:
            gw.anthropic.messages.create(
                model="architect",
                max_tokens=10,
                messages=asked,  # type: ignore[arg-type]
                stream=stream,  # type: ignore[call-overload]
            )
        error = messages.value.body["error"]  # type: ignore[index]
        assert error["type"] == "invalid_request_error"
        assert error["message"].startswith("prompt is too long")
    failed = [ln for ln in lines_of("request") if "GATEWAY_FAILED" in ln["reason_codes"]]
    assert [ln["values"]["status"] for ln in failed] == [400] * 6
    assert len(gw.vllm.chat_requests) == 6


def test_a_stream_cut_after_its_first_words_is_not_retried_into_the_same_reply(
    gw_allow: Gateway,
) -> None:
    """The client held part of GPT's reply when its stream broke: the retry and then the
    chain's next steps went on in the same stream (the text twice, tool calls spliced
    into one). Now the reply ends there with an error event; a non-streamed request,
    whose reply nobody has seen yet, is still retried."""
    gw_allow.cloud.fail_next("cut_stream", 1, after=3)  # the role chunk and two words
    body = {
        "model": "architect+escalate",
        "stream": True,
        "messages": [{"role": "user", "content": "plan"}],
    }
    with (
        httpx.Client(base_url=gw_allow.url, timeout=60) as http,
        http.stream("POST", "/v1/chat/completions", json=body) as resp,
    ):
        assert resp.status_code == 200
        events = [ln[6:] for ln in resp.iter_lines() if ln.startswith("data: ")]
    chunks = [json.loads(e) for e in events if e != "[DONE]"]
    text = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")
    )
    assert text == "A plan ", text  # once, and nothing after it
    (error,) = [c["error"] for c in chunks if "error" in c]
    assert "failed after part of its reply was sent" in error["message"]
    assert events[-1] == "[DONE]"
    assert not lines_of("retry") and len(gw_allow.cloud.chat_requests) == 1
    (settled,) = [ln for ln in lines_of("budget") if "STREAM_BROKEN" in ln["reason_codes"]]
    assert settled["to"] == "gpt-5.1-high"
    assert not gw_allow.vllm.chat_requests  # no local step took the reply over
    # not streamed: the reply is whole before anyone reads it, so the cut is retried
    gw_allow.cloud.fail_next("cut_stream", 1, after=3)
    reply = gw_allow.openai.chat.completions.create(
        model="architect+escalate", messages=[{"role": "user", "content": "plan"}]
    )
    assert reply.choices[0].message.content == "A plan from GPT."
    assert any("RETRY_SERVER_ERROR" in ln["reason_codes"] for ln in lines_of("retry"))


def test_a_port_in_use_is_refused_before_a_session_opens(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Headless, the bind failed after the session had opened: uvicorn's own ERROR line
    and exit 3 under a "session …" line."""
    from app.cli.main import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"switchyard: --port {port}: cannot listen")
    # any free port on an address not this machine's (numeric: no name lookup): it was
    # uvicorn's error and exit 3
    token = "s3cret-token-0003-of-16-or-more"  # (off loopback a token needs 16 or more)
    assert main(["serve", "--host", "192.0.2.1", "--token", token, "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("switchyard: --host 192.0.2.1: cannot listen")


def test_the_banner_says_what_becomes_of_an_escalation(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server left to ask with no terminal (nohup, systemd) denied every escalation
    ("no terminal") without having said so."""
    from app.cli.serve_cmd import serving_terms

    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    assert "every escalation is denied" in serving_terms(False, "ask", "the default")
    assert "local_only is off" in serving_terms(False, "ask", "the default")
    assert serving_terms(True, "allow", "--approve allow").endswith(
        "local_only is on: no request leaves this machine"
    )
    said = serving_terms(False, "allow", "SWITCHYARD_APPROVE=allow")
    assert said.endswith(
        "local_only is off: escalations are allowed (SWITCHYARD_APPROVE=allow), inside the budget"
    )
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    # a line is read: "by keypress" left a "y" typed alone waiting until its timeout
    said = serving_terms(False, "ask", "the default")
    assert "asked here, each answered with a letter and Enter (the default)" in said


def test_a_web_page_cannot_drive_a_gateway_without_a_token(
    tmp_path: Path, fakes: tuple[Any, Any, Any]
) -> None:
    """A page's POST (``text/plain``: no preflight) spent the budget under the session's
    approval, and a name rebound to 127.0.0.1 let it read the reply (an audit found it).
    A browser says ``Origin`` on every POST and the page's name in ``Host``; the CLI
    clients send neither. With a token the token is the guard."""
    body = json.dumps({"model": "tutor+escalate", "messages": [{"role": "user", "content": "x"}]})
    port = None
    for gw in _gateway(tmp_path, fakes, "--approve", "allow"):
        port = gw.url.rsplit(":", 1)[1]
        with httpx.Client(base_url=gw.url, timeout=60) as http:
            for headers in (
                {"origin": "http://evil.example", "content-type": "text/plain"},
                {"origin": "null"},
                {"origin": "https://127.0.0.1.evil.example"},
                {"host": f"rebound.evil.example:{port}"},
                {"host": "localhost.evil.example"},
                {"host": "127.1.evil.example"},
                {"host": f"1.2.3.4 evil.example:{port}"},
            ):
                refused = http.post("/v1/chat/completions", content=body, headers=headers)
                assert refused.status_code == 403, (headers, refused.text)
                assert "refused" in refused.json()["error"]["message"], refused.text
            assert http.get("/v1/models", headers={"host": "rebound.example"}).status_code == 403
            assert gw.claude.requests == [] and gw.cloud.chat_requests == []
            assert not lines_of("escalation")
            # this machine's own pages and names are served, as are the SDKs
            for headers in (
                {"origin": "http://localhost:3000"},
                {"host": f"localhost:{port}"},
                {"host": f"127.0.0.1:{port}"},
                {"host": f"[::1]:{port}"},
                {"host": f"127.1:{port}"},  # as curl sends http://127.1:PORT
                {"host": f"0x7f000001:{port}"},
            ):
                ok = http.post("/v1/chat/completions", content=body, headers=headers)
                assert ok.status_code == 200, (headers, ok.text)
    for gw in _gateway(tmp_path, fakes, "--approve", "deny", "--token", "s3cret-token-0002"):
        with httpx.Client(base_url=gw.url, timeout=60) as http:
            headers = {"origin": "http://tool.example", "authorization": "Bearer s3cret-token-0002"}
            ok = http.post("/v1/chat/completions", content=body, headers=headers)
            assert ok.status_code == 200, ok.text


def test_a_request_without_an_output_cap_gets_its_roles(gw: Gateway) -> None:
    """aider sends no max_tokens: every role got 4,096 (a Tutor's answer ran 3m20s on the
    embedded model, and a cloud call was priced on it). The role's max_output_tokens is
    sent, on Chat and Responses; a cap the client gives is kept."""
    from app.policy import load_policy

    policy = load_policy().policy
    gw.openai.chat.completions.create(
        model="tutor", messages=[{"role": "user", "content": "what is a monad?"}]
    )
    gw.openai.responses.create(model="implementer", input="fix the loop")
    gw.openai.chat.completions.create(
        model="tutor", messages=[{"role": "user", "content": "and a functor?"}], max_tokens=77
    )
    caps = [r.get("max_tokens") or r.get("max_completion_tokens") for r in gw.vllm.chat_requests]
    assert caps == [
        policy.roles["tutor"].max_output_tokens,
        policy.roles["implementer"].max_output_tokens,
        77,
    ]
    assert 4096 not in caps[:2]  # (neither role's cap is the old default)


def test_a_coding_agents_output_cap_is_fitted_to_the_local_window(gw: Gateway) -> None:
    """Claude Code asks for max_tokens 32000 (128000 for Opus); vLLM refuses a prompt and
    a cap that pass its window, and that refusal read as "prompt too long" on every model
    (an audit). The cap sent is what the window leaves, said in the route line."""
    with gw.anthropic.messages.stream(  # (streamed, as Claude Code asks)
        model="claude-sonnet-4-6",
        max_tokens=32000,
        # a system prompt and tools as long as an agent's: with 32000 more, past 32768
        system="You are a coding agent. " + "Follow the repository's conventions. " * 400,
        messages=[{"role": "user", "content": "why does parse drop the last token?"}],
    ) as stream:
        assert stream.get_final_text() == REPLY
    sent = gw.vllm.chat_requests[-1]
    cap = sent.get("max_tokens") or sent.get("max_completion_tokens")
    assert 0 < cap < 32000 and cap <= gw.vllm.max_model_len
    (route,) = lines_of("route")
    assert route["values"]["max_tokens"] == {"asked": 32000, "sent": cap}
