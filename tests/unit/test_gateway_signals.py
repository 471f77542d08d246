"""The §3 signals a gateway request carries: the tool actions already in the conversation
counted as the policy means them, and the flags from its own settings."""

from __future__ import annotations

import pytest

from app.backends.base import ChatRequest, Message, ToolCall
from app.gateway.errors import GatewayError
from app.gateway.signals import signals_for, tool_actions
from app.policy import load_policy
from app.router.decide import fired_triggers


def loop(n: int, *, results: bool = True) -> ChatRequest:
    """A conversation ``n`` tool calls deep, each answered unless ``results`` is off."""
    messages = [Message(role="user", content="refactor the parser")]
    for i in range(n):
        call = ToolCall(id=f"call_{i}", name="read_file", arguments='{"path": "a.py"}')
        messages.append(Message(role="assistant", content="", tool_calls=[call]))
        if results:
            messages.append(Message(role="tool", tool_call_id=f"call_{i}", content="..."))
    return ChatRequest(messages=messages)


def test_a_call_and_its_result_are_one_action() -> None:
    assert tool_actions(loop(10)) == 10  # it counted 20: the "20 tool calls" fired at 10
    assert tool_actions(loop(10, results=False)) == 10
    # results whose calls were trimmed from the history still count
    kept = [m for m in loop(12).messages if not m.tool_calls]
    assert tool_actions(ChatRequest(messages=kept)) == 12


def test_the_implementer_tool_heavy_trigger_fires_at_the_policy_s_threshold() -> None:
    policy = load_policy().policy
    (heavy,) = [t for t in policy.triggers if t.id == "implementer_tool_heavy"]
    heavy_at = policy.tool_use.librarian_heavy_actions
    for n, fires in ((heavy.threshold - 1, False), (heavy.threshold, True)):
        signals = signals_for(loop(int(n)), [], user_request=False, heavy_actions=heavy_at)
        fired = [t.id for t, _ in fired_triggers(policy, "implementer", signals)]
        assert ("implementer_tool_heavy" in fired) is fires, (n, fired)


def test_tool_heavy_follows_the_policy_s_librarian_heavy_actions() -> None:
    policy = load_policy().policy
    heavy_at = policy.tool_use.librarian_heavy_actions
    assert heavy_at == 40  # the shipped policy; it was a fixed 20 in the gateway
    for n, heavy in ((heavy_at - 1, False), (heavy_at, True)):
        signals = signals_for(loop(n), [], user_request=False, heavy_actions=heavy_at)
        assert signals.tool_heavy is heavy
        fired = [t.id for t, _ in fired_triggers(policy, "librarian", signals)]
        assert ("librarian_tool_heavy" in fired) is heavy
    # a header still says it outright
    said = signals_for(loop(1), ["tool_heavy=true"], user_request=False, heavy_actions=heavy_at)
    assert said.tool_heavy is True


def test_a_signal_header_without_a_value_is_a_400() -> None:
    with pytest.raises(GatewayError) as exc:
        signals_for(loop(0), ["confidence"], user_request=False, heavy_actions=40)
    assert exc.value.status == 400 and "expected KEY=VALUE" in str(exc.value)


@pytest.mark.parametrize(
    ("value", "wants"),
    [
        (None, False),
        ("", False),
        *((v, True) for v in ("1", "true", "yes", "on", " TRUE ", "Yes")),
        *((v, False) for v in ("0", "false", "no", "off", "OFF")),
    ],
)
def test_each_spelling_of_the_escalate_header_is_read(value: str | None, wants: bool) -> None:
    signals = signals_for(loop(0), [], user_request=False, heavy_actions=40, escalate_header=value)
    assert signals.user_request is wants


@pytest.mark.parametrize("value", ["garbage", "ture", "2", "y"])
def test_an_escalate_header_that_is_none_of_its_spellings_is_a_400(value: str) -> None:
    """It was read as "off" without a word, where a bad x-switchyard-signal is a 400."""
    with pytest.raises(GatewayError) as exc:
        signals_for(loop(0), [], user_request=False, heavy_actions=40, escalate_header=value)
    assert exc.value.status == 400
    assert exc.value.message == (
        "x-switchyard-escalate: expected 1, true, yes, on (escalate) or 0, false, no, off "
        f"(do not), got {value!r}"
    )
    # a model id's +escalate does not make the header's mistake pass
    with pytest.raises(GatewayError):
        signals_for(loop(0), [], user_request=True, heavy_actions=40, escalate_header=value)


def test_a_signals_user_request_is_read_as_its_other_flags_are() -> None:
    """``user_request=garbage`` in x-switchyard-signal was read as false, where
    ``tool_heavy=garbage`` is a 400."""
    with pytest.raises(GatewayError) as exc:
        signals_for(loop(0), ["user_request=garbage"], user_request=False, heavy_actions=40)
    assert exc.value.status == 400 and "x-switchyard-signal: user_request" in exc.value.message
    for said, wants in (("user_request=true", True), ("user_request=0", False)):
        signals = signals_for(loop(0), [said], user_request=False, heavy_actions=40)
        assert signals.user_request is wants
    # the model id's +escalate, or the header, asks whatever the signal says
    signals = signals_for(loop(0), ["user_request=no"], user_request=True, heavy_actions=40)
    assert signals.user_request is True
