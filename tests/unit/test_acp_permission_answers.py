"""A client's answer to an escalation's permission request that cannot be read: the
request is denied, and the denial says what was wrong in one line (pydantic's report,
with its input and a link, went into the audit line and the editor: an ACP audit)."""

from __future__ import annotations

from typing import Any

import pytest
from acp.schema import RequestPermissionResponse
from pydantic import ValidationError

from app.acp.permissions import AcpDecider, client_failure
from app.router.approvals import ApprovalRequest


def _invalid(payload: dict[str, Any]) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        RequestPermissionResponse.model_validate(payload)
    return caught.value


def test_an_answer_of_the_wrong_shape_is_named_by_its_field_in_one_line() -> None:
    said = client_failure(_invalid({}))
    assert said == "its answer is not a permission response (outcome: field required)"
    assert "\n" not in said and "pydantic.dev" not in said
    assert client_failure(RuntimeError("gone\nsecond line")) == "RuntimeError: gone"
    assert client_failure(ConnectionResetError()) == "ConnectionResetError"


async def test_a_malformed_answer_denies_and_says_why_in_one_line() -> None:
    sent: list[Any] = []

    async def ask(**_: Any) -> Any:
        raise _invalid({})

    async def send(update: Any) -> None:
        sent.append(update)

    async def flush() -> None:
        return None

    decider = AcpDecider(ask, send, "zed", flush)
    req = ApprovalRequest(
        session="s",
        role="architect",
        model="gpt-5.1-high",
        provider="openai",
        reasons=[],
        est_cost_usd=0.01,
        budget_left_usd=1.0,
    )
    decision = await decider.decide(req)
    assert not decision.allowed
    assert decision.reason == (
        "the client could not answer: its answer is not a permission response "
        "(outcome: field required)"
    )
