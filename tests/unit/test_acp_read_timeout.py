"""An editor that offers ``fs/read_text_file`` and never answers: the prompt waited with
no update, no run and no line until a cancel (an ACP audit). The read is bounded, and the
file on disk is read in its place."""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from acp.schema import ResourceContentBlock

from app.acp import agent as agent_module
from app.acp.agent import SwitchyardAgent
from app.acp.editor import editor_context
from app.config import load_settings
from app.policy import load_policy


class _Silent:
    """A client connection whose editor never answers a read."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def read_text_file(self, *, session_id: str, path: str, **kw: Any) -> Any:
        self.asked.append(path)
        await asyncio.Event().wait()


async def test_a_read_the_editor_never_answers_falls_back_to_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_module, "READ_TIMEOUT_S", 0.05)
    agent = SwitchyardAgent(load_settings(), load_policy().policy, local_only=True, repo=None)
    silent = _Silent()
    agent.on_connect(silent)
    (tmp_path / "parser.py").write_text("ON DISK\n")
    block = ResourceContentBlock(type="resource_link", uri=f"file://{tmp_path}/parser.py", name="p")
    said = await asyncio.wait_for(editor_context([block], tmp_path, partial(agent._read, "s1")), 5)
    assert silent.asked == [str(tmp_path / "parser.py")]
    assert "ON DISK" in said
