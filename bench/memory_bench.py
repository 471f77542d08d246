"""The memory's first search after a model-free harvest, and the searches after it.

``switchyard memory harvest --no-embed`` keeps a repository's commits without loading a
model; the first ``memory search`` then embeds every one of them (a long-life audit:
88 s at 3.8k memories), and each later search pays torch's import and the TF-IDF fit.
This times, through the real CLI in a process of its own, each in a fresh data dir:

- ``harvest``: ``memory harvest --repo REPO --no-embed``;
- ``first``: the first ``memory search --json`` (it embeds every memory);
- ``warm``: the same search again (nothing to embed);
- ``tfidf``: the same with ``--no-embed`` (no model at all).

Wall time and CPU time (the child's user + system) each. With ``--against DIR`` (another
checkout of Switchyard, e.g. ``git worktree add /tmp/before HEAD~3``) both trees run in
turn, round by round, on the same repository, and the warm searches' hits are compared
(the CLI's clock is the system's: a tie that recency breaks may differ between runs).

Offline: the hub's offline switches are set; nothing is downloaded.

Run: python -m bench.memory_bench [--repo PATH] [--against DIR] [--rounds 2] [--query Q]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import machine_info, print_machine, write_result

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("torch", "sentence-transformers", "transformers", "scikit-learn")
STEPS = ("harvest", "first", "warm", "tfidf")


def cli(tree: Path, data: Path, *args: str) -> tuple[float, float, str]:
    """``switchyard ARGS`` run from ``tree`` with its own home: wall s, CPU s, stdout."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "SWITCHYARD_"))},
        "HOME": str(data / "home"),
        "XDG_DATA_HOME": str(data / "xdg-data"),
        "XDG_CONFIG_HOME": str(data / "xdg-config"),
        "XDG_CACHE_HOME": str(data / "xdg-cache"),
        "XDG_STATE_HOME": str(data / "xdg-state"),
        "SWITCHYARD_DATA_DIR": str(data / "switchyard"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "app", "memory", *args],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: memory {' '.join(args)} exited {done.returncode}: {done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def one_round(tree: Path, repo: Path, query: str, scratch: Path) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(dir=scratch))
    times: dict[str, Any] = {}
    times["harvest"] = cli(tree, data, "harvest", "--repo", str(repo), "--no-embed")[:2]
    db = data / "switchyard" / "memory.sqlite3"
    with sqlite3.connect(db) as conn:
        memories = int(conn.execute("SELECT COUNT(*) FROM memories").fetchone()[0])
    times["first"] = cli(tree, data, "search", query, "--json")[:2]
    wall, cpu, out = cli(tree, data, "search", query, "--json")
    times["warm"] = (wall, cpu)
    times["tfidf"] = cli(tree, data, "search", query, "--json", "--no-embed")[:2]
    hits = [h["id"] for h in json.loads(out)["hits"]]
    return {"memories": memories, "times": times, "hits": hits}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--repo", type=Path, default=ROOT, help="git repository to harvest")
    ap.add_argument("--against", type=Path, help="another Switchyard checkout to compare")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--query", default="budget ledger reservation")
    args = ap.parse_args()
    print_machine(machine_info(PACKAGES))
    trees = {"this tree": ROOT}
    if args.against is not None:
        trees["against"] = args.against.resolve()
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as d:
        for r in range(args.rounds):
            # alternate which goes first, so neither always meets the same load
            order = list(trees.items()) if r % 2 == 0 else list(trees.items())[::-1]
            for name, tree in order:
                run = one_round(tree, args.repo, args.query, Path(d))
                runs[name].append(run)
                steps = " · ".join(
                    f"{s} {run['times'][s][0]:.1f} s ({run['times'][s][1]:.1f} s CPU)"
                    for s in STEPS
                )
                print(f"round {r + 1} {name}: {run['memories']} memories · {steps}", flush=True)
    for name, rs in runs.items():
        n = rs[0]["memories"]
        best = {s: min(run["times"][s][0] for run in rs) for s in STEPS}
        print(
            f"{name}, best of {len(rs)}: "
            + " · ".join(f"{s} {best[s]:.1f} s" for s in STEPS)
            + f"; the first search {1000 * best['first'] / n:.0f} ms a memory over {n}"
        )
    if len(runs) == 2:
        same = all(a["hits"] == b["hits"] for a, b in zip(*runs.values(), strict=True))
        print(f"warm search hits, same ids in the same order: {'yes' if same else 'NO'}")
    write_result(
        "memory", {"query": args.query, "repo": str(args.repo), "runs": runs}, packages=PACKAGES
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
