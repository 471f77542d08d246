"""P5: the TUI's first frame, and a 10k-event flood, against an empty Textual app.

- First frame, whole process: a fresh interpreter that imports the app, builds it and
  runs it headless (``run_test``, 120×40) until the first screen is mounted and its
  pending messages are handled (``pilot.pause()``): wall-clock time from the parent's
  spawn to that point (the child's exit is not counted),
  the median of ``--runs``, alternating with the same for ``textual.app.App()`` with
  nothing in it. The ratio is empty ÷ ours (1.0: our first frame costs no more than an
  empty app's). Ours is the real ``SwitchyardApp`` with a real session (audit chain,
  budget ledger, approvals on its bus) in a temporary data dir; the child checks that
  ``torch`` (and ``llama_cpp``) were not imported by then.
- In-process first frame: the same, timed inside the child from building the app on
  (interpreter start-up excluded; the app's own imports, made as it is built, included:
  ``textual.app`` for the empty one), for both apps. Goal (issue 20): ours ≤ 400 ms.
- Flood: 10,000 audit lines published on the app's bus as fast as the bus takes them
  (audit lines are never dropped: the publisher waits for room), timed until the
  escalations pane holds all of them and a frame has been drawn. Reported against the
  empty app's in-process first frame (ratio empty first frame ÷ flood), with events/s.

Run: python -m bench.tui_bench [--runs 5] [--events 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SIZE = (120, 40)
FIRST_FRAME_GOAL_S = 0.400


# ── the child ────────────────────────────────────────────────────────────────────────────


def _switchyard_app(data_dir: Path) -> Any:
    from app.bus import Bus
    from app.config import Settings
    from app.policy import load_policy
    from app.router.approvals import BusDecider
    from app.router.session import Session, open_session
    from app.tui.app import SwitchyardApp

    @asynccontextmanager
    async def connect(bus: Bus) -> Any:
        settings = Settings(data_dir=data_dir)
        async with open_session(
            settings, load_policy().policy, decider=BusDecider(bus), bus=bus
        ) as session:
            yield session

    async def runner(session: Session, task: str, control: Any) -> None:
        return None

    return SwitchyardApp(connect=connect, runner=runner, repo=data_dir)


def _empty_app() -> Any:
    from textual.app import App

    return App()


async def _first_frame(which: str, events: int, data_dir: Path, spawned: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    app = _switchyard_app(data_dir) if which == "switchyard" else _empty_app()
    out: dict[str, Any] = {}
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        out["first_frame_s"] = time.perf_counter() - t0
        out["since_spawn_s"] = time.time() - spawned
        out["torch_loaded"] = "torch" in sys.modules
        out["llama_cpp_loaded"] = "llama_cpp" in sys.modules
        if which == "switchyard" and events:
            out.update(await _flood(app, pilot, events))
    return out


async def _flood(app: Any, pilot: Any, events: int) -> dict[str, Any]:
    from app.bus import AuditAppended
    from app.tui.panes.escalations import EscalationsPane

    pane = app.screen.query_one(EscalationsPane)
    # Let the session open (its worker) so its own lines are in before we count.
    for _ in range(200):
        if app.session is not None:
            break
        await asyncio.sleep(0.01)
    await pilot.pause()
    base = len(pane.lines)
    session = app.session.id if app.session is not None else "bench"
    lines = [
        {
            "seq": i + 1,
            "ts": "2026-01-01T12:00:00.000Z",
            "session": session,
            "run": None,
            "kind": "call" if i % 2 else "route",
            "role": "implementer",
            "from": None,
            "to": "qwen2.5-coder-7b@llamacpp_inprocess",
            "reason_codes": [],
            "values": {"tokens_in": 200 + i % 50, "tokens_out": 20, "latency_ms": 12.5},
            "policy_version": "1.0.0",
            "provenance": {},
            "detail": f"implementer → qwen2.5-coder-7b (in-process) #{i}",
            "prev_hash": "0" * 64,
            "hash": f"{i:064x}",
        }
        for i in range(events)
    ]
    t0 = time.perf_counter()
    for line in lines:
        await app.bus.publish(AuditAppended(session=session, line=line))
    published = time.perf_counter() - t0
    for _ in range(24_000):  # two minutes at most
        if len(pane.lines) >= base + events:
            break
        await asyncio.sleep(0.005)
    await pilot.pause()
    return {
        "flood_events": events,
        "flood_s": time.perf_counter() - t0,
        "flood_publish_s": published,
        "pane_lines": len(pane.lines) - base,
    }


def child(which: str, events: int, spawned: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = asyncio.run(_first_frame(which, events, Path(tmp), spawned))
    print("RESULT " + json.dumps(out), flush=True)


# ── the parent ───────────────────────────────────────────────────────────────────────────


def _spawn(which: str, events: int, env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    """(seconds from spawn to the child's first frame, what the child measured)."""
    cmd = [sys.executable, "-m", "bench.tui_bench", "--child", which, "--events", str(events)]
    proc = subprocess.run(
        [*cmd, "--spawned", repr(time.time())],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            data: dict[str, Any] = json.loads(line[7:])
            return float(data["since_spawn_s"]), data
    raise RuntimeError(f"tui_bench child ({which}) failed:\n{proc.stdout}\n{proc.stderr}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--child", choices=("switchyard", "empty"), help=argparse.SUPPRESS)
    ap.add_argument("--spawned", type=float, default=0.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.events, args.spawned or time.time())
        return 0

    from bench._common import print_machine, print_ratio, write_result

    print_machine()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    ours_wall: list[float] = []
    empty_wall: list[float] = []
    ours_in: list[float] = []
    empty_in: list[float] = []
    floods: list[dict[str, Any]] = []
    torch_seen = llama_seen = False
    for i in range(args.runs):
        order = ("switchyard", "empty") if i % 2 == 0 else ("empty", "switchyard")
        for which in order:
            # The flood rides along on the first run of ours only (it is timed apart).
            events = args.events if which == "switchyard" and not floods else 0
            wall, data = _spawn(which, events, env)
            if which == "switchyard":
                ours_wall.append(wall)
                ours_in.append(data["first_frame_s"])
                torch_seen |= data["torch_loaded"]
                llama_seen |= data["llama_cpp_loaded"]
                if "flood_s" in data:
                    floods.append(data)
            else:
                empty_wall.append(wall)
                empty_in.append(data["first_frame_s"])
    w_ours, w_empty = statistics.median(ours_wall), statistics.median(empty_wall)
    i_ours, i_empty = statistics.median(ours_in), statistics.median(empty_in)
    flood = floods[0]
    load = os.getloadavg()
    print(
        f"first frame, whole process: switchyard {w_ours * 1000:.0f} ms · empty Textual app "
        f"{w_empty * 1000:.0f} ms (median of {args.runs})"
    )
    print(
        f"first frame, in process (the app's imports included): switchyard "
        f"{i_ours * 1000:.0f} ms · "
        f"empty {i_empty * 1000:.0f} ms"
    )
    print(
        f"flood: {flood['flood_events']} audit lines on the bus → all in the escalations pane "
        f"and drawn in {flood['flood_s'] * 1000:.0f} ms "
        f"({flood['flood_events'] / flood['flood_s']:.0f} events/s; publishing took "
        f"{flood['flood_publish_s'] * 1000:.0f} ms)"
    )
    print(f"torch imported by the first frame: {torch_seen}; llama_cpp: {llama_seen}")
    print(f"load average during the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    r_first = print_ratio("tui_first_frame", w_ours, w_empty, "empty Textual app first frame")
    print(
        f"goal: first frame in process ≤ {FIRST_FRAME_GOAL_S * 1000:.0f} ms "
        f"({i_ours * 1000:.0f} ms; the empty app {i_empty * 1000:.0f} ms under the same load): "
        f"{'reached' if i_ours <= FIRST_FRAME_GOAL_S else 'NOT reached'}"
    )
    r_flood = print_ratio(
        f"tui_flood_{flood['flood_events']}",
        flood["flood_s"],
        i_empty,
        "empty Textual app first frame (in process)",
    )
    path = write_result(
        "p5_tui",
        {
            "first_frame_wall_s": {"switchyard": ours_wall, "empty": empty_wall},
            "first_frame_in_process_s": {"switchyard": ours_in, "empty": empty_in},
            "median_wall_s": {"switchyard": w_ours, "empty": w_empty},
            "median_in_process_s": {"switchyard": i_ours, "empty": i_empty},
            "flood": flood,
            "torch_loaded": torch_seen,
            "llama_cpp_loaded": llama_seen,
            "ratio_first_frame": r_first,
            "ratio_flood": r_flood,
            "goal_first_frame_s": FIRST_FRAME_GOAL_S,
            "loadavg": load,
        },
        packages=("textual", "pydantic", "aiosqlite"),
    )
    print(f"results: {path}")
    if torch_seen:
        print("FAIL: torch was imported before the first frame", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
