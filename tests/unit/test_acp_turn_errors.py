"""A prompt turn that fails inside the run is answered "Internal error" (-32603) with
what failed: the SDK answered an exception it did not expect, a pydantic error from
deep in the run, as the client's own "Invalid params" (-32602)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from acp import RequestError, text_block
from pydantic import BaseModel

from app.acp.agent import SwitchyardAgent
from app.acp.sessions import AcpSession
from app.config import load_settings
from app.policy import load_policy


class _Named(BaseModel):
    model: str


class _Session:
    id = "s1"
    repo = Path("/nonexistent")
    mode = "run"
    work = None
    cancel_requested = False
    busy = False
    parked = False


async def test_a_failure_inside_the_turn_is_an_internal_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    agent = SwitchyardAgent(load_settings(), load_policy().policy, local_only=True, repo=None)
    agent.pool.sessions["s1"] = cast(AcpSession, _Session())

    async def failing(*args: Any) -> Any:
        return _Named.model_validate({"model": None})  # raises ValidationError

    monkeypatch.setattr(agent, "_turn", failing)
    with pytest.raises(RequestError) as raised:
        await agent.prompt([text_block("fix the parser")], "s1")
    assert raised.value.code == -32603
    assert "the turn failed" in str(raised.value) and "model" in str(raised.value)
    assert raised.value.data == {"sessionId": "s1"}

    # a request error from the turn is the client's to read, as it was
    async def refused(*args: Any) -> Any:
        raise RequestError(-32602, "bad cwd")

    monkeypatch.setattr(agent, "_turn", refused)
    with pytest.raises(RequestError, match="bad cwd") as again:
        await agent.prompt([text_block("fix the parser")], "s1")
    assert again.value.code == -32602
