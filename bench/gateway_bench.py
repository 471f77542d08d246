"""P7: what ``switchyard serve`` adds to a request, side by side with the LiteLLM proxy.

Three ways to the same loopback fake upstream (``bench/gateway_fake.py``: an
OpenAI-compatible vLLM stand-in with TCP_NODELAY), in one run:

- **direct** to the fake (the served model name);
- **switchyard**: ``switchyard serve --approve deny`` (approvals off) with the fake as the
  vLLM runtime, model ``implementer`` (a local role: the local route);
- **litellm**: the LiteLLM proxy 1.110.2 with the fake as its only model ``implementer``,
  configured for speed (``bench/gateway_sides.py`` says with what).

Each side is measured by the same client (``bench/gateway_client.py``: one blocking
keep-alive connection, TCP_NODELAY, no HTTP library), sequentially, in interleaved
rounds (each round every side in turn, the order rotating), so all three share the
machine's load. "Added" is the side's percentile minus the direct percentile.

- **Non-stream**: ``--n`` chat completions per side; wall time to the last body byte.
- **Stream**: ``--streams`` streamed completions per side; the fake sends 10 chunks 20 ms
  apart, each stamped with its send time (CLOCK_MONOTONIC, shared by the processes).
  Time to the first chunk (the first byte of content: a proxy may send its response head
  before the upstream answers, so the head alone says little; it is reported beside it)
  and to the last byte; the gaps between chunks as the fake sent them and as the client
  received them, and ``|received − sent|``: buffering shows there, and in each chunk's
  transit time (received − sent).

Goals: added p50 ≤ 1/10 of LiteLLM's added p50; added time to first chunk ≤ 5 ms at p50;
the gaps kept within 2 ms at p50 (``|received − sent|``).

Where ``unshare -n`` is permitted, everything (fake, both proxies, client) runs in a
network namespace with loopback only, so nothing can reach the network; elsewhere the
offline flags alone keep LiteLLM at home (the output says which).

Run: python -m bench.gateway_bench [--n 2000] [--streams 200] [--rounds 20]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import percentile, print_machine, print_ratio, write_result
from bench.gateway_client import Client, Streamed
from bench.gateway_sides import (
    LITELLM_ENV,
    LITELLM_FLAGS,
    MASTER_KEY,
    Proc,
    ensure_litellm_proxy,
    litellm_config,
    served_names,
    start_fake,
    start_litellm,
    start_switchyard,
    stop_all,
    wait_answering,
)
from bench.p1_router import LITELLM_VERSION

SIDES = ("direct", "switchyard", "litellm")
ROLE = "implementer"
PATH = "/v1/chat/completions"
CHUNKS, GAP_MS = 10, 20
ADDED_GOAL, TTFB_GOAL_MS, GAP_GOAL_MS = 10.0, 5.0, 2.0
ROOT = Path(__file__).resolve().parent.parent


def netns_permitted() -> bool:
    try:
        probe = ["unshare", "-n", "sh", "-c", "ip link set lo up"]
        return subprocess.run(probe, capture_output=True).returncode == 0
    except OSError:
        return False


def stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": statistics.median(values),
        "p99": percentile(values, 99),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


# ── measuring ───────────────────────────────────────────────────────────────────────────


def body(side: str, served: str, *, stream: bool) -> dict[str, Any]:
    model = served if side == "direct" else ROLE
    if stream:
        text = f"Count for me. pace {CHUNKS}x{GAP_MS}ms"
        return {
            "model": model,
            "stream": True,
            "max_tokens": 64,
            "messages": [{"role": "user", "content": text}],
        }
    return {"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "Say ok."}]}


def rounds(n: int, k: int) -> list[tuple[int, tuple[str, ...]]]:
    """k rounds of about n/k requests each; the order of the sides rotates."""
    per, out = max(1, n // k), []
    for i in range(k):
        order = SIDES[i % 3 :] + SIDES[: i % 3]
        out.append((per if i < k - 1 else n - per * (k - 1), order))
    return out


def measure_calls(
    clients: dict[str, Client], bodies: dict[str, dict[str, Any]], n: int, k: int
) -> dict[str, list[float]]:
    lat: dict[str, list[float]] = {s: [] for s in SIDES}
    for per, order in rounds(n, k):
        for side in order:
            gc.collect()
            gc.disable()
            try:
                for _ in range(per):
                    ns, reply = clients[side].call(PATH, bodies[side])
                    if reply["choices"][0]["message"]["content"] != "ok":
                        raise RuntimeError(f"{side}: unexpected reply {reply!r}")
                    lat[side].append(ns / 1e6)
            finally:
                gc.enable()
    return lat


def measure_streams(
    clients: dict[str, Client], bodies: dict[str, dict[str, Any]], n: int, k: int
) -> dict[str, list[Streamed]]:
    out: dict[str, list[Streamed]] = {s: [] for s in SIDES}
    for per, order in rounds(n, k):
        for side in order:
            gc.collect()
            gc.disable()
            try:
                for _ in range(per):
                    out[side].append(clients[side].stream(PATH, bodies[side]))
            finally:
                gc.enable()
    return out


def stream_figures(runs: list[Streamed]) -> dict[str, Any]:
    first, last, head = [], [], []
    sent_gap, recv_gap, dev, transit = [], [], [], []
    broken = 0
    for r in runs:
        ks = [c[0] for c in r.chunks]
        if ks != list(range(CHUNKS)):
            broken += 1
            continue
        first.append((r.chunks[0][2] - r.start_ns) / 1e6)
        last.append((r.end_ns - r.start_ns) / 1e6)
        head.append((r.head_ns - r.start_ns) / 1e6)
        for (_, s0, r0), (_, s1, r1) in zip(r.chunks, r.chunks[1:], strict=False):
            sent_gap.append((s1 - s0) / 1e6)
            recv_gap.append((r1 - r0) / 1e6)
            dev.append(abs((r1 - r0) - (s1 - s0)) / 1e6)
        transit += [(got - sent) / 1e6 for _, sent, got in r.chunks]
    return {
        "requests": len(runs),
        "broken": broken,
        "first_chunk_ms": stats(first),
        "last_byte_ms": stats(last),
        "head_ms": stats(head),
        "gap_sent_ms": stats(sent_gap),
        "gap_received_ms": stats(recv_gap),
        "gap_deviation_ms": stats(dev),
        "chunk_transit_ms": stats(transit),
    }


# ── the run ─────────────────────────────────────────────────────────────────────────────


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    names = served_names()
    served = names[ROLE]
    procs: list[Proc] = []
    try:
        fake, fake_port = start_fake(work, sorted(set(names.values())))
        procs.append(fake)
        sy, sy_port = start_switchyard(work, fake_port)
        procs.append(sy)
        ll, ll_port = start_litellm(work, fake_port, ROLE, served)
        procs.append(ll)
        auth = {"authorization": f"Bearer {MASTER_KEY}"}  # sent to every side alike
        ports = {"direct": fake_port, "switchyard": sy_port, "litellm": ll_port}
        clients = {s: Client(p, auth) for s, p in ports.items()}
        calls = {s: body(s, served, stream=False) for s in SIDES}
        streams = {s: body(s, served, stream=True) for s in SIDES}
        t0 = time.perf_counter()
        wait_answering(fake, clients["direct"], calls["direct"], 30)
        wait_answering(sy, clients["switchyard"], calls["switchyard"], 60)
        wait_answering(ll, clients["litellm"], calls["litellm"], 180)
        print(f"all three answer ({time.perf_counter() - t0:.1f} s after start)", flush=True)
        measure_calls(clients, calls, args.warm * 3, 3)
        measure_streams(clients, streams, 3 * 3, 3)
        t1 = time.perf_counter()
        lat = measure_calls(clients, calls, args.n, args.rounds)
        t2 = time.perf_counter()
        runs = measure_streams(clients, streams, args.streams, args.rounds)
        t3 = time.perf_counter()
        print(f"non-stream {t2 - t1:.0f} s, stream {t3 - t2:.0f} s", flush=True)
        for c in clients.values():
            c.close()
    finally:
        stop_all(procs)
    return {
        "served_model": served,
        "non_stream_ms": {s: stats(lat[s]) for s in SIDES},
        "stream": {s: stream_figures(runs[s]) for s in SIDES},
    }


def added(res: dict[str, Any], side: str, key: str, q: str, *, stream: bool = False) -> float:
    if stream:
        a: float = res["stream"][side][key][q] - res["stream"]["direct"][key][q]
    else:
        a = res["non_stream_ms"][side][q] - res["non_stream_ms"]["direct"][q]
    return a


def report(res: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    label = {
        "direct": "direct (the fake)",
        "switchyard": "switchyard serve",
        "litellm": f"LiteLLM proxy {LITELLM_VERSION}",
    }
    ns = res["non_stream_ms"]
    print(f"\nnon-stream, {args.n} requests per side (ms)   p50      p99   added p50  added p99")
    for s in SIDES:
        a50 = f"{added(res, s, '', 'p50'):9.3f}" if s != "direct" else f"{'—':>9}"
        a99 = f"{added(res, s, '', 'p99'):9.3f}" if s != "direct" else f"{'—':>9}"
        print(f"  {label[s]:<38}{ns[s]['p50']:7.3f}  {ns[s]['p99']:7.3f}  {a50}  {a99}")
    print(f"\nstream, {args.streams} requests per side, {CHUNKS} chunks {GAP_MS} ms apart (ms)")
    print(
        "  side                      first chunk p50/p99  added p50/p99   last byte p50/p99  "
        "added p50/p99   head p50"
    )
    for s in SIDES:
        st = res["stream"][s]
        fc, lb = st["first_chunk_ms"], st["last_byte_ms"]
        add = (
            f"{added(res, s, 'first_chunk_ms', 'p50', stream=True):6.2f}/"
            f"{added(res, s, 'first_chunk_ms', 'p99', stream=True):6.2f}"
            if s != "direct"
            else f"{'—':>13}"
        )
        addl = (
            f"{added(res, s, 'last_byte_ms', 'p50', stream=True):6.2f}/"
            f"{added(res, s, 'last_byte_ms', 'p99', stream=True):6.2f}"
            if s != "direct"
            else f"{'—':>13}"
        )
        print(
            f"  {s:<24}{fc['p50']:8.2f}/{fc['p99']:7.2f}    {add}   "
            f"{lb['p50']:8.2f}/{lb['p99']:7.2f}   {addl}  {st['head_ms']['p50']:7.2f}"
            + (f"  ({st['broken']} broken)" if st["broken"] else "")
        )
    print(
        "  gaps (ms)                 sent p50/p99/max      received p50/p99/max   "
        "|recv−sent| p50/p99/max  transit p50/p99/max"
    )
    for s in SIDES:
        st = res["stream"][s]

        def f(d: dict[str, float]) -> str:
            return f"{d['p50']:5.2f}/{d['p99']:5.2f}/{d['max']:6.2f}"

        print(
            f"  {s:<24}{f(st['gap_sent_ms'])}     {f(st['gap_received_ms'])}     "
            f"{f(st['gap_deviation_ms'])}    {f(st['chunk_transit_ms'])}"
        )

    sy50, ll50 = added(res, "switchyard", "", "p50"), added(res, "litellm", "", "p50")
    ttfb50 = added(res, "switchyard", "first_chunk_ms", "p50", stream=True)
    ttfb99 = added(res, "switchyard", "first_chunk_ms", "p99", stream=True)
    dev = res["stream"]["switchyard"]["gap_deviation_ms"]
    floor = 0.01  # ms: an added time at or below zero is noise; keep the ratio finite
    ratio = print_ratio(
        "gateway_added_p50",
        max(sy50, floor),
        max(ll50, floor),
        f"LiteLLM proxy {LITELLM_VERSION} added p50",
    )
    ll_ttfb = added(res, "litellm", "first_chunk_ms", "p50", stream=True)
    print_ratio(
        "gateway_first_chunk_added_p50",
        max(ttfb50, floor),
        max(ll_ttfb, floor),
        f"LiteLLM proxy {LITELLM_VERSION} added time to first chunk p50",
    )
    goals = {
        "added_p50": ratio >= ADDED_GOAL,
        "first_chunk_added_p50": ttfb50 <= TTFB_GOAL_MS,
        "gaps_p50": dev["p50"] <= GAP_GOAL_MS,
    }

    def mark(ok: bool) -> str:
        return "reached" if ok else "NOT reached"

    print(
        f"goal added p50 ≤ 1/{ADDED_GOAL:g} of LiteLLM's: {mark(goals['added_p50'])} "
        f"(switchyard {sy50:.3f} ms, LiteLLM {ll50:.3f} ms: {ratio:.2f}×; "
        f"needs ≤ {ll50 / ADDED_GOAL:.3f} ms)"
    )
    print(
        f"goal added time to first chunk ≤ {TTFB_GOAL_MS:g} ms at p50: "
        f"{mark(goals['first_chunk_added_p50'])} ({ttfb50:.2f} ms; p99 {ttfb99:.2f} ms)"
    )
    print(
        f"goal gaps kept within {GAP_GOAL_MS:g} ms at p50: {mark(goals['gaps_p50'])} "
        f"(|received − sent| p50 {dev['p50']:.2f} ms, p99 {dev['p99']:.2f} ms, "
        f"max {dev['max']:.2f} ms)"
    )
    return {
        "ratio_added_p50": ratio,
        "goals_reached": goals,
        "added_ms": {
            "switchyard_p50": sy50,
            "litellm_p50": ll50,
            "switchyard_p99": added(res, "switchyard", "", "p99"),
            "litellm_p99": added(res, "litellm", "", "p99"),
            "switchyard_first_chunk_p50": ttfb50,
            "switchyard_first_chunk_p99": ttfb99,
            "litellm_first_chunk_p50": ll_ttfb,
        },
    }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="non-stream requests per side")
    ap.add_argument("--streams", type=int, default=200, help="streamed requests per side")
    ap.add_argument("--rounds", type=int, default=20, help="interleaved rounds")
    ap.add_argument("--warm", type=int, default=100, help="untimed requests per side first")
    ap.add_argument("--no-netns", action="store_true", help="do not use unshare -n")
    ap.add_argument("--in-netns", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not args.in_netns:
        print_machine()
        reqs = ensure_litellm_proxy()
        print(
            f"LiteLLM {LITELLM_VERSION} proxy (bench/.venv-litellm) with {len(reqs)} of the "
            "proxy extra's requirements; litellm-proxy dropped, litellm-proxy-extras and "
            "litellm-enterprise unpinned"
        )
        if not args.no_netns and netns_permitted():
            inner = 'ip link set lo up && exec "$@"'
            cmd = ["unshare", "-n", "sh", "-c", inner, "sh", sys.executable, "-m"]
            return subprocess.call([*cmd, "bench.gateway_bench", *argv, "--in-netns"], cwd=ROOT)
    how = (
        "unshare -n (a network namespace with loopback only)"
        if args.in_netns
        else "none (offline flags only; unshare -n not used)"
    )
    print(f"isolation: {how}", flush=True)
    shown = ", ".join(f"{k}={v}" for k, v in LITELLM_ENV.items() if k != "LITELLM_MASTER_KEY")
    print(
        f"LiteLLM environment: {shown}; flags {' '.join(LITELLM_FLAGS)} "
        "(uvicorn on uvloop with httptools)"
    )
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="switchyard-p7-") as tmp:
        res = run(args, Path(tmp))
    load = os.getloadavg()
    print(
        f"load average at the start {load0[0]:.2f}, at the end {load[0]:.2f} "
        f"(1 min; {os.cpu_count()} cores)"
    )
    verdict = report(res, args)
    path = write_result(
        "gateway",
        {
            "litellm_version": LITELLM_VERSION,
            "isolation": how,
            "litellm_config": litellm_config(0, ROLE, res["served_model"]),
            "litellm_env": {k: v for k, v in LITELLM_ENV.items() if k != "LITELLM_MASTER_KEY"},
            "litellm_flags": LITELLM_FLAGS,
            "requests": {"non_stream": args.n, "stream": args.streams, "rounds": args.rounds},
            "stream_shape": {"chunks": CHUNKS, "gap_ms": GAP_MS},
            "goals": {
                "added_p50_ratio": ADDED_GOAL,
                "first_chunk_added_p50_ms": TTFB_GOAL_MS,
                "gap_deviation_p50_ms": GAP_GOAL_MS,
            },
            **res,
            **verdict,
            "loadavg": {"start": load0, "end": load},
        },
    )
    print(f"results: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
