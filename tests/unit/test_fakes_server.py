"""The fake servers' machinery: lifecycle, recording, and every fault kind."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime

import httpx
import pytest

from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.server import FAULT_KINDS, REDACTED

pytest_plugins = ["tests.fakes.fixtures"]

CHAT = "/v1/chat/completions"


def _chat_body(stream: bool = False) -> dict[str, object]:
    return {
        "model": "Qwen/Qwen2.5-Coder-32B-Instruct-AWQ",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
    }


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=2.0, trust_env=False) as c:
        yield c


def test_binds_loopback_on_a_free_port_and_stops() -> None:
    server = FakeOpenAIServer("vllm").start()
    try:
        assert server.host == "127.0.0.1" and server.port > 0
        assert httpx.get(server.url + "/health", trust_env=False).status_code == 200
    finally:
        server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/health", trust_env=False, timeout=1.0)


async def test_async_context_manager() -> None:
    async with FakeOpenAIServer("llamacpp") as server, httpx.AsyncClient(trust_env=False) as c:
        assert (await c.get(server.url + "/health")).json() == {"status": "ok"}


def test_records_requests_with_auth_values_redacted(
    fake_openai: FakeOpenAIServer, client: httpx.Client
) -> None:
    client.post(
        fake_openai.base_url + "/chat/completions",
        json={"model": "gpt-5.1", "messages": [{"role": "user", "content": "x"}]},
        headers={"Authorization": "Bearer sk-very-secret"},
    )
    rec = fake_openai.last
    assert (rec.method, rec.path) == ("POST", CHAT)
    assert rec.headers["authorization"] == REDACTED
    assert "sk-very-secret" not in repr(fake_openai.requests)
    assert rec.json["model"] == "gpt-5.1"
    assert fake_openai.requests_to(CHAT, "post") == [rec]


def test_fail_next_counts_and_path_filter(
    fake_vllm: FakeOpenAIServer, client: httpx.Client
) -> None:
    fake_vllm.fail_next("500", times=2, path=CHAT)
    assert client.get(fake_vllm.url + "/health").status_code == 200  # other path: untouched
    assert fake_vllm.pending_faults == 2
    url = fake_vllm.base_url + "/chat/completions"
    codes = [client.post(url, json=_chat_body()).status_code for _ in range(3)]
    assert codes == [500, 500, 200]
    assert [r.fault for r in fake_vllm.requests] == [None, "500", "500", None]


def test_unknown_fault_is_refused(fake_vllm: FakeOpenAIServer) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        fake_vllm.fail_next("explode")
    assert "cut_stream" in FAULT_KINDS


@pytest.mark.parametrize(
    "code", ["500", "502", "503", "504", "529", "400", "401", "403", "404", "413", "422"]
)
def test_status_faults(fake_vllm: FakeOpenAIServer, client: httpx.Client, code: str) -> None:
    fake_vllm.fail_next(code)
    reply = client.post(fake_vllm.base_url + "/chat/completions", json=_chat_body())
    assert reply.status_code == int(code)
    assert reply.json()["object"] == "error"


def test_429_retry_after_seconds_date_and_ms(
    fake_openai: FakeOpenAIServer, client: httpx.Client
) -> None:
    url = fake_openai.base_url + "/models"
    fake_openai.fail_next("429", retry_after=7)
    assert client.get(url).headers["retry-after"] == "7"
    fake_openai.fail_next("429", retry_after=30, retry_after_date=True)
    when = parsedate_to_datetime(client.get(url).headers["retry-after"])
    assert 25 <= when.timestamp() - time.time() <= 31
    fake_openai.fail_next("429", retry_after=None, retry_after_ms=1500)
    headers = client.get(url).headers
    assert "retry-after" not in headers and headers["retry-after-ms"] == "1500"


def test_slow_first_byte_delays_headers(fake_vllm: FakeOpenAIServer, client: httpx.Client) -> None:
    fake_vllm.fail_next("slow_first_byte", seconds=0.3)
    t0 = time.monotonic()
    assert client.get(fake_vllm.url + "/health").status_code == 200
    assert time.monotonic() - t0 >= 0.3


def test_slow_first_byte_beyond_timeout(fake_vllm: FakeOpenAIServer) -> None:
    fake_vllm.fail_next("slow_first_byte", seconds=1.0)
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(fake_vllm.url + "/health", timeout=0.2, trust_env=False)


def test_cut_stream_sends_some_events_then_drops(
    fake_vllm: FakeOpenAIServer, client: httpx.Client
) -> None:
    fake_vllm.fail_next("cut_stream", after=2)
    lines: list[str] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        client.stream("POST", fake_vllm.base_url + "/chat/completions", json=_chat_body(True)) as r,
    ):
        for line in r.iter_lines():
            if line:
                lines.append(line)
    assert len(lines) == 2 and "[DONE]" not in lines[-1]


def test_cut_non_stream_body(fake_vllm: FakeOpenAIServer, client: httpx.Client) -> None:
    fake_vllm.fail_next("cut_stream")
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(fake_vllm.base_url + "/chat/completions", json=_chat_body())


def test_stall_goes_quiet_mid_stream(fake_vllm: FakeOpenAIServer) -> None:
    fake_vllm.fail_next("stall", after=1, seconds=1.0)
    seen: list[str] = []
    with (
        httpx.Client(timeout=0.3, trust_env=False) as c,
        pytest.raises(httpx.ReadTimeout),
        c.stream("POST", fake_vllm.base_url + "/chat/completions", json=_chat_body(True)) as r,
    ):
        for line in r.iter_lines():
            if line:
                seen.append(line)
    assert len(seen) == 1


def test_reset_closes_without_a_byte(fake_vllm: FakeOpenAIServer, client: httpx.Client) -> None:
    fake_vllm.fail_next("reset")
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        client.get(fake_vllm.url + "/health")
    assert client.get(fake_vllm.url + "/health").status_code == 200


def test_invalid_json_body_and_stream_event(
    fake_vllm: FakeOpenAIServer, client: httpx.Client
) -> None:
    fake_vllm.fail_next("invalid_json")
    reply = client.post(fake_vllm.base_url + "/chat/completions", json=_chat_body())
    assert reply.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        reply.json()
    fake_vllm.fail_next("invalid_json", after=1)
    with client.stream(
        "POST", fake_vllm.base_url + "/chat/completions", json=_chat_body(True)
    ) as r:
        data = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    json.loads(data[0])
    with pytest.raises(json.JSONDecodeError):
        json.loads(data[1])


def test_undecodable_body_and_stream_event(
    fake_vllm: FakeOpenAIServer, client: httpx.Client
) -> None:
    fake_vllm.fail_next("undecodable")
    reply = client.post(fake_vllm.base_url + "/chat/completions", json=_chat_body())
    assert reply.status_code == 200
    with pytest.raises(UnicodeDecodeError):
        reply.content.decode("utf-8")
    fake_vllm.fail_next("undecodable", after=1, form="nested")
    with client.stream(
        "POST", fake_vllm.base_url + "/chat/completions", json=_chat_body(True)
    ) as r:
        events = r.read().split(b"\n\n")
    json.loads(events[0].removeprefix(b"data: "))
    with pytest.raises(RecursionError):
        json.loads(events[1].removeprefix(b"data: "))
    assert events[-2] == b"data: [DONE]"  # (the rest of the stream as it was)


def test_hang_answers_nothing_until_the_client_gives_up(fake_vllm: FakeOpenAIServer) -> None:
    fake_vllm.fail_next("hang")
    with httpx.Client(timeout=0.3, trust_env=False) as c, pytest.raises(httpx.ReadTimeout):
        c.post(fake_vllm.base_url + "/chat/completions", json=_chat_body())
    assert [r.fault for r in fake_vllm.requests] == ["hang"]
    with httpx.Client(timeout=2.0, trust_env=False) as c:  # the next request is answered
        assert c.post(fake_vllm.base_url + "/chat/completions", json=_chat_body()).is_success


def test_down_refuses_connections_until_up(
    fake_vllm: FakeOpenAIServer, client: httpx.Client
) -> None:
    assert client.get(fake_vllm.url + "/health").status_code == 200  # a pooled connection
    fake_vllm.fail_next("down")
    assert fake_vllm.is_down
    with pytest.raises(httpx.ConnectError):
        client.get(fake_vllm.url + "/health")
    fake_vllm.up()
    assert client.get(fake_vllm.url + "/health").status_code == 200
