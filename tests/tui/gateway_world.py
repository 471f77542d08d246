"""``switchyard serve --tui`` against loopback fakes (test support, shared by the Pilot
tests and the screenshot script).

The world: a vLLM fake that serves every local role's model, an OpenAI fake for the cloud
(with a key), the shipped policy pointed at it, llama.cpp's server on a closed port. The
app is built the way the CLI builds it (``serve --tui`` parsed, then
:func:`app.cli.tui_cmd.gateway_app`); requests come from a real HTTP client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.policy import policy_pointing
from tests.ports import closed_port

#: the served names of the local roles' models (architect, implementer, tutor, librarian)
LOCAL_MODELS = [
    "Qwen/Qwen3-14B-AWQ",
    "Qwen/Qwen2.5-Coder-32B-Instruct-AWQ",
    "Qwen/Qwen2.5-Coder-7B-Instruct",
    "meta-llama/Llama-3.1-8B-Instruct",
]
LOCAL_REPLY = "served on the local vLLM"
CLOUD_REPLY = "served by the cloud"
CLOUD_KEY = "sk-fake-cloud-key-for-tests"
#: an architect request with this header escalates (ARCHITECT_LOW_CONFIDENCE, 0.5 < 0.75)
ESCALATE = {"x-switchyard-signal": "confidence=0.5"}


@dataclass
class GatewayWorld:
    vllm: FakeOpenAIServer
    cloud: FakeOpenAIServer
    policy: Path

    def env(self, data_dir: Path, *, approval_timeout_s: float = 60.0) -> dict[str, str]:
        """What ``serve --tui`` reads from the environment here."""
        return {
            "SWITCHYARD_DATA_DIR": str(data_dir),
            "SWITCHYARD_POLICY": str(self.policy),
            "SWITCHYARD_VLLM_URL": self.vllm.base_url,
            "SWITCHYARD_LLAMACPP_SERVER_URL": f"http://127.0.0.1:{closed_port()}/v1",
            "SWITCHYARD_APPROVAL_TIMEOUT_S": str(approval_timeout_s),
            "SWITCHYARD_N_THREADS": "1",
            "OPENAI_API_KEY": CLOUD_KEY,
        }


@contextmanager
def gateway_world(tmp: Path) -> Iterator[GatewayWorld]:
    vllm = FakeOpenAIServer("vllm", models=LOCAL_MODELS, default_reply=LOCAL_REPLY).start()
    cloud = FakeOpenAIServer("openai", api_key=CLOUD_KEY, default_reply=CLOUD_REPLY).start()
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        yield GatewayWorld(vllm, cloud, policy_pointing(tmp, openai=cloud.base_url))
    finally:
        vllm.stop()
        cloud.stop()


def serve_tui_app(*flags: str, theme: str | None = None) -> Any:
    """The app ``switchyard serve --tui FLAGS`` runs, built as the CLI builds it."""
    from app.cli import tui_cmd
    from app.cli.common import policy_from, settings_from
    from app.cli.main import build_parser
    from app.gateway.app import GatewayConfig

    args = build_parser().parse_args(["serve", "--tui", *flags])
    settings = settings_from(args)
    policy = policy_from(args, settings).policy
    app = tui_cmd.gateway_app(args, settings, policy, GatewayConfig())
    if theme is not None:
        app.theme = theme
    return app


def chat_body(model: str, text: str, *, stream: bool = False) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 64,
        "stream": stream,
    }


async def chat(
    client: httpx.AsyncClient,
    model: str,
    text: str,
    *,
    agent: str,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """An OpenAI Chat Completions request from ``agent`` (its User-Agent)."""
    return await client.post(
        "/v1/chat/completions",
        json=chat_body(model, text),
        headers={"user-agent": agent, **(headers or {})},
    )


async def responses_stream(client: httpx.AsyncClient, model: str, text: str, *, agent: str) -> str:
    """An OpenAI Responses request, streamed (as Codex CLI sends them); the raw SSE."""
    body = {"model": model, "input": text, "stream": True, "max_output_tokens": 64}
    async with client.stream(
        "POST", "/v1/responses", json=body, headers={"user-agent": agent}
    ) as reply:
        reply.raise_for_status()
        return "".join([chunk async for chunk in reply.aiter_text()])


async def messages(
    client: httpx.AsyncClient,
    model: str,
    text: str,
    *,
    agent: str,
    session: str,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """An Anthropic Messages request (as Claude Code sends them, with its session header)."""
    return await client.post(
        "/v1/messages",
        json={"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": text}]},
        headers={
            "user-agent": agent,
            "x-claude-code-session-id": session,
            "anthropic-version": "2023-06-01",
            **(headers or {}),
        },
    )


# ── a picture of it (``make screenshots``) ───────────────────────────────────────────────

CLAUDE_CODE = "claude-cli/2.0.14 (external, cli)"
CODEX = "codex_cli_rs/0.46.0 (Ubuntu 24.04; x86_64) xterm-256color"


def free_port(preferred: int) -> int:
    """``preferred`` when nothing listens there (the picture shows the usual address), else
    any free port."""
    from app.hosts import bind_error

    return preferred if bind_error("127.0.0.1", preferred) is None else 0


async def live_traffic(pilot: Any) -> tuple[asyncio.Task[httpx.Response], httpx.AsyncClient]:
    """Agents at work through the gateway: Claude Code, Codex, aider and Continue, one
    escalation approved with ``y``, and a second one left waiting on the modal. Returns
    the held request and its client: the caller closes them once the app has quit (the
    gateway ends the request as it stops)."""
    from app.tui.screens.approval import ApprovalScreen
    from tests.tui.helpers import settle, until

    app = pilot.app
    await until(pilot, lambda: app.gateway_address, what="the gateway listening")
    client = httpx.AsyncClient(base_url=app.gateway_address, timeout=120)
    session = "5b1c9e0a-77d2-4c1e-9a0b-3f2e8d6c1a47"
    claude = {"agent": CLAUDE_CODE, "session": session}
    await messages(client, "claude-sonnet-4-5-20250929", "fix parse()", **claude)
    await responses_stream(client, "auto", "add a regression test", agent=CODEX)
    await chat(client, "implementer", "rename the helper", agent="aider/0.86.1")
    approved = asyncio.create_task(
        chat(client, "architect", "plan the refactor", agent=CODEX, headers=ESCALATE)
    )
    await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), what="the modal")
    await pilot.pause(ApprovalScreen.TYPING_PAUSE_S)  # (answered as a person does: 0 s in tests)
    await pilot.press("y")
    await until(pilot, approved.done, what="the approved request")
    await chat(client, "tutor", "what does this regex match?", agent="Continue/1.2.3")
    await messages(client, "claude-haiku-4-5", "summarise the diff", **claude)
    held = asyncio.create_task(
        messages(client, "claude-opus-4-1", "plan the migration", headers=ESCALATE, **claude)
    )
    await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), what="the second modal")
    await settle(pilot)
    return held, client
