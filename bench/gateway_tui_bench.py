"""P7 live: what watching costs. ``switchyard serve --tui`` (the gateway hosted in the
workbench, drawing every request) side by side with headless ``switchyard serve``, under
the same sustained load.

Both serve one loopback fake upstream (``bench/gateway_fake.py``) as the vLLM runtime,
model ``implementer`` (the local route), approvals off. The workbench runs in a real
terminal: a detached tmux session of 160×48 cells, so it draws and writes every frame as
it would on a developer's screen. P7's client (``bench/gateway_client.py``: one blocking
keep-alive connection per side, no HTTP library) sends sequential chat completions in
interleaved rounds (each round both sides in turn, the order alternating), so both share
the machine's load.

What is reported: p50, p99 and the longest request of each side, over all requests and per
round (a view that grows with the requests it has shown makes the later rounds slower),
and the ratios of the workbench's p50 and p99 to the headless gateway's. There is no goal
for it in the issues; it is the figure behind the live view's changes (the closing notes
of issue 20 have the before and after).

Needs tmux (a Debian package on this image); without it the benchmark says so and stops.

Run: python -m bench.gateway_tui_bench [--n 4000] [--rounds 8] [--warm 100]
"""

from __future__ import annotations

import argparse
import gc
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import percentile, print_machine, print_ratio, write_result
from bench.gateway_client import Client, HttpError
from bench.gateway_sides import (
    POLICY,
    Proc,
    free_port,
    served_names,
    start_fake,
    start_switchyard,
    stop_all,
    wait_answering,
)
from bench.p1_router import ROOT

SIDES = ("serve", "serve --tui")
ROLE = "implementer"
PATH = "/v1/chat/completions"
BODY: dict[str, Any] = {
    "model": ROLE,
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "Say ok."}],
}
COLUMNS, LINES = 160, 48


class Workbench:
    """``switchyard serve --tui`` in a detached tmux session of its own."""

    def __init__(self, work: Path, fake_port: int) -> None:
        self.session = f"switchyard-bench-{os.getpid()}"
        self.port = free_port()
        env = {
            "SWITCHYARD_DATA_DIR": str(work / "tui-data"),
            "XDG_CONFIG_HOME": str(work / "tui-xdg"),
            "SWITCHYARD_VLLM_URL": f"http://127.0.0.1:{fake_port}/v1",
            "PYTHONPATH": str(ROOT),
        }
        cmd = [sys.executable, "-m", "app", "serve", "--tui", "--port", str(self.port)]
        cmd += ["--approve", "deny", "--policy", str(POLICY)]
        # Nothing of this shell's environment (nor the tmux server's) but what a terminal
        # program needs: the same clean start as the headless side gets.
        env |= {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
        pairs = [shlex.quote(f"{k}={v}") for k, v in env.items()]
        inner = " ".join(["env", "-i", 'TERM="$TERM"', *pairs, *map(shlex.quote, cmd)])
        tmux = ["tmux", "new-session", "-d", "-s", self.session]
        tmux += ["-x", str(COLUMNS), "-y", str(LINES)]
        # Textual draws on stderr: it stays the terminal's
        subprocess.run([*tmux, f"cd {work} && {inner}"], check=True)
        # a workbench that exits leaves its last screen (and traceback) to read
        subprocess.run(["tmux", "set-option", "-t", self.session, "remain-on-exit", "on"])

    def alive(self) -> bool:
        probe = ["tmux", "display-message", "-p", "-t", self.session, "#{pane_dead}"]
        out = subprocess.run(probe, capture_output=True, text=True)
        return out.returncode == 0 and out.stdout.strip() == "0"

    def wait_answering(self, client: Client, timeout_s: float) -> None:
        """Until a real chat completion comes back (the first one also warms the route)."""
        deadline, last = time.monotonic() + timeout_s, ""
        while time.monotonic() < deadline and self.alive():
            try:
                client.call(PATH, BODY)
                return
            except (OSError, HttpError) as exc:
                last = str(exc)
                client.close()
                time.sleep(0.25)
        shown = self.screen()
        raise RuntimeError(f"switchyard serve --tui never answered ({last}):\n{shown}")

    def screen(self) -> str:
        out = subprocess.run(
            ["tmux", "capture-pane", "-t", self.session, "-p"], capture_output=True, text=True
        )
        return out.stdout

    def stop(self) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.session, "C-q"], capture_output=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.alive():
            time.sleep(0.2)
        subprocess.run(["tmux", "kill-session", "-t", self.session], capture_output=True)


def stats(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values),
    }


def measure(clients: dict[str, Client], n: int, k: int) -> dict[str, list[list[float]]]:
    """k rounds of n/k requests per side, the order alternating; latencies in ms."""
    per = max(1, n // k)
    out: dict[str, list[list[float]]] = {s: [] for s in SIDES}
    for i in range(k):
        for side in SIDES if i % 2 == 0 else SIDES[::-1]:
            lat: list[float] = []
            gc.collect()
            gc.disable()  # the client's own collections are not the servers'
            try:
                for _ in range(per):
                    ns, reply = clients[side].call(PATH, BODY)
                    if reply["choices"][0]["message"]["content"] != "ok":
                        raise RuntimeError(f"{side}: unexpected reply {reply!r}")
                    lat.append(ns / 1e6)
            finally:
                gc.enable()
            out[side].append(lat)
    return out


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    names = served_names()
    procs: list[Proc] = []
    bench: Workbench | None = None
    try:
        fake, fake_port = start_fake(work, sorted(set(names.values())))
        procs.append(fake)
        headless, headless_port = start_switchyard(work, fake_port)
        procs.append(headless)
        bench = Workbench(work, fake_port)
        clients = {"serve": Client(headless_port), "serve --tui": Client(bench.port)}
        wait_answering(headless, clients["serve"], BODY, 60)
        bench.wait_answering(clients["serve --tui"], 120)
        measure(clients, args.warm * 2, 2)
        t0 = time.perf_counter()
        rounds = measure(clients, args.n, args.rounds)
        seconds = time.perf_counter() - t0
        screen = bench.screen()
        for c in clients.values():
            c.close()
    finally:
        if bench is not None:
            bench.stop()
        stop_all(procs)
    return {"rounds_ms": rounds, "seconds": seconds, "screen": screen}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=4000, help="requests per side")
    ap.add_argument("--rounds", type=int, default=8, help="interleaved rounds")
    ap.add_argument("--warm", type=int, default=100, help="untimed requests per side first")
    args = ap.parse_args(argv)
    print_machine()
    if shutil.which("tmux") is None:
        print("not run: tmux is not installed (the workbench needs a terminal to draw in)")
        return 0
    with tempfile.TemporaryDirectory(prefix="sy-tui-bench-") as tmp:
        res = run(args, Path(tmp))
    rounds = res["rounds_ms"]
    every = {s: [x for r in rounds[s] for x in r] for s in SIDES}
    total = {s: stats(every[s]) for s in SIDES}
    per_round = {s: [stats(r) for r in rounds[s]] for s in SIDES}
    print(f"\n{args.n} sequential requests per side in {args.rounds} interleaved rounds (ms)")
    print(f"  {'':<14}{'p50':>8}{'p99':>9}{'max':>9}   p99 per round")
    for s in SIDES:
        t = total[s]
        pr = " ".join(f"{r['p99']:.0f}" for r in per_round[s])
        print(f"  {s:<14}{t['p50']:8.2f}{t['p99']:9.2f}{t['max']:9.1f}   {pr}")
    # RATIO lines as every bench prints them (how many times better the first side is:
    # below 1, the workbench is slower), then the same as a plain multiple
    p50 = print_ratio(
        "tui_gateway_p50", total["serve --tui"]["p50"], total["serve"]["p50"], "serve"
    )
    p99 = print_ratio(
        "tui_gateway_p99", total["serve --tui"]["p99"], total["serve"]["p99"], "serve"
    )
    print(f"serve --tui takes {1 / p50:.2f}× serve's time at p50 and {1 / p99:.2f}× at p99")
    shown = [ln for ln in res["screen"].splitlines() if "requests" in ln][:1]
    print(f"the workbench's requests view at the end: {shown[0].strip(' ─╰╯') if shown else '?'}")
    write_result(
        "gateway_tui",
        {
            "n": args.n,
            "rounds": args.rounds,
            "seconds": res["seconds"],
            "total_ms": total,
            "per_round_ms": per_round,
            "ratio_p50": p50,
            "ratio_p99": p99,
            "terminal": f"tmux {COLUMNS}x{LINES}",
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
