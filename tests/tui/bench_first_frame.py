"""Time to the first frame of ``switchyard tui``, and what start-up imported.

Run: ``python -m tests.tui.bench_first_frame [--runs 5]`` (a benchmark, not a test: no
timed assertions anywhere). Each run is a fresh interpreter that runs the real
``switchyard tui`` command (settings, theme check, the app with the user's session factory
and the real pipeline runner, in a scratch data dir) headless at 160x48, and reports when
the first frame has been drawn (the first refresh after mount), whether torch,
llama_cpp or sentence_transformers were loaded by then, and whether what the first frame
does not draw (the policy's models, the router, the audit log, httpx) was.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import time
t0 = time.perf_counter()
import json, sys
import app.tui.app as tui_app
from app.cli import tui_cmd
from app.cli.main import main

t_import = time.perf_counter()
run = tui_app.SwitchyardApp.run

def first_frame(self, *args, **kwargs):
    def ready() -> None:
        heavy = [m for m in ("torch", "llama_cpp", "sentence_transformers") if m in sys.modules]
        # what the first frame does not draw: the policy's models (~50 ms), the router, httpx
        later = ("app.policy.schema", "app.router.service", "app.audit.log", "httpx")
        print(json.dumps({"import_s": t_import - t0, "first_frame_s": time.perf_counter() - t0,
                          "heavy": sorted(heavy),
                          "deferred": sorted(m for m in later if m in sys.modules)}), flush=True)
        self.exit()

    self.call_after_refresh(ready)
    return run(self, headless=True, size=(160, 48))

tui_app.SwitchyardApp.run = first_frame
tui_cmd.require_terminal = lambda: None  # headless, as the measure is taken
main(["tui", "--repo", "."])  # the real command: settings, theme check, app, session
"""


def one_run(cwd: Path) -> dict[str, float | list[str]]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "SWITCHYARD_DATA_DIR": f"{tmp}/data", "XDG_CONFIG_HOME": f"{tmp}/c"}
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", CHILD],
            capture_output=True,
            text=True,
            cwd=cwd,
            env=env,
            check=True,
            timeout=120,
        )
        wall = time.perf_counter() - started
    result: dict[str, float | list[str]] = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = wall
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[2]
    runs = [one_run(root) for _ in range(args.runs)]
    for key in ("import_s", "first_frame_s", "process_s"):
        values = [float(r[key]) for r in runs]  # type: ignore[arg-type]
        print(f"{key:>14}: median {statistics.median(values):.3f}s  min {min(values):.3f}s")
    heavy = sorted({m for r in runs for m in r["heavy"]})  # type: ignore[union-attr]
    print(f"{'heavy at start':>14}: {', '.join(heavy) or 'none (torch not imported)'}")
    early = sorted({m for r in runs for m in r["deferred"]})  # type: ignore[union-attr]
    print(f"{'not deferred':>14}: {', '.join(early) or 'none (the policy, the router: later)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
