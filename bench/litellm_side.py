"""P1, their side: LiteLLM's Router serving one routed request with a mocked backend.

Runs in the benchmark's own LiteLLM venv (``bench/.venv-litellm``), never in the
project's: it imports nothing from ``app``. Offline: ``LITELLM_LOCAL_MODEL_COST_MAP`` and
``LITELLM_OFFLINE_MODE`` are set before the import, every completion carries
``mock_response``, and the harness starts this process inside ``unshare -n`` (no network
interface but loopback) where it may. Elsewhere ``--socket-guard`` refuses every
non-loopback connection made through Python's socket module (LiteLLM's Rust core would
not go through it: the harness says which of the two was used).

The Router gets what ours has for the same request: a primary deployment for the role,
a fallback to a second provider, and LiteLLM's defaults otherwise: they are its fastest
set-up for this path that we found. LiteLLM 1.110.2 builds its logging payload, works out
the response's cost and hands a success handler to its logging thread on every call,
whatever is configured (``litellm/utils.py``'s client wrapper), and no documented switch
takes that away. Measured on 6 Dec 2026, this side alone (4 chunks of 500 after
300, the median of the chunks' p50s; the defaults 3,118-3,254 µs in the same hour):
``disable_token_counter`` 3,130, ``disable_end_user_cost_tracking`` 3,125,
``disable_add_user_agent_to_request_tags`` 3,145, ``Router(num_retries=0)`` 3,123,
``suppress_debug_info`` 3,230, ``turn_off_message_logging`` (with it) 3,560 (it redacts
the messages it logs), ``Router(disable_cooldowns=True)`` 3,026, then 3,246, 3,352, 3,216
against the defaults' 3,129, 3,128, 3,254 in turn (no gain; and cooldowns are its
failover, which ours keeps). It is driven over stdin by the harness, so that both sides
run in alternating chunks on one machine:

    warm N   → N untimed requests
    run N    → N timed requests; one line of JSON: {"lat_us": [...], "cpu_us": …} (the
               process's CPU time over the chunk, every thread's)
    quit
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
os.environ.setdefault("LITELLM_TELEMETRY", "False")

MESSAGES = [{"role": "user", "content": "plan the fix"}]
MODEL_LIST = [
    {
        "model_name": "architect",
        "litellm_params": {"model": "openai/gpt-4o", "api_key": "sk-bench-not-a-key-000000"},
    },
    {
        "model_name": "architect-fallback",
        "litellm_params": {
            "model": "anthropic/claude-3-5-sonnet-20240620",
            "api_key": "sk-ant-bench-not-a-key-000000",
        },
    },
]
FALLBACKS = [{"architect": ["architect-fallback"]}]


def guard_sockets() -> None:
    """Refuse any connection that leaves the machine (Python's socket module only)."""
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else str(address)
        if self.family == socket.AF_UNIX or host in ("127.0.0.1", "::1", "localhost"):
            return real_connect(self, address)
        raise OSError(f"bench socket guard: connection to {address!r} refused")

    socket.socket.connect = connect  # type: ignore[method-assign]


def make_router() -> Any:
    import litellm
    from litellm import Router

    litellm.telemetry = False
    return Router(model_list=MODEL_LIST, fallbacks=FALLBACKS)


async def one(router: Any, messages: list[dict[str, Any]] | None = None) -> None:
    response = await router.acompletion(
        model="architect", messages=messages or MESSAGES, mock_response="ok", max_tokens=64
    )
    assert response.choices[0].message.content == "ok", response


async def serve(messages: Callable[[int], list[dict[str, Any]]] | None = None) -> None:
    """``messages``: request n's messages of bench/conversation.py's conversation, made
    before each request (untimed); None for the goal's request."""
    router = make_router()
    await one(router)
    turn = 0
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "quit":
            return
        n = int(arg or 0)
        lat: list[int] = []
        cpu0 = time.process_time()  # every thread's: background work counts too
        for _ in range(n):
            turn += 1
            asked = messages(turn) if messages is not None else None
            t0 = time.perf_counter_ns()
            await one(router, asked)
            lat.append((time.perf_counter_ns() - t0) // 1000)
        await asyncio.sleep(0.05)  # background work the requests left: as long as ours gets
        cpu_us = (time.process_time() - cpu0) * 1e6
        out = {"lat_us": lat, "cpu_us": cpu_us} if cmd == "run" else {"warmed": n}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--socket-guard", action="store_true")
    parser.add_argument("--version", action="store_true", help="print litellm's version")
    parser.add_argument("--conversation", type=int, default=0, help="KB of conversation sent")
    parser.add_argument("--turn-chars", type=int, default=4000, help="its turns' size")
    args = parser.parse_args()
    if args.socket_guard:
        guard_sockets()
    if args.version:
        from importlib.metadata import version

        print(version("litellm"))
        return
    if args.conversation:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import conversation  # (it imports nothing of app)

        asyncio.run(serve(conversation.Conversation(args.conversation, args.turn_chars).messages))
    else:
        asyncio.run(serve())


if __name__ == "__main__":
    main()
