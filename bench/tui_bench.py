"""P5: the TUI's first frame, the session's data on screen, and a 10k-event flood,
against an empty Textual app.

Each run is a fresh interpreter that imports the app, builds it and runs it headless
(``run_test``, 120×40). Three moments are timed, in the child from building the app on
(interpreter start-up excluded; the app's own imports, made as it is built, included:
``textual.app`` for the empty one), for both apps:

- **First frame**: the first screen has been composed and drawn (a callback queued with
  ``call_after_refresh`` before the app starts runs after the first refresh). Goal
  (issue 20): ours ≤ 400 ms.
- **Session on screen** (ours only): the session is open and the header shows it (its id
  set by ``SessionReady``), and a frame has been drawn after that (timed as that frame's
  ``end_startup`` starts, before its collection: see ``_mark_session_drawn``). The
  workbench draws its layout first ("opening session…") and opens the session in a
  worker after the first frame, so this is what a user waits for before a task can
  start; it is reported beside the first frame so the first frame's figure does not
  hide it.
- **Settled** (the measure before the session moved after the first frame): after
  mounting, ``pilot.pause()``, which waits until the process has been idle for 20 ms, so
  it includes whatever work follows the first frame.

The collector: ``switchyard tui`` makes young collections rarer from before its imports
until the session is on screen, then collects once and freezes what start-up built
(app/heap.py; it ran ~140 times, ~80 ms, before the first frame with CPython's default
thresholds). Ours is timed that way, as the command runs it; the empty app is timed both
with Textual's defaults (as when issue 20 was filed) and with the same collector set-up
(``empty-held``: any app could have it, so the in-process ratio is against that one).

Ours is the real ``SwitchyardApp`` with a real session (audit chain, budget ledger,
approvals on its bus) in a temporary data dir, opened the way ``switchyard tui`` opens it
(``app.tui.defaults.connect_default``: the session's modules are imported inside the
connect); the child checks that ``torch`` (and ``llama_cpp``) were not imported by the
first frame. Whole process: wall-clock time from the parent's spawn to the first frame.
Runs alternate ours/empty; medians of ``--runs``; ratios are empty ÷ ours. ``app/`` is
compiled to bytecode first (``bench._common.compile_app``), as an installed copy is.

Flood: 10,000 audit lines published on the app's bus as fast as the bus takes them
(audit lines are never dropped: the publisher waits for room), timed until the
escalations pane has received all of them and a frame has been drawn. The pane keeps the
newest ``MAX_LINES`` (5,000) and counts the older ones it let go, so "received" is the
lines it holds plus those; a flood that never all arrives is an error, not a figure.
Reported against the empty app's in-process first frame (ratio empty first frame ÷
flood), with events/s.

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
# Wall-clock limits (not counts of sleeps: a slow machine, or a test that makes sleeps
# instant, must not shorten them). A limit reached is an error, never a figure.
SESSION_LIMIT_S = 60.0
FLOOD_LIMIT_S = 120.0
#: ours, and an empty Textual app with Textual's defaults and with our collector set-up
SIDES = ("switchyard", "empty", "empty-held")
FIRST_FRAME_GOAL_S = 0.400


# ── the child ────────────────────────────────────────────────────────────────────────────


def _switchyard_app(data_dir: Path) -> Any:
    from app.heap import hold_startup_collections

    hold_startup_collections()  # as `switchyard tui` does before its imports (app/heap.py)
    from app.tui.app import SwitchyardApp

    # As connect_default does: the session's modules are imported when it opens.
    @asynccontextmanager
    async def connect(bus: Any) -> Any:
        from app.config import Settings
        from app.policy import load_policy
        from app.router.approvals import BusDecider
        from app.router.session import open_session

        settings = Settings(data_dir=data_dir)
        async with open_session(
            settings, load_policy().policy, decider=BusDecider(bus), bus=bus
        ) as session:
            yield session

    async def runner(session: Any, task: str, control: Any) -> None:
        return None

    return SwitchyardApp(connect=connect, runner=runner, repo=data_dir)


def _empty_app(*, held: bool = False) -> Any:
    if held:  # the same collector set-up as ours: any app could have it
        from app.heap import hold_startup_collections

        hold_startup_collections()
    from textual.app import App

    return App()


def _mark_session_drawn(app: Any, out: dict[str, Any], t0: float) -> None:
    """Time the frame that first shows the session: the workbench queues
    ``end_startup`` after the refresh that follows ``SessionReady`` (the header then shows
    the session's id), so its call is that frame's end. Timed as it starts: the collection
    and freeze it runs (~56 ms) come after what the user sees, and a mark of our own queued
    after the same refresh would count them."""
    end_startup = app.end_startup

    def timed_end_startup() -> None:
        if app.session is not None and app.home.header.session:
            out.setdefault("session_on_screen_s", time.perf_counter() - t0)
        end_startup()

    app.end_startup = timed_end_startup


async def _first_frame(which: str, events: int, data_dir: Path, spawned: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    if which == "switchyard":
        app = _switchyard_app(data_dir)
    else:
        app = _empty_app(held=which == "empty-held")
    out: dict[str, Any] = {}

    def first_frame() -> None:
        out["first_frame_s"] = time.perf_counter() - t0
        out["since_spawn_s"] = time.time() - spawned
        out["torch_loaded"] = "torch" in sys.modules
        out["llama_cpp_loaded"] = "llama_cpp" in sys.modules

    # Queued before the app runs: it runs after the first screen's first refresh.
    app.call_after_refresh(first_frame)
    if which == "switchyard":
        _mark_session_drawn(app, out, t0)
    async with app.run_test(size=SIZE) as pilot:
        if which == "switchyard":
            deadline = time.monotonic() + SESSION_LIMIT_S
            while "session_on_screen_s" not in out:
                if app.session_error is not None:
                    raise RuntimeError(f"the session did not open: {app.session_error}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the session was not on screen after {SESSION_LIMIT_S:g} s")
                await asyncio.sleep(0.002)
        await pilot.pause()
        out["settled_s"] = time.perf_counter() - t0
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

    def received() -> int:
        # the pane keeps its newest MAX_LINES and counts the ones it let go
        return len(pane.lines) + pane.dropped

    base = received()
    session = app.session.id if app.session is not None else "bench"
    lines: list[dict[str, Any]] = [
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
    # each line's text made untimed: the audit log has it when it publishes (timed: the
    # event made from it and published, as the log does)
    texts = [json.dumps(line, ensure_ascii=False) for line in lines]
    t0 = time.perf_counter()
    for text in texts:
        await app.bus.publish(AuditAppended(session=session, text=text))
    published = time.perf_counter() - t0
    deadline = time.monotonic() + FLOOD_LIMIT_S
    while received() < base + events:
        if time.monotonic() > deadline:
            # a time-out is not a figure: say how many came, and report no time
            raise RuntimeError(f"flood: {received() - base} of {events} lines reached the pane")
        await asyncio.sleep(0.005)
    await pilot.pause()
    return {
        "flood_events": events,
        "flood_s": time.perf_counter() - t0,
        "flood_publish_s": published,
        "pane_lines": received() - base,
        "pane_kept": len(pane.lines),
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
    ap.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    ap.add_argument("--spawned", type=float, default=0.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.events, args.spawned or time.time())
        return 0

    from bench._common import compile_app, print_machine, print_ratio, write_result

    print_machine()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    compile_app()
    ours_wall: list[float] = []
    empty_wall: list[float] = []
    ours_in: list[float] = []
    empty_in: list[float] = []
    held_in: list[float] = []
    ours_session: list[float] = []
    ours_settled: list[float] = []
    empty_settled: list[float] = []
    floods: list[dict[str, Any]] = []
    torch_seen = llama_seen = False
    for i in range(args.runs):
        order = SIDES[i % 3 :] + SIDES[: i % 3]  # each side goes first in turn
        for which in order:
            # The flood rides along on the first run of ours only (it is timed apart).
            events = args.events if which == "switchyard" and not floods else 0
            wall, data = _spawn(which, events, env)
            if which == "switchyard":
                ours_wall.append(wall)
                ours_in.append(data["first_frame_s"])
                ours_session.append(data["session_on_screen_s"])
                ours_settled.append(data["settled_s"])
                torch_seen |= data["torch_loaded"]
                llama_seen |= data["llama_cpp_loaded"]
                if "flood_s" in data:
                    floods.append(data)
            elif which == "empty-held":
                held_in.append(data["first_frame_s"])
            else:
                empty_wall.append(wall)
                empty_in.append(data["first_frame_s"])
                empty_settled.append(data["settled_s"])
    med = statistics.median
    w_ours, w_empty = med(ours_wall), med(empty_wall)
    i_ours, i_empty, i_held = med(ours_in), med(empty_in), med(held_in)
    s_ours = med(ours_session)
    st_ours, st_empty = med(ours_settled), med(empty_settled)
    flood = floods[0] if floods else None  # none with --events 0
    load = os.getloadavg()
    print(
        f"first frame, whole process: switchyard {w_ours * 1000:.0f} ms · empty Textual app "
        f"{w_empty * 1000:.0f} ms (median of {args.runs})"
    )
    print(
        f"first frame, in process (the app's imports included): switchyard "
        f"{i_ours * 1000:.0f} ms · empty {i_empty * 1000:.0f} ms · empty with our collector "
        f"set-up {i_held * 1000:.0f} ms"
    )
    print(
        f"session on screen (opened after the first frame; the header shows it): "
        f"switchyard {s_ours * 1000:.0f} ms"
    )
    print(
        f"settled (pause() until idle, the earlier measure): switchyard "
        f"{st_ours * 1000:.0f} ms · empty {st_empty * 1000:.0f} ms"
    )
    if flood is not None:
        print(
            f"flood: {flood['flood_events']} audit lines on the bus → all received by the "
            f"escalations pane (it keeps the newest {flood['pane_kept']}) and drawn in "
            f"{flood['flood_s'] * 1000:.0f} ms "
            f"({flood['flood_events'] / flood['flood_s']:.0f} events/s; publishing took "
            f"{flood['flood_publish_s'] * 1000:.0f} ms)"
        )
    print(f"torch imported by the first frame: {torch_seen}; llama_cpp: {llama_seen}")
    print(f"load average during the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    r_first = print_ratio("tui_first_frame", w_ours, w_empty, "empty Textual app first frame")
    r_held = print_ratio(
        "tui_first_frame_in_process",
        i_ours,
        i_held,
        "empty Textual app first frame (in process, our collector set-up)",
    )
    r_session = print_ratio(
        "tui_session_on_screen", s_ours, i_empty, "empty Textual app first frame (in process)"
    )
    print(
        f"goal: first frame in process ≤ {FIRST_FRAME_GOAL_S * 1000:.0f} ms "
        f"({i_ours * 1000:.0f} ms; the empty app {i_empty * 1000:.0f} ms under the same load; "
        f"the session on screen at {s_ours * 1000:.0f} ms): "
        f"{'reached' if i_ours <= FIRST_FRAME_GOAL_S else 'NOT reached'}"
    )
    r_flood = (
        None
        if flood is None
        else print_ratio(
            f"tui_flood_{flood['flood_events']}",
            flood["flood_s"],
            i_empty,
            "empty Textual app first frame (in process)",
        )
    )
    path = write_result(
        "p5_tui",
        {
            "first_frame_wall_s": {"switchyard": ours_wall, "empty": empty_wall},
            "first_frame_in_process_s": {
                "switchyard": ours_in,
                "empty": empty_in,
                "empty_held": held_in,
            },
            "median_wall_s": {"switchyard": w_ours, "empty": w_empty},
            "median_in_process_s": {
                "switchyard": i_ours,
                "empty": i_empty,
                "empty_held": i_held,
            },
            "session_on_screen_s": ours_session,
            "median_session_on_screen_s": s_ours,
            "settled_s": {"switchyard": ours_settled, "empty": empty_settled},
            "median_settled_s": {"switchyard": st_ours, "empty": st_empty},
            "ratio_session_on_screen": r_session,
            "goal_first_frame_reached": i_ours <= FIRST_FRAME_GOAL_S,
            "flood": flood,
            "torch_loaded": torch_seen,
            "llama_cpp_loaded": llama_seen,
            "ratio_first_frame": r_first,
            "ratio_first_frame_in_process_held": r_held,
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
