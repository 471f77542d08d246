"""P7: ``switchyard policy simulate``: replay speed and memory on a synthetic log.

The log: ``--n`` decisions (100,000) as the router writes them (a decision line with
its recorded inputs, an approval line for an escalation, a call line with tokens and
cost naming its request), in sessions of 50 requests, 1,000 a day, drawn from a seeded
generator: roles in the mix a coding session has (the Implementer most), confidences,
loop counts, prompt sizes from 200 to 150k tokens (every prompt size a different
number, as in life: nothing repeats), flags, a runtime down now and then. Each recorded
outcome is what decide() chose under the shipped policy with a running ledger, so the
log is one the router could have written.

The replay (what the goal is about): the lines grouped into requests and every request
replayed under the shipped policy and a proposed one, each with its simulated ledger,
then the report built; decisions per second over the whole of it, best of ``--runs``.
Proposed policies: "typical" (the Architect's threshold 0.75 → 0.8, Kimi's trigger
100k → 60k, DeepSeek's day cap $5 → $0.25: the Architect's and the Librarian's
requests are decided again wherever a trigger fires under either policy) and "prices"
(every cloud price up a tenth: no role reads the policy as before, yet a decision where
no trigger fires is still read from its line).

Beside it: the same replay done plainly (decide() under both policies for every request,
the budget read every time), the named alternative of the RATIO line; the cost of
parsing the lines' JSON text, and of verifying and reading a real audit file (what the
CLI does before the replay); and the memory the replay holds (tracemalloc peak, a
separate pass). Goal: ≥ 20,000 decisions/s. Each figure is the best of ``--runs`` on
a shared machine, so the CPU time is printed beside the wall clock, and the load.

Run: python -m bench.policy_simulate [--n 100000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import tempfile
import time
import tracemalloc
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from app.policy import load_policy
from app.policy.fingerprint import fingerprint
from app.policy.loader import parse_policy
from app.policy.schema import Policy
from app.resources import default_policy_path
from app.router.cost import cost_usd
from app.router.decide import decide
from app.router.ledger.money import NANO
from app.router.recorded import record_inputs
from app.router.simulate.ledger import SimLedger
from app.router.simulate.report import PolicyRef
from app.router.simulate.requests import Collected, collect
from app.router.simulate.simulation import simulate
from app.router.types import RouterState, Signals
from bench._common import print_machine, print_ratio, write_result

GOAL = 20_000
#: a busy team's day: 20 sessions of 50 requests
PER_DAY = 1000
ROLE_MIX = [
    ("implementer", 35),
    ("architect", 20),
    ("librarian", 15),
    ("tutor", 10),
    ("judge", 6),
    ("ace", 6),
    ("second_opinion", 4),
    ("tier2", 4),
]
WINDOWS = {"smollm2-135m": 8192}


def signals_for(role: str, rng: random.Random) -> Signals:
    """A request's signals. Most stay local, as they do in a working session: about one
    request in ten fires a trigger."""
    ctx = rng.randint(200, 24_000)
    user = rng.random() < 0.01

    def rare(common: Any, unusual: Any, p: float = 0.04) -> Any:
        return unusual if rng.random() < p else common

    if role == "architect":
        return Signals(
            confidence=round(rare(rng.uniform(0.75, 1.0), rng.uniform(0.4, 0.75), 0.08), 2),
            plan_steps=rare(rng.randint(1, 8), 9),
            files_touched=rare(rng.randint(1, 12), 13),
            open_questions=rare(rng.choice([0, 0, 1]), 2),
            context_estimate=ctx,
            user_request=user,
        )
    if role == "implementer":
        return Signals(
            failed_loops=rare(rng.choice([0, 0, 0, 1]), 2),
            self_check_confidence=round(rare(rng.uniform(0.5, 1.0), 0.3), 2),
            modules_touched=rare(rng.choice([1, 1, 2, 3]), 4),
            tool_calls=rare(rng.randint(0, 19), 25, 0.02),
            context_estimate=ctx,
            user_request=user,
        )
    if role == "librarian":
        return Signals(
            context_estimate=rare(rng.randint(2_000, 100_000), rng.randint(100_001, 140_000), 0.06),
            contradictions_detected=rng.random() < 0.02,
            tool_heavy=rng.random() < 0.02,
            local_synth_confidence=round(rare(rng.uniform(0.6, 1.0), 0.5, 0.02), 2),
        )
    if role in ("judge", "second_opinion"):
        return Signals(high_risk=rng.random() < 0.1, failed_loops=rare(0, 2), context_estimate=ctx)
    if role == "ace":
        return Signals(interesting_failure=rng.random() < 0.1, context_estimate=ctx)
    if role == "tier2":
        return Signals(tier2_opt_in=rng.random() < 0.1, context_estimate=ctx)
    return Signals(context_estimate=ctx, user_request=user)


def synthetic_log(policy: Policy, n: int, seed: int = 7) -> list[dict[str, Any]]:
    """``n`` requests' lines, as parsed JSON objects in seq order."""
    rng = random.Random(seed)
    roles = [r for r, w in ROLE_MIX for _ in range(w)]
    ledger = SimLedger(policy.budget, [p for p in policy.providers if p != "local"])
    policy_fp = fingerprint(policy)
    lines: list[dict[str, Any]] = []
    seq = 0
    req: int | None = None

    def add(kind: str, ts: str, session: str, role: str, **kw: Any) -> None:
        """A line; every line of a request after its first names it (``req``)."""
        nonlocal seq, req
        seq += 1
        if req is not None:
            kw["values"] = {**kw.get("values", {}), "req": req}
        lines.append({"seq": seq, "ts": ts, "session": session, "kind": kind, "role": role, **kw})
        req = seq if req is None else req

    start = date(2026, 1, 1)
    for i in range(n):
        day = (start + timedelta(days=i // PER_DAY)).isoformat()
        ts = f"{day}T{(i // 60) % 24:02d}:{i % 60:02d}:00.000Z"
        session = f"s{i // 50:05d}"
        role = rng.choice(roles)
        signals = signals_for(role, rng)
        down = {"runtime:vllm": False} if rng.random() < 0.03 else {}
        probe = decide(policy, role, signals, RouterState(health=down, context_windows=WINDOWS))
        left = ledger.left_usd(session, day) if probe.reasons else {}
        state = RouterState(health=down, provider_left_usd=left, context_windows=WINDOWS)
        d = decide(policy, role, signals, state)
        inputs = record_inputs(signals, state, 0, budget_read=bool(probe.reasons), policy=policy_fp)
        tokens_in, tokens_out = (signals.context_estimate or 2000), rng.randint(50, 3000)
        req = None
        for skip in d.skipped:
            if skip.reason == "budget":
                add("skip", ts, session, role, to=skip.model, values={"reason": "budget"})
        codes = list(d.reason_codes)
        if d.action == "refuse":
            codes = [d.refusal_code or "REFUSED", *codes]
            add("refusal", ts, session, role, reason_codes=codes, values={"inputs": inputs})
            continue
        if d.action == "escalate":
            assert d.target is not None and d.provider is not None
            values = {"inputs": inputs, "est_cost_usd": d.est_cost_usd}
            add("escalation", ts, session, role, to=d.target, reason_codes=codes, values=values)
            add("approval", ts, session, role, to=d.target, values={"decision": "allow_once"})
            cost = cost_usd(policy.model(d.target), tokens_in, tokens_out)
            ledger.settle(session, day, d.provider, round(cost * NANO))
            to, provider = d.target, d.provider
        else:
            to, provider, kind = f"{d.target}@{d.runtime}", "local", "route"
            if d.local and d.local.substituted_for:
                kind, codes = "runtime_fallback", ["GR005_RUNTIME_FALLBACK", *codes]
            add(kind, ts, session, role, to=to, reason_codes=codes, values={"inputs": inputs})
            cost = 0.0
        values = {
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
            "cost_usd": round(cost, 6),
            "provider": provider,
        }
        add("call", ts, session, role, to=to, values=values)
    return lines


def proposed(kind: str) -> Policy:
    text = default_policy_path().read_text(encoding="utf-8")
    if kind == "typical":
        swaps = [
            (
                'threshold = 0.75\nseed = "§3 confidence <',
                'threshold = 0.8\nseed = "§3 confidence <',
            ),
            ("threshold = 100000\n", "threshold = 60000\n"),
            ("deepseek = 5.0\n", "deepseek = 0.25\n"),
        ]
        for old, new in swaps:
            assert text.count(old) == 1, old
            text = text.replace(old, new)
    else:  # every cloud price up by a tenth: no role view is shared
        out = []
        for line in text.splitlines():
            for key in ("price_in_usd_per_mtok = ", "price_out_usd_per_mtok = "):
                if line.startswith(key):
                    line = f"{key}{float(line[len(key) :]) * 1.1:.4f}"
            out.append(line)
        text = "\n".join(out) + "\n"
    return parse_policy(text, Path(f"{kind}.toml")).policy


def replay(lines: list[dict[str, Any]], new: Policy, against: Policy) -> Any:
    ref = PolicyRef(path="bench", version=against.version)
    return simulate(collect(lines), new, against, new_ref=ref, against_ref=ref)


def plain_replay(collected: Collected, new: Policy, against: Policy) -> int:
    """The alternative: decide() under both policies for every request, the budget read
    for every one, validated models, no memo and no sharing (single-step requests)."""
    ledgers = {
        id(p): SimLedger(p.budget, [x for x in p.providers if x != "local"]) for p in (new, against)
    }
    for req in collected.requests:
        inputs = req.steps[0].inputs
        for policy in (against, new):
            left = ledgers[id(policy)].left_usd(req.session, req.day)
            state = RouterState(
                local_only=inputs.local_only,
                provider_left_usd=left,
                health={k: False for k in inputs.down},
                approved=inputs.approved,
                context_windows=dict(inputs.windows),
            )
            d = decide(policy, req.role, inputs.signals(), state)
            if d.action == "escalate" and d.provider is not None:
                ledgers[id(policy)].settle(
                    req.session, req.day, d.provider, round(d.est_cost_usd * NANO)
                )
    return len(collected.requests)


def best(fn: Any, runs: int) -> tuple[float, float, Any]:
    """Best wall-clock and CPU seconds of ``runs`` calls (this machine is shared: the
    CPU time is the steadier figure), and the last result."""
    walls, cpus, out = [], [], None
    for _ in range(runs):
        out = None
        gc.collect()
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus), out


def decide_us(policy: Policy) -> float:
    """One plain decide() (an Architect request that stays local), for scale."""
    signals, state = Signals(confidence=0.9, context_estimate=3000), RouterState()
    c0 = time.process_time()
    for _ in range(5000):
        decide(policy, "architect", signals, state)
    return (time.process_time() - c0) / 5000 * 1e6


async def from_audit_file(lines: list[dict[str, Any]], workdir: Path) -> tuple[float, int]:
    """End to end on a real audit file: the lines written by the audit log itself, then
    verified, read and grouped (``read_log``): seconds for that part, and its line count."""
    from app.audit.log import AuditLog
    from app.router.simulate.source import read_log

    async with AuditLog.open(workdir / "audit.sqlite3") as log:
        for line in lines:
            await log.append(
                line["kind"],
                session=line["session"],
                role=line["role"],
                to=line.get("to"),
                reason_codes=line.get("reason_codes", ()),
                values=line.get("values"),
            )
        t0 = time.perf_counter()
        collected = await read_log(log)
        seconds = time.perf_counter() - t0
    return seconds, collected.lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="decisions in the log")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--file-n", type=int, default=10_000, help="decisions for the file test")
    args = ap.parse_args(argv)
    print_machine()
    load = os.getloadavg()
    shipped = load_policy().policy
    t0 = time.perf_counter()
    lines = synthetic_log(shipped, args.n)
    escalations = sum(1 for x in lines if x["kind"] == "escalation")
    print(
        f"synthetic log: {args.n} decisions ({escalations / args.n:.0%} escalations), "
        f"{len(lines)} lines, built in {time.perf_counter() - t0:.1f} s; load average "
        f"{load[0]:.2f}; one plain decide() {decide_us(shipped):.1f} µs of CPU"
    )
    results: dict[str, Any] = {"n": args.n, "lines": len(lines), "goal_per_s": GOAL}
    for kind in ("typical", "prices"):
        new = proposed(kind)
        wall, cpu, report = best(lambda new=new: replay(lines, new, shipped), args.runs)
        assert report.decisions == args.n and report.unsimulated.count == 0
        assert report.against_differs_from_recorded == 0
        rate, cpu_rate = args.n / wall, args.n / cpu
        print(
            f"replay ({kind}): {wall:.2f} s, {rate:,.0f} decisions/s ({cpu_rate:,.0f}/s of "
            f"CPU); {report.changed} changed, {len(report.blocked)} blocked steps; goal "
            f"{GOAL:,}/s {'reached' if rate >= GOAL else 'NOT reached'}"
        )
        results[kind] = {"seconds": wall, "per_s": rate, "cpu_per_s": cpu_rate}

    collected = collect(lines)
    new = proposed("typical")
    plain_n = min(args.n, 20_000)
    subset = Collected(requests=collected.requests[:plain_n])
    plain_wall, _, _ = best(lambda: plain_replay(subset, new, shipped), 1)
    plain_rate = plain_n / plain_wall
    print(
        f"plain replay (decide() under both policies for every decision, the budget read "
        f"each time; {plain_n} decisions): {plain_rate:,.0f} decisions/s"
    )
    collected.requests.clear()
    subset.requests.clear()

    texts = [json.dumps(x, sort_keys=True, separators=(",", ":")) for x in lines]
    parse_wall, _, _ = best(lambda: [json.loads(t) for t in texts], 1)
    texts.clear()
    print(f"parsing the lines' JSON text alone: {args.n / parse_wall:,.0f} decisions/s")
    with tempfile.TemporaryDirectory() as tmp:
        file_lines = synthetic_log(shipped, args.file_n)
        read_s, n_lines = asyncio.run(from_audit_file(file_lines, Path(tmp)))
    print(
        f"from a real audit file ({args.file_n} decisions, {n_lines} lines): verify + read + "
        f"group {args.file_n / read_s:,.0f} decisions/s (before the replay)"
    )

    gc.collect()
    tracemalloc.start()
    replay(lines, new, shipped)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"memory: {peak / 2**20:.0f} MiB peak while grouping and replaying {args.n} decisions "
        f"({peak / args.n:,.0f} B each; the parsed lines themselves not counted)"
    )

    typical = results["typical"]["per_s"]
    results.update(
        {
            "plain_per_s": plain_rate,
            "parse_per_s": args.n / parse_wall,
            "file_read_per_s": args.file_n / read_s,
            "peak_mib": peak / 2**20,
            "load_average": load[0],
            "goal_reached": min(typical, results["prices"]["per_s"]) >= GOAL,
        }
    )
    write_result("policy_simulate", results)
    print_ratio(
        "policy simulate replay (typical)",
        typical,
        plain_rate,
        "a plain replay (decide() under both policies per decision)",
        higher_is_better=True,
    )
    for kind in ("typical", "prices"):
        print_ratio(
            f"policy simulate replay ({kind})",
            results[kind]["per_s"],
            GOAL,
            "the 20k decisions/s goal",
            higher_is_better=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
