"""``make bench``: every benchmark in turn, each in its own interpreter.

Two sets: ``--set full`` (the default, ``make bench``: everything below, ~130 min at most)
and ``--set quick`` (P1–P5 on this project's own history: ~55 minutes at most, ~20 on a
quiet machine here). Each
benchmark's time-out is what it needs here under the load of other work, and the budget
is their sum with room to spare, so that no goal is "not run" for lack of time.

Prints the machine once, each benchmark's output as it comes (without its own machine
lines), and at the end, per goal, every ``RATIO`` line and every line that says whether
a goal was reached (``reached`` / ``NOT reached``, with its figure), beside what failed
or did not run. Each benchmark writes its JSON under ``bench/results/``; this writes
``summary.json`` there.

- P1 router vs LiteLLM's Router (``bench.p1_router``), also with a coding agent's 40 KB
  conversation sent on every request (``--conversation 40``, reported), and the router's
  request path vs the least a request must write, in SQLite or in an append-only journal
  (``bench.p1_floor``)
- P2 Stage0 vs bm25s (``bench.stage0_bench``), and retrieval quality
  (``bench.retrieval_quality``: Stage0 against the best of the bm25s baselines) on each
  repository in ``SWITCHYARD_BENCH_REPOS`` (work trees or bare git dirs, separated by
  ``:``), else on this project's own history
- P3 streaming through the adapter vs raw llama-cpp-python (``bench.stream_bench``)
- P4 decode tokens/s vs the memory-bandwidth bound (``bench.decode_bench``)
- P5 the TUI's first frame and a 10k-event flood vs an empty Textual app (``bench.tui_bench``)
- P6 embeddings through the memory pipeline vs raw sentence-transformers (``bench.embed_bench``)
- P8 the team ledger's reservations on PostgreSQL vs SQLite, and the overspend of 8
  processes racing for one cap (``bench.team_ledger``)
- P7 ``switchyard serve`` vs the LiteLLM proxy vs direct, on one fake upstream
  (``bench.gateway_bench``); and ``serve --tui`` (the workbench drawing every request, in
  tmux) vs headless ``serve`` under sustained load (``bench.gateway_tui_bench``)
- P9 the Implementer's edit applier on the same repositories' history as P2's retrieval
  quality: perturbed edits applied correctly, refused or wrongly, beside ``git apply``
  and ``patch --fuzz=3`` (``bench.edit_apply``)
- P10 ``switchyard policy simulate``: replay speed on a synthetic log of 100k decisions
  vs a plain replay and the 20k decisions/s goal, and its memory (``bench.policy_simulate``)
- P11 the headless demo (``switchyard run --demo --approve deny``) on the embedded model:
  wall time, model calls and tokens per stage, beside the tree before issue 17 and the
  240 s goal (``bench.demo_bench``; two whole demo runs, the longest benchmark)

Benchmarks run one at a time: they would otherwise measure each other. A benchmark that
would not fit in what is left of the budget is reported as not run.

Run: python -m bench [--set quick|full] [--budget SECONDS] [--only P1,P4]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench._common import RESULTS, machine_info, print_machine

ROOT = Path(__file__).resolve().parent.parent
RATIO = re.compile(r"^RATIO .+")
#: a line that says whether a goal was reached ("… reached", "… NOT reached (…)")
GOAL = re.compile(r"\breached\b")
QUICK = {"P1", "P2", "P3", "P4", "P5"}
BUDGET_S = {"quick": 1500.0, "full": 5400.0}
MACHINE_LINE = re.compile(r"^(machine|packages): ")


@dataclass
class Bench:
    key: str
    title: str
    args: list[str]
    #: seconds it needs on this machine at most (under the load of other work); it is
    #: stopped past this, and not started when less than ``need_s`` is left
    timeout_s: float
    need_s: float
    ratios: list[str] = field(default_factory=list)
    goals: list[str] = field(default_factory=list)
    status: str = "not run"
    seconds: float = 0.0


def repos() -> list[Path]:
    listed = [Path(p) for p in os.environ.get("SWITCHYARD_BENCH_REPOS", "").split(":") if p]
    if listed:
        return listed
    own = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    return [Path(own)] if own else []


def llama_threads() -> int:
    from app.backends.llamacpp import default_threads

    return default_threads()


def plan(*, own_history_only: bool = False) -> list[Bench]:
    py = [sys.executable, "-m"]
    out = [
        Bench("P1", "router overhead vs LiteLLM Router", [*py, "bench.p1_router"], 420, 120),
        # ~45 s here: the least a request must write (SQLite, a journal, the lines alone),
        # beside the router's whole path
        Bench("P1", "router's request path vs its floor", [*py, "bench.p1_floor"], 180, 60),
        # ~15 s here: an agent's 40 KB conversation sent again on every request, both sides
        Bench(
            "P1",
            "router overhead vs LiteLLM Router, a 40 KB conversation",
            [*py, "bench.p1_router", "--conversation", "40", "--n", "2000", "--chunks", "4"],
            180,
            40,
        ),
        # and the same 40 KB in 300-character turns (an agent's tool calls and results)
        Bench(
            "P1",
            "router overhead vs LiteLLM Router, 40 KB in short turns",
            [
                *py,
                "bench.p1_router",
                *("--conversation", "40", "--turn-chars", "300"),
                *("--n", "1000", "--chunks", "4"),
            ],
            180,
            40,
        ),
        Bench("P2", "Stage0 vs bm25s", [*py, "bench.stage0_bench"], 240, 120),
    ]
    # Stage0 (its default weighting) against the strongest bm25s baselines (whole files
    # and chunks, paths in, the code tokenizer), bm25s as its README shows it, and that
    # with paths in (--ablations): ~2.5 min per repository of 200 commits here, ~5 under
    # the load of other work
    for repo in repos()[:1] if own_history_only else repos():
        name = repo.parent.name if repo.name in (".git", "repo") else repo.name
        quality = [*py, "bench.retrieval_quality", "--repo", str(repo), "--n", "200"]
        out.append(
            Bench(
                "P2",
                f"retrieval quality on {name}",
                [*quality, "--weighting", "hybrid", "--ablations"],
                420,
                150,
            )
        )
    out += [
        Bench(
            "P3",
            "streaming vs raw llama-cpp-python",
            # Both sides on the product's thread count: on a shared machine, llama.cpp
            # workers that spin on every core collapse (bench/decode_bench.py says more).
            [*py, "bench.stream_bench", "--threads", str(llama_threads())],
            180,
            60,
        ),
        # both sides on 1..cores threads, 3 runs each, idle and then with one core busy,
        # the prompt read at each count, after an embedding, and the 1 GiB copies: 4-13
        # min here. Most of it is 2 threads with one core busy, where llama.cpp's spinning
        # workers collapse (1.7-5 tokens/s, 128 tokens a run): 720 s stopped it on
        # 2026-12-06 (it took 13 min alone that hour)
        Bench("P4", "decode vs memory bandwidth", [*py, "bench.decode_bench"], 1200, 240),
        Bench("P5", "TUI first frame and flood", [*py, "bench.tui_bench"], 150, 45),
        Bench("P6", "embeddings vs sentence-transformers", [*py, "bench.embed_bench"], 180, 60),
        # ~4 min here (2,000 + 200 requests per side, each stream 180 ms), more when the
        # LiteLLM proxy's requirements are installed on first use
        Bench("P7", "gateway vs LiteLLM proxy", [*py, "bench.gateway_bench"], 600, 300),
        # ~1.5 min here (4,000 requests per side, the workbench drawing in tmux)
        Bench(
            "P7", "gateway in the workbench vs headless", [*py, "bench.gateway_tui_bench"], 300, 120
        ),
        # a throwaway PostgreSQL (fsync on) and a SQLite file; 1 and 8 processes
        Bench("P8", "team ledger: PostgreSQL vs SQLite", [*py, "bench.team_ledger"], 400, 150),
    ]
    # ~1 s per commit here (Switchyard twice, git apply, patch, on 10 perturbations)
    repo_args = [a for repo in repos() for a in ("--repo", str(repo))]
    edits = [*py, "bench.edit_apply", *repo_args]
    out.append(Bench("P9", "edit apply rate vs git apply and patch", edits, 300, 60))
    # ~1.5 min here: the synthetic log, three replays under each policy, a memory pass
    simulate = [*py, "bench.policy_simulate"]
    out.append(Bench("P10", "policy simulate replay vs the 20k/s goal", simulate, 300, 100))
    # two demo runs on the embedded model (before and after issue 17): 5-20 min each here,
    # depending on the load; the longest benchmark, so last
    demo = [*py, "bench.demo_bench"]
    out.append(Bench("P11", "headless demo vs before and the 240 s goal", demo, 2700, 600))
    return out


def run(bench: Bench, timeout_s: float) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        bench.args,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,  # its own process group: a stop ends its helpers too
    )
    assert proc.stdout is not None
    stopped = threading.Event()

    def stop() -> None:
        stopped.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    watchdog = threading.Timer(timeout_s, stop)
    watchdog.start()
    try:
        for line in proc.stdout:
            line = line.rstrip("\n")
            if MACHINE_LINE.match(line):
                continue
            print(f"  {line}", flush=True)
            if RATIO.match(line):
                bench.ratios.append(line)
            elif GOAL.search(line):
                bench.goals.append(line.strip())
        code = proc.wait()
    finally:
        watchdog.cancel()
    bench.seconds = time.perf_counter() - t0
    if stopped.is_set():
        bench.status = f"stopped after {timeout_s:.0f} s"
    elif code != 0:
        bench.status = f"failed (exit {code})"
    elif not bench.ratios:
        bench.status = "printed no ratio"
    else:
        bench.status = "ok"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", choices=sorted(BUDGET_S), default="full", dest="which")
    ap.add_argument(
        "--budget",
        type=float,
        default=0.0,
        help="seconds (default: the set's, or the time-outs' sum when more)",
    )
    ap.add_argument("--only", default="", help="comma-separated keys, e.g. P1,P4")
    args = ap.parse_args(argv)
    only = {k.strip().upper() for k in args.only.split(",") if k.strip()}
    if not only and args.which == "quick":
        only = set(QUICK)
    quick_repo = args.which == "quick"
    benches = [b for b in plan(own_history_only=quick_repo) if not only or b.key in only]
    # Never less than every planned time-out together: with more repositories listed (or
    # a time-out raised), no benchmark is left "not run" for lack of time.
    args.budget = args.budget or max(BUDGET_S[args.which], sum(b.timeout_s for b in benches))

    start = time.perf_counter()
    info = print_machine(machine_info())
    load = os.getloadavg()
    print(f"load average at the start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    for bench in benches:
        left = args.budget - (time.perf_counter() - start)
        if left < bench.need_s:
            bench.status = f"not run: {left:.0f} s left of the {args.budget:.0f} s budget"
            print(f"\n── {bench.key} {bench.title}: {bench.status}", flush=True)
            continue
        print(f"\n── {bench.key} {bench.title}", flush=True)
        run(bench, min(bench.timeout_s, left))
        print(f"── {bench.key} {bench.status} in {bench.seconds:.0f} s", flush=True)

    total = time.perf_counter() - start
    load = os.getloadavg()
    print(
        f"\n══ summary ({args.which} set, {total:.0f} s of the {args.budget:.0f} s budget; "
        f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}) ══"
    )
    for bench in benches:
        for line in bench.ratios:
            print(f"{bench.key}  {line}")
        for line in bench.goals:
            print(f"{bench.key}    {line}")
        if bench.status != "ok":
            print(f"{bench.key}  {bench.title}: {bench.status}")
        elif not bench.goals:
            print(f"{bench.key}    (no goal line: see its ratio)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "summary.json").write_text(
        json.dumps(
            {
                "machine": info,
                "set": args.which,
                "seconds": total,
                "budget_s": args.budget,
                "loadavg_end": load,
                "benchmarks": [
                    {
                        "key": b.key,
                        "title": b.title,
                        "status": b.status,
                        "seconds": round(b.seconds, 1),
                        "ratios": b.ratios,
                        "goals": b.goals,
                    }
                    for b in benches
                ],
            },
            indent=2,
        )
        + "\n"
    )
    return 0 if all(b.status == "ok" for b in benches) else 1


if __name__ == "__main__":
    sys.exit(main())
