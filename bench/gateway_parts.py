"""P7's breakdown: what each part of the gateway's hot path costs, in one process.

``bench/gateway_bench.py`` measures ``switchyard serve`` from outside. This times the
parts of one local-route request in-process against the same fake upstream
(``bench/gateway_fake.py``, started here), in interleaved rounds, on a session opened as
``switchyard serve`` opens it (the repository's policy, a temporary data dir):

- ``httpx2 stream``: a bare streamed POST on an httpx2 client (the transport floor of
  the SDK), SSE lines split and JSON-parsed;
- ``raw asyncio stream``: the same request on a bare asyncio connection (what any
  HTTP client must at least cost here);
- ``httpcore2 stream``: the same on httpx2's connection pool alone (no httpx2 client);
- ``aiohttp stream``: the same on a bare aiohttp session (the stack under
  ``backend.stream`` for local runtimes);
- ``openai SDK stream``: ``AsyncOpenAI.chat.completions.create(stream=True)`` on the
  same httpx2 client, iterated;
- ``backend.stream``: the registry's ``OpenAICompatBackend`` as the router calls it: for
  this local runtime, the SDK-free path (``app/backends/openai_local.py``: the guarded
  aiohttp ``StreamClient`` + our SSE and chunk handling);
- ``audit.append``: one line (a gateway request makes 4: request, route, call, request);
- ``ledger.record_call``: the zero-cost record of a local call (1 per request);
- ``router.decide``; ``router.complete``: decide + audit + backend + ledger.

Each part runs ``--rounds`` rounds of ``--n / --rounds`` calls, the parts taking turns.
Reported: the wall time per call (p50 and p99 over all calls) and the event loop thread's CPU
time per call (``time.thread_time``; the median and the lowest of the rounds' means: on
a shared machine the CPU time of the same work swells with the load, the lowest round
is the closest to the work itself).

Run: python -m bench.gateway_parts [--n 500] [--rounds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench._common import percentile, print_machine
from bench.gateway_sides import POLICY, served_names, start_fake, stop_all

ROLE = "implementer"


def _request_bytes(port: int, served: str) -> bytes:
    body = json.dumps(
        {
            "model": served,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": 16,
            "messages": [{"role": "user", "content": "Say ok."}],
        }
    ).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def parts(port: int, served: str, data: Path, n: int, rounds: int) -> dict[str, Any]:
    os.environ["SWITCHYARD_DATA_DIR"] = str(data)
    os.environ["SWITCHYARD_VLLM_URL"] = f"http://127.0.0.1:{port}/v1"
    import httpx2
    import openai

    from app.backends.base import ChatRequest, Message
    from app.config import load_settings
    from app.policy.loader import load_policy
    from app.router.session import open_session
    from app.router.types import Signals

    settings = load_settings(policy=POLICY)
    policy = load_policy(POLICY).policy
    request = ChatRequest(messages=[Message(role="user", content="Say ok.")], max_tokens=16)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    payload = {
        "model": served,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "Say ok."}],
    }
    raw = _request_bytes(port, served)
    client = httpx2.AsyncClient(trust_env=False)
    sdk = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key="sk-no-key-required",
        http_client=client,
        max_retries=0,
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def httpx2_stream() -> None:
        async with client.stream("POST", url, json=payload) as resp:
            async for line in resp.aiter_lines():
                if line.startswith("data: {"):
                    json.loads(line[6:])

    async def raw_stream() -> None:
        writer.write(raw)
        head = await reader.readuntil(b"\r\n\r\n")
        assert b" 200 " in head.split(b"\r\n", 1)[0]
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return
            for event in chunk.split(b"\n\n"):
                if event.startswith(b"data: {"):
                    json.loads(event[6:])

    import httpcore2

    pool = httpcore2.AsyncConnectionPool()
    body = json.dumps(payload).encode()

    async def httpcore2_stream() -> None:
        async with pool.stream(
            "POST", url, headers={"content-type": "application/json"}, content=body
        ) as resp:
            buf = b""
            async for piece in resp.aiter_stream():
                buf += piece
            for event in buf.split(b"\n\n"):
                if event.startswith(b"data: {"):
                    json.loads(event[6:])

    aio: Any = None
    with contextlib.suppress(ImportError):  # a dependency now; compared when importable
        aio = importlib.import_module("aiohttp").ClientSession()

    async def aiohttp_stream() -> None:
        async with aio.post(url, data=body, headers={"content-type": "application/json"}) as r:
            async for line in r.content:
                if line.startswith(b"data: {"):
                    json.loads(line[6:])

    async def sdk_stream() -> None:
        stream = await sdk.chat.completions.create(
            model=served,
            messages=[{"role": "user", "content": "Say ok."}],
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=16,
        )
        async for _ in stream:
            pass

    async with open_session(settings, policy, approve="deny") as session:
        router = session.router
        d = await router.decide(ROLE, Signals(context_estimate=4))
        assert d.action == "local" and d.target and d.runtime, d
        backend = router.backends.backend(d.target, d.runtime)

        async def backend_stream() -> None:
            async for _ in backend.stream(request):
                pass

        async def audit_append() -> None:
            await session.audit.append(
                "route",
                session=session.id,
                run="gw-bench",
                role=ROLE,
                to=f"{d.target}@{d.runtime}",
                reason_codes=list(d.reason_codes),
                values={"runtime": d.runtime, "window": 32768},
                detail=f"{ROLE} → {d.target} (vLLM)",
            )

        async def ledger_record() -> None:
            await router.ledger.record_call(
                session=session.id,
                run="gw-bench",
                role=ROLE,
                model=str(d.target),
                provider="local",
                tokens_in=12,
                tokens_out=1,
                latency_ms=1.0,
                cost_usd=0.0,
                outcome="ok",
            )

        async def decide() -> None:
            await router.decide(ROLE, Signals(context_estimate=4))

        async def complete() -> None:
            await router.complete(ROLE, request, Signals(context_estimate=4), run="gw-bench")

        cases: dict[str, Callable[[], Awaitable[None]]] = {
            "raw asyncio stream": raw_stream,
            "httpx2 stream": httpx2_stream,
            "httpcore2 stream": httpcore2_stream,
            "openai SDK stream": sdk_stream,
            "backend.stream": backend_stream,
            "audit.append": audit_append,
            "ledger.record_call": ledger_record,
            "router.decide": decide,
            "router.complete": complete,
        }
        if aio is not None:
            cases = {"aiohttp stream": aiohttp_stream, **cases}
        for fn in cases.values():  # warm
            for _ in range(20):
                await fn()
        wall: dict[str, list[float]] = {name: [] for name in cases}
        cpu: dict[str, list[float]] = {name: [] for name in cases}
        per = max(1, n // rounds)
        for _ in range(rounds):
            for name, fn in cases.items():
                c0 = time.thread_time()
                for _ in range(per):
                    t0 = time.perf_counter_ns()
                    await fn()
                    wall[name].append((time.perf_counter_ns() - t0) / 1e6)
                cpu[name].append((time.thread_time() - c0) * 1000 / per)
    writer.close()
    await client.aclose()
    await pool.aclose()
    if aio is not None:
        await aio.close()
    return {
        name: {
            "wall_p50": statistics.median(wall[name]),
            "wall_p99": percentile(wall[name], 99),
            "cpu_median": statistics.median(cpu[name]),
            "cpu_min": min(cpu[name]),
        }
        for name in cases
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=500, help="timed calls per part")
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args(argv)
    print_machine()
    names = served_names()
    with tempfile.TemporaryDirectory(prefix="switchyard-p7-parts-") as tmp:
        work = Path(tmp)
        fake, port = start_fake(work, sorted(set(names.values())))
        try:
            import uvloop

            res = uvloop.run(parts(port, names[ROLE], work / "data", args.n, args.rounds))
        finally:
            stop_all([fake])
    cols = "".join(f"{c:>10}" for c in ("wall p50", "wall p99", "CPU med", "CPU min"))
    print(f"{'part (ms per call)':<22}{cols}")
    for name, s in res.items():
        print(
            f"{name:<22}{s['wall_p50']:10.3f}{s['wall_p99']:10.3f}"
            f"{s['cpu_median']:10.3f}{s['cpu_min']:10.3f}"
        )
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} (1 min; {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
