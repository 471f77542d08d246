"""Which stop sequence ended a reply: applied to streamed text by the in-process
backend (app/backends/stops.py), read from vLLM's and Anthropic's streams, and kept by
the gateway only when it is one the client gave (app/gateway/flow.py)."""

from __future__ import annotations

import itertools
from types import SimpleNamespace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from app.backends.anthropic_backend import _Events
from app.backends.base import Delta, ToolCall
from app.backends.openai_stream import ChunkState
from app.backends.stops import StopScanner
from app.gateway.anthropic_out import MessagesStream, message_object
from app.gateway.flow import matched_stop
from app.router.routed import RoutedResult
from app.router.types import Decision


def scan(pieces: list[str], stops: list[str]) -> tuple[str, str | None]:
    scanner = StopScanner(stops)
    out = "".join(scanner.feed(p) for p in pieces) + scanner.flush()
    return out, scanner.matched


def first_stop(text: str, stops: list[str]) -> tuple[str, str | None]:
    """What a reader that looks after every character finds: the stop that ends first
    (of two ending together, the longer, which started first)."""
    for end in range(1, len(text) + 1):
        ending = [s for s in stops if s and text[:end].endswith(s)]
        if ending:
            stop = max(ending, key=len)
            return text[: end - len(stop)], stop
    return text, None


def test_a_stop_split_across_pieces_is_found_and_never_released() -> None:
    scanner = StopScanner(["</answer>", "STOP"])
    released = [scanner.feed(p) for p in ["The fix is one", " line.</ans", "wer> and more"]]
    assert released == ["The fix is one", " line.", ""]
    assert scanner.matched == "</answer>" and scanner.flush() == ""
    assert scanner.feed("later text") == ""


def test_a_held_back_start_is_released_when_it_turns_out_not_to_be_a_stop() -> None:
    scanner = StopScanner(["</answer>"])
    assert scanner.feed("a </an") == "a "
    assert scanner.feed("d b") == "</and b"
    assert scanner.feed("</") == ""
    assert scanner.flush() == "</" and scanner.matched is None


def test_no_stops_release_everything_as_it_comes() -> None:
    scanner = StopScanner(["", ""])
    assert [scanner.feed(p) for p in ["a", "b"]] == ["a", "b"] and scanner.matched is None


@given(
    text=st.text(alphabet="ab<>/", max_size=40),
    stops=st.lists(st.text(alphabet="ab<>/", min_size=1, max_size=4), max_size=3),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=6),
)
def test_any_split_of_the_text_finds_what_a_character_reader_finds(
    text: str, stops: list[str], cuts: list[int]
) -> None:
    bounds = sorted({0, len(text), *(min(c, len(text)) for c in cuts)})
    pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]
    assert scan(pieces, stops) == first_stop(text, stops)


def result(finish: str = "stop", calls: bool = False) -> RoutedResult:
    return RoutedResult(
        text="a",
        reasoning="",
        model="m",
        runtime="llamacpp_inprocess",
        provider="local",
        tokens_in=7,
        tokens_out=3,
        usage_counted_locally=True,
        cost_usd=0.0,
        latency_ms=1.0,
        finish_reason=finish,
        decision=Decision(role="tutor", action="local", policy_version="1.0.0", target="m"),
        escalated=False,
        tool_calls=[ToolCall(id="c", name="f")] if calls else [],
    )


def test_the_gateway_keeps_a_stop_only_if_the_client_gave_it_and_the_reply_ended_there() -> None:
    assert matched_stop(result(), ["END", "x"], "END") == "END"
    assert matched_stop(result("stop_sequence"), ["END"], "END") == "END"
    assert matched_stop(result(), ["x"], "END") is None  # not the client's
    assert matched_stop(result("length"), ["END"], "END") is None  # cut at the limit
    assert matched_stop(result(calls=True), ["END"], "END") is None
    assert matched_stop(result(), ["END"], None) is None


def test_the_anthropic_reply_names_the_stop_and_counts_the_prompt_once() -> None:
    whole = message_object("msg_1", "tutor", result(), 42, "END")
    assert (whole["stop_reason"], whole["stop_sequence"]) == ("stop_sequence", "END")
    assert whole["usage"] == {"input_tokens": 42, "output_tokens": 3}
    plain = message_object("msg_1", "tutor", result(), 42)
    assert (plain["stop_reason"], plain["stop_sequence"]) == ("end_turn", None)
    stream = MessagesStream("msg_1", "tutor", 42)
    started = stream.start()[0][1]["message"]["usage"]["input_tokens"]
    ended = dict(stream.finish(result(), "", "END"))["message_delta"]
    assert ended["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}
    assert ended["usage"] == {"input_tokens": started, "output_tokens": 3}


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "choices": [{"delta": delta, "finish_reason": finish, **extra}]}


def test_vllms_stop_reason_names_the_stop_string_and_nothing_else_does() -> None:
    state = ChunkState(model="m")
    assert state.feed(chunk({"content": "a"})) == Delta(text="a")
    assert state.feed(chunk({}, "stop", stop_reason="END")) == Delta(stop_sequence="END")
    assert state.finish() == "stop"
    for other in (chunk({}, "stop", stop_reason=None), chunk({}, "stop", stop_reason=128009)):
        assert ChunkState(model="m").feed(other) is None  # the end of turn, or a stop token
    assert ChunkState(model="m").feed(chunk({}, "length", stop_reason="END")) is None


def test_anthropics_message_delta_names_the_stop_sequence() -> None:
    def delta(stop: str, sequence: str | None) -> object:
        return SimpleNamespace(
            type="message_delta",
            delta=SimpleNamespace(stop_reason=stop, stop_sequence=sequence),
            usage=SimpleNamespace(output_tokens=3),
        )

    events = _Events(model="claude")
    assert events.feed(delta("stop_sequence", "END")) == Delta(stop_sequence="END")
    assert events.finish() == "stop_sequence"
    assert _Events(model="claude").feed(delta("end_turn", None)) is None
