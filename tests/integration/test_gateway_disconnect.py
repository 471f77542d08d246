"""A client that hangs up on a request it asked for whole (not streamed) cancels it: the
backend's generation stops, and the request is audited as the client going away (499),
as a stream's is. It used to run on to its last token, hold up the requests behind it,
and be audited ``GATEWAY_DONE ok 200``. A real `switchyard serve` on loopback, a raw
socket as the client, a slow cloud fake behind it (its cancelled call leaves a ledger
line)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.openai_server import FakeOpenAIServer
from tests.integration.test_gateway import REPLY, _gateway, lines_of
from tests.reliability.kit import LOCAL_MODELS

ASKED = [{"role": "user", "content": "plan the fix"}]
#: one request per protocol, each escalated to the (slow) cloud, none streamed
WHOLE: list[tuple[str, dict[str, Any]]] = [
    ("/v1/chat/completions", {"model": "architect+escalate", "messages": ASKED}),
    ("/v1/responses", {"model": "architect+escalate", "input": "plan the fix"}),
    ("/v1/messages", {"model": "architect+escalate", "max_tokens": 300, "messages": ASKED}),
]


def _until(check: Callable[[], bool], seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def _hang_up_once_generating(url: str, path: str, body: dict[str, Any], cloud: Any) -> None:
    """Send the request, wait until the cloud is generating its reply, then close."""
    parts = urlsplit(url)
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\n\r\n"
    ).encode()
    asked_before = len(cloud.chat_requests)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head + payload)
        assert _until(lambda: len(cloud.chat_requests) > asked_before), "never reached the cloud"


def test_a_client_that_hangs_up_on_a_whole_reply_cancels_it_in_every_protocol(
    tmp_path: Path,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    fake_anthropic_factory: Callable[..., FakeAnthropicServer],
) -> None:
    # 200 words at 0.1 s each: far longer than any wait below, so only a cancel ends it
    slow = fake_openai_factory("openai", default_reply=" ".join(["word"] * 200), event_delay=0.1)
    vllm = fake_openai_factory("vllm", models=LOCAL_MODELS, default_reply=REPLY)
    for gw in _gateway(tmp_path, (vllm, slow, fake_anthropic_factory()), "--approve", "allow"):
        for n, (path, body) in enumerate(WHOLE, start=1):
            _hang_up_once_generating(gw.url, path, body, slow)

            def gone(count: int = n) -> bool:
                closing = [ln for ln in lines_of("request") if ln["values"].get("status") == 499]
                return len(closing) == count

            assert _until(gone), (path, [(ln["reason_codes"], ln["detail"]) for ln in lines_of()])
        closing = [ln for ln in lines_of("request") if ln["reason_codes"] != ["GATEWAY_REQUEST"]]
        assert [(ln["reason_codes"], ln["values"]["outcome"]) for ln in closing] == [
            (["GATEWAY_FAILED"], "client went away")
        ] * 3
        # the cloud call itself was cancelled mid-way (settled at its estimate), every time
        cancelled = [ln for ln in lines_of("budget") if "CALL_CANCELLED" in ln["reason_codes"]]
        assert [ln["to"] for ln in cancelled] == ["gpt-5.1-high"] * 3
        # and the server is free: the next request is answered
        reply = gw.openai.chat.completions.create(model="tutor", messages=ASKED)  # type: ignore[arg-type]
        assert reply.choices[0].message.content == REPLY


def test_a_client_that_hangs_up_while_sending_its_body_is_audited_not_a_500(
    tmp_path: Path,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    fake_anthropic_factory: Callable[..., FakeAnthropicServer],
) -> None:
    """Starlette's ClientDisconnect escaped the body read: a 500 with a traceback on the
    server's stderr, and no audit line."""
    vllm = fake_openai_factory("vllm", models=LOCAL_MODELS, default_reply=REPLY)
    for gw in _gateway(tmp_path, (vllm, fake_openai_factory("openai"), fake_anthropic_factory())):
        parts = urlsplit(gw.url)
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "content-type: application/json\r\ncontent-length: 100000\r\n\r\n"
        ).encode()
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
            sock.sendall(head + b'{"model": "tutor", "messages": [')  # and then it goes

        def rejected() -> bool:
            return any(ln["values"].get("status") == 499 for ln in lines_of("request"))

        assert _until(rejected), [(ln["reason_codes"], ln["detail"]) for ln in lines_of()]
        (line,) = [ln for ln in lines_of("request") if ln["values"].get("status") == 499]
        assert line["reason_codes"] == ["GATEWAY_REJECTED"] and "client went away" in line["detail"]
        gw.proc.terminate()
        _, err = gw.proc.communicate(timeout=15)
        assert "Traceback" not in err
