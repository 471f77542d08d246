"""P11: the headless demo on the embedded model, timed: ``switchyard run --demo --approve
deny`` as a new user runs it (no cloud key, the shipped SmolLM2 in-process), with its
wall time, and per stage the model calls, the tokens in and out and the seconds, read
from the run's evidence bundle (its audit lines; ``stages.json`` where the run wrote one).

Side by side, in one run: the same command on a baseline source tree (``git archive`` of
``--baseline REV``, default the commit before issue 17), then on this tree, each in its
own data directory, one after the other, so the ratio is taken under the same load. The
load average is recorded at each start and end (the machine is shared; times are
inflated when it is busy). Also says why the Architect escalated (the audit's reason).

Goal (issue 17): <= 240 s with every stage kept.

Run: python -m bench.demo_bench [--baseline REV | --no-baseline] [--timeout S]
Writes bench/results/demo_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench._common import print_machine, print_ratio, write_result

ROOT = Path(__file__).resolve().parent.parent
GOAL_S = 240.0
#: the commit before issue 17 (grounded confidence, bounded generations)
BEFORE = "6ba0499"
KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DEEPSEEK_API_KEY", "MOONSHOT_API_KEY")
RUN = "import sys; from app.cli.main import main; sys.exit(main(sys.argv[1:]))"


def tree_of(rev: str, into: Path) -> Path:
    """The source tree of ``rev`` (git archive), to run the baseline from."""
    archive = into / "tree.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "archive", rev], cwd=ROOT, stdout=out, check=True)
    dest = into / "tree"
    dest.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest


def run_demo(tree: Path, data_dir: Path, timeout_s: float) -> dict[str, Any]:
    """One headless demo run from ``tree`` (its ``app`` package first on the path)."""
    env = {k: v for k, v in os.environ.items() if k not in KEYS}
    env.update(
        SWITCHYARD_DATA_DIR=str(data_dir),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONPATH=str(tree),
        COLUMNS="200",
    )
    argv = [sys.executable, "-c", RUN, "run", "--demo", "--approve", "deny", "--json"]
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.run(
        argv, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout_s
    )
    wall = time.perf_counter() - t0
    load_end = os.getloadavg()
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        tail = (proc.stderr or proc.stdout)[-600:]
        raise SystemExit(f"the demo run printed no JSON (exit {proc.returncode}): {tail}") from None
    bundle = Path(result["bundle"])
    return {
        "wall_s": round(wall, 1),
        "exit": proc.returncode,
        "outcome": result.get("outcome"),
        "reason": result.get("reason"),
        "bundle": str(bundle),
        "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in load_end],
        **read_bundle(bundle),
    }


def read_bundle(bundle: Path) -> dict[str, Any]:
    """Per stage: calls, tokens in/out, model seconds (the audit's call lines) and the
    stage's seconds (stages.json, when the run wrote one); the Architect's escalation."""
    lines = [json.loads(x) for x in (bundle / "audit.jsonl").read_text().splitlines() if x]
    stages: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"calls": 0, "tokens_in": 0, "tokens_out": 0, "model_s": 0.0, "seconds": None}
    )
    for line in lines:
        if line["kind"] != "call":
            continue
        row = stages[line["role"]]
        values = line.get("values") or {}
        row["calls"] += 1
        row["tokens_in"] += int(values.get("tokens_in", 0))
        row["tokens_out"] += int(values.get("tokens_out", 0))
        row["model_s"] = round(row["model_s"] + values.get("latency_ms", 0) / 1000, 1)
    written = bundle / "stages.json"
    if written.is_file():
        for stage, row in json.loads(written.read_text()).items():
            if row.get("seconds") is not None:
                stages[stage]["seconds"] = row["seconds"]
    escalations = [
        {"codes": line["reason_codes"], "detail": line.get("detail", "")}
        for line in lines
        if line["kind"] == "escalation" and line["role"] == "architect"
    ]
    return {
        "stages": dict(stages),
        "calls": sum(r["calls"] for r in stages.values()),
        "tokens_out": sum(r["tokens_out"] for r in stages.values()),
        "repairs": sum(1 for line in lines if line["kind"] == "repair"),
        "architect_escalation": escalations[0] if escalations else None,
    }


def show(label: str, r: dict[str, Any]) -> None:
    load = " ".join(f"{x:.2f}" for x in r["loadavg_start"])
    print(
        f"{label}: {r['wall_s']:.1f} s wall, {r['calls']} model calls, {r['tokens_out']} "
        f"tokens generated, {r['repairs']} repairs; {r['outcome']} (load at start {load})"
    )
    for stage, row in r["stages"].items():
        secs = f"{row['seconds']:.1f} s" if row["seconds"] is not None else "-"
        print(
            f"  {stage:<14} {row['calls']:>3} calls  {row['tokens_in']:>6} in  "
            f"{row['tokens_out']:>5} out  {row['model_s']:>6.1f} s in the model  stage {secs}"
        )
    esc = r["architect_escalation"]
    print(f"  architect escalation: {esc['detail'] if esc else 'none'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", default=BEFORE, help="a git revision to run beside this tree")
    ap.add_argument("--no-baseline", action="store_true", help="time this tree only")
    ap.add_argument("--timeout", type=float, default=1500.0, help="seconds per demo run")
    args = ap.parse_args(argv)
    info = print_machine()
    out: dict[str, Any] = {"goal_s": GOAL_S, "baseline_rev": None}
    with tempfile.TemporaryDirectory(prefix="demo-bench-") as tmp:
        scratch = Path(tmp)
        if not args.no_baseline:
            base_tree = tree_of(args.baseline, scratch)
            before = run_demo(base_tree, scratch / "data-before", args.timeout)
            show(f"before ({args.baseline})", before)
            out.update(baseline_rev=args.baseline, before=before)
        after = run_demo(ROOT, scratch / "data-after", args.timeout)
        show("after (this tree)", after)
        out["after"] = after
    if "before" in out:
        print_ratio("demo wall time", after["wall_s"], out["before"]["wall_s"], "before")
        print_ratio(
            "demo tokens generated", after["tokens_out"], out["before"]["tokens_out"], "before"
        )
    else:
        print_ratio("demo wall time", after["wall_s"], GOAL_S, f"the {GOAL_S:.0f} s goal")
    reached = after["wall_s"] <= GOAL_S
    print(
        f"demo wall time {after['wall_s']:.1f} s: <= {GOAL_S:.0f} s goal "
        + ("reached" if reached else "NOT reached")
        + f" (load at start {after['loadavg_start'][0]:.2f})"
    )
    path = write_result("demo_bench", {**out, "machine_seen": info})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
