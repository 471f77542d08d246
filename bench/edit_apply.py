"""Edit apply rate on real history: Switchyard's applier vs ``git apply`` and ``patch``.

Single-file changes from the history of the repositories given (:mod:`bench.edit_history`)
are turned into edits, perturbed the way models err, and applied by:

- **switchyard (blocks)**: the SEARCH/REPLACE blocks a model writes, parsed by
  :func:`app.pipeline.edits.parse.parse_edits` and applied by
  :func:`app.pipeline.edits.apply.apply_edits` (the prompt's format);
- **switchyard (diff)**: the same perturbed change as a unified diff, through the same
  parser and applier (a unified diff is still accepted);
- **git apply**: ``git apply --recount --whitespace=nowarn`` on that unified diff (what
  the Implementer used before);
- **patch**: GNU ``patch -p1 --fuzz=3`` on that unified diff.

Each result is *correct* (byte-identical to the real commit's file), *refused* (nothing
applied) or *wrong* (applied, but not to what the commit has; a file ``patch`` left
half-applied when some hunks failed counts here). Goals (issue 16): over all
kinds but "occurs twice", at least 95% of Switchyard's blocks applied correctly; and no
wrong application at all, "occurs twice" included.

Run: python -m bench.edit_apply [--repo GIT_DIR ...] [--commits 150] [--seed 7] [--json]
(default repositories: ``SWITCHYARD_BENCH_REPOS``, else this project's own history). The
figures are reported per repository and pooled over the ones the applier was tuned on
(``--tuned``, default: click and this project) and the untouched ones. The closing note's
run: ``--repo`` for each of pallets/click, this project, psf/requests, encode/httpx and
python-attrs/attrs (bare git dirs are fine). Outcomes do not depend on the machine's load
(nothing is timed); the load is recorded all the same.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from app.pipeline.edits.apply import apply_edits
from app.pipeline.edits.parse import EditFormatError, parse_edits
from app.pipeline.edits.render import block, reply, trailer
from bench._common import print_machine, write_result
from bench.edit_history import KINDS, Case, Hunk, cases

ROOT = Path(__file__).resolve().parent.parent
APPLIERS = ("switchyard (blocks)", "switchyard (diff)", "git apply", "patch --fuzz=3")
GOAL_CORRECT = 0.95
#: the histories earlier work on the applier was tuned on (its misses were studied and
#: fixed): a figure on them is an upper bound, the untouched ones say how it generalises
TUNED_ON = ("pallets+click", ROOT.name)
OUTCOMES = ("correct", "refused", "wrong")


# ── the edit, written three ways ─────────────────────────────────────────────────────────


def blocks_text(case: Case) -> str:
    parts = []
    for h in case.hunks:
        old, new = _numbered(h)
        search, replace = "".join(t + "\n" for t in old), "".join(t + "\n" for t in new)
        parts.append(block(case.path, search, replace))
    return reply(parts, 0.8)


def _numbered(h: Hunk) -> tuple[list[str], list[str]]:
    """SEARCH and REPLACE lines; with ``numbers``, the copied lines carry them."""
    if h.numbers is None:
        return h.old(), h.new()
    old: list[str] = []
    new: list[str] = []
    n = h.numbers
    for g, t in h.ops:
        if g == "+":
            new.append(t)
            continue
        line = f"{n:4} {t}"
        n += 1
        old.append(line)
        if g == " ":
            new.append(line)
    return old, new


def diff_text(case: Case) -> str:
    out = [f"--- a/{case.path}\n", f"+++ b/{case.path}\n"]
    for h in case.hunks:
        n_old, n_new = len(h.old()), len(h.new())
        if h.no_numbers:
            out.append("@@ @@\n")
        else:
            out.append(f"@@ -{h.start},{n_old} +{h.new_start},{n_new} @@\n")
        out += [f"{g}{t}\n" for g, t in h.ops]
    return "".join(out)


# ── the appliers ─────────────────────────────────────────────────────────────────────────


def switchyard(text: str, case: Case) -> tuple[str | None, str]:
    try:
        edits = parse_edits(text, exists=lambda path: path == case.path)  # as the product asks
    except EditFormatError as exc:
        return None, "format: " + exc.problems[0][:120]
    applied = apply_edits({case.path: case.before}, edits.edits)
    if not applied.ok:
        first = applied.refusals[0]
        return None, f"{first.reason}: {first.message.splitlines()[0][:160]}"
    return applied.files.get(case.path, case.before), ""


def external(argv: list[str], diff: str, case: Case) -> tuple[str | None, str]:
    with tempfile.TemporaryDirectory(prefix="edit-bench-") as tmp:
        target = Path(tmp) / case.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(case.before)
        proc = subprocess.run(
            argv,
            cwd=tmp,
            input=diff,
            capture_output=True,
            text=True,
            check=False,
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "LC_ALL": "C",
                "GIT_CONFIG_NOSYSTEM": "1",
                "HOME": tmp,
            },
        )
        after = target.read_text()
        if proc.returncode != 0 and after == case.before:
            said = (proc.stderr or proc.stdout).strip().splitlines()
            return None, said[0][:160] if said else f"exit {proc.returncode}"
        # patch leaves the hunks it could apply when others fail: a half-applied file
        return after, "" if proc.returncode == 0 else "half applied"


GIT = ["git", "apply", "--recount", "--whitespace=nowarn", "-"]
PATCH = [
    "patch",
    "-p1",
    "--fuzz=3",
    "--batch",
    "--forward",
    "--silent",
    "--no-backup-if-mismatch",
    "-r",
    "-",
]


def run_case(case: Case) -> dict[str, tuple[str, str]]:
    """Applier → (outcome, why) for one perturbed case."""
    diff = diff_text(case)
    results: dict[str, tuple[str | None, str]] = {
        "switchyard (blocks)": switchyard(blocks_text(case), case),
        "switchyard (diff)": switchyard(diff + trailer(0.8) + "\n", case),
        "git apply": external(GIT, diff, case),
        "patch --fuzz=3": external(PATCH, diff, case),
    }
    out: dict[str, tuple[str, str]] = {}
    for name, (text, why) in results.items():
        if text is None:
            out[name] = ("refused", why)
        elif text == case.after:
            out[name] = ("correct", "")
        else:
            out[name] = ("wrong", why)
    return out


# ── the run and the table ────────────────────────────────────────────────────────────────


def repo_name(repo: str | Path) -> str:
    """``/x/pallets+click/repo`` → ``pallets+click``; ``/x/main/.git`` → ``main``."""
    path = Path(repo)
    return path.parent.name if path.name in ("repo", ".git") else path.name


def evaluate(all_cases: Sequence[Case], seed: int, log: Callable[[str], None]) -> dict[str, Any]:
    counts: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    by_repo: dict[str, dict[str, dict[str, Counter[str]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(Counter))
    )
    samples: dict[str, list[dict[str, str]]] = defaultdict(list)
    for n, case in enumerate(all_cases, 1):
        for kind, perturb in KINDS.items():
            rng = random.Random(f"{seed}:{case.commit}:{kind}")
            changed = perturb(case, rng)
            if changed is None:
                continue
            for applier, (outcome, why) in run_case(changed).items():
                counts[kind][applier][outcome] += 1
                by_repo[repo_name(case.repo)][kind][applier][outcome] += 1
                key = f"{applier} {outcome} · {kind}"
                keep = applier.startswith("switchyard") and outcome != "correct"
                if keep and len(samples[key]) < 10:
                    samples[key].append(
                        {
                            "kind": kind,
                            "repo": repo_name(case.repo),
                            "commit": case.commit[:12],
                            "path": case.path,
                            "why": why,
                        }
                    )
        if n % 25 == 0:
            log(f"  {n}/{len(all_cases)} cases")
    return {
        "counts": _plain(counts),
        "counts_by_repo": {r: _plain(c) for r, c in by_repo.items()},
        "samples": dict(samples),
    }


def _plain(counts: dict[str, dict[str, Counter[str]]]) -> dict[str, dict[str, dict[str, int]]]:
    return {k: {a: dict(c) for a, c in v.items()} for k, v in counts.items()}


def share(c: Counter[str] | dict[str, int], what: str) -> float:
    total = sum(c.values())
    return c.get(what, 0) / total if total else 0.0


def table(counts: dict[str, dict[str, dict[str, int]]]) -> list[str]:
    head = "| perturbation | n | " + " | ".join(APPLIERS) + " |"
    legend = "| (each cell: correct / refused / wrong) | |" + " |" * len(APPLIERS)
    rows = [head, "|" + "---|" * (len(APPLIERS) + 2), legend]
    for kind in KINDS:
        if kind not in counts:
            continue
        per = counts[kind]
        n = sum(per[APPLIERS[0]].values())
        cells = [" / ".join(f"{100 * share(per[a], o):.1f}%" for o in OUTCOMES) for a in APPLIERS]
        rows.append(f"| {kind} | {n} | " + " | ".join(cells) + " |")
    return rows


def goals(counts: dict[str, dict[str, dict[str, int]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for applier in APPLIERS:
        total: Counter[str] = Counter()
        wrong = 0
        for kind, per in counts.items():
            wrong += per[applier].get("wrong", 0)
            if kind != "occurs twice":
                total.update(per[applier])
        out[applier] = {
            "correct_share_excluding_twice": share(total, "correct"),
            "n_excluding_twice": sum(total.values()),
            "wrong_total": wrong,
        }
    return out


def _groups(
    by_repo: dict[str, dict[str, dict[str, dict[str, int]]]], tuned: set[str]
) -> dict[str, dict[str, Any]]:
    """The goals per repository, and over the tuned and the untouched ones."""
    out: dict[str, dict[str, Any]] = {}
    pooled: dict[str, dict[str, dict[str, Counter[str]]]] = {}
    for repo, counts in sorted(by_repo.items()):
        label = "tuned" if repo in tuned else "untouched"
        out[f"{repo} ({label})"] = goals(counts)
        into = pooled.setdefault(f"all {label}", defaultdict(lambda: defaultdict(Counter)))
        for kind, per in counts.items():
            for applier, c in per.items():
                into[kind][applier].update(c)
    for name, summed in sorted(pooled.items()):
        out[name] = goals(_plain(summed))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", action="append", type=Path, help="git dir or work tree (repeat)")
    ap.add_argument("--commits", type=int, default=150, help="cases per repository at most")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument(
        "--tuned",
        action="append",
        default=None,
        help="a repository the applier was tuned on (repeat; default: "
        + ", ".join(TUNED_ON)
        + "); the others are reported as untouched",
    )
    args = ap.parse_args(argv)
    repos = (
        args.repo
        or [Path(p) for p in os.environ.get("SWITCHYARD_BENCH_REPOS", "").split(":") if p]
        or [ROOT]
    )
    quiet = args.json
    log: Callable[[str], None] = (lambda s: print(s, file=sys.stderr)) if quiet else print
    if not quiet:
        print_machine()
    load0 = os.getloadavg()
    found: list[Case] = []
    per_repo: dict[str, int] = {}
    left_out: dict[str, int] = {}
    for repo in repos:
        gitdir = repo / ".git" if (repo / ".git").exists() else repo
        stats: dict[str, int] = {}
        got = cases(gitdir, args.commits, stats)
        per_repo[str(repo)] = len(got)
        left_out[str(repo)] = stats.get("not_unique", 0)
        log(
            f"{repo}: {len(got)} single-file Python changes "
            f"({left_out[str(repo)]} left out: no context up to 12 lines made them unique)"
        )
        found += got
    if not found:
        print(
            "edit_apply: no single-file Python change found in the repositories given",
            file=sys.stderr,
        )
        return 2
    result = evaluate(found, args.seed, log)
    counts = result["counts"]
    reached = goals(counts)
    ours = reached["switchyard (blocks)"]
    verdict = {
        "correct_goal": GOAL_CORRECT,
        "correct_reached": ours["correct_share_excluding_twice"] >= GOAL_CORRECT,
        "zero_wrong_reached": ours["wrong_total"] == 0,
    }
    tuned = set(args.tuned or TUNED_ON)
    groups = _groups(result["counts_by_repo"], tuned)
    payload = {
        "repos": per_repo,
        "left_out_not_unique": left_out,
        "context_widths": {
            r: dict(Counter(c.context for c in found if repo_name(c.repo) == r))
            for r in sorted({repo_name(c.repo) for c in found})
        },
        "loadavg": {"start": load0, "end": os.getloadavg()},
        "cases": len(found),
        "seed": args.seed,
        "tuned_on": sorted(tuned),
        **result,
        "goals": reached,
        "goals_by_group": groups,
        "verdict": verdict,
    }
    path = write_result("edit_apply", payload)
    if quiet:
        print(json.dumps(payload, indent=2, default=str))
        return 0
    print("\n".join(table(counts)))
    for applier, g in reached.items():
        print(
            f"{applier}: {100 * g['correct_share_excluding_twice']:.1f}% correct over "
            f"{g['n_excluding_twice']} perturbed edits (all kinds but occurs twice); "
            f"{g['wrong_total']} wrong in all"
        )
    print(
        f"GOAL ≥{GOAL_CORRECT:.0%} correct (blocks): "
        + ("reached" if verdict["correct_reached"] else "NOT reached")
        + f" ({100 * ours['correct_share_excluding_twice']:.1f}%)"
    )
    print(
        "GOAL 0 wrong (blocks): "
        + (
            "reached"
            if verdict["zero_wrong_reached"]
            else f"NOT reached ({ours['wrong_total']} wrong)"
        )
    )
    for name, g in groups.items():
        mine = g["switchyard (blocks)"]
        print(
            f"  {name}: blocks {100 * mine['correct_share_excluding_twice']:.1f}% correct "
            f"over {mine['n_excluding_twice']}, {mine['wrong_total']} wrong; git apply "
            f"{100 * g['git apply']['correct_share_excluding_twice']:.1f}%, patch "
            f"{100 * g['patch --fuzz=3']['correct_share_excluding_twice']:.1f}% "
            f"({g['patch --fuzz=3']['wrong_total']} wrong)"
        )
    theirs = reached["git apply"]["correct_share_excluding_twice"]
    rate = ours["correct_share_excluding_twice"] / max(1e-9, theirs)
    print(f"RATIO edit apply rate: {rate:.2f}× vs git apply")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
