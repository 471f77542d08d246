"""bench/retrieval_quality.py on a small synthetic history (a real git repo in a temp
dir): the bm25s baselines see what they are said to see (paths, split identifiers,
whole files read through git), every system is scored on the same cases, and the best
baseline is the one with the highest MRR. Its figures are the bench's, not a test's."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import bench._common
from bench import retrieval_quality as rq
from bench.retrieval_baselines import ChunkRanker, FileRanker, code_tokens

FILES = {
    "pkg/headers.py": "def parseHeaderLine(line):\n    name, _, value = line.partition(':')\n"
    "    return name.strip(), value.strip()\n",
    "pkg/cookies.py": "def load_cookie_jar(path):\n    return open(path).read().split(';')\n",
    "pkg/retry.py": "class RetryPolicy:\n    def backoff_seconds(self, attempt):\n"
    "        return 2 ** attempt\n",
    "README.md": "# pkg\n\nHeaders, cookies and retries.\n",
}
EDITS = [
    ("pkg/headers.py", "value.strip()", "value.strip().lower()", "Lower-case header values"),
    ("pkg/cookies.py", "split(';')", "split('; ')", "Cookie jar: split on the separator"),
    ("pkg/retry.py", "2 ** attempt", "min(60, 2 ** attempt)", "Cap the retry backoff seconds"),
]


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)
    return out.stdout.decode()


@pytest.fixture
def history(tmp_path: Path) -> Path:
    repo = tmp_path / "hist"
    (repo / "pkg").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "T")
    git(repo, "config", "user.email", "t@example.invalid")
    for path, text in FILES.items():
        (repo / path).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    for path, old, new, message in EDITS:
        target = repo / path
        target.write_text(target.read_text().replace(old, new))
        git(repo, "commit", "-qam", message)
    return repo


def test_the_code_tokenizer_splits_identifiers_and_keeps_them_whole() -> None:
    assert code_tokens("parseHeaderLine") == ["parseheaderline", "parse", "header", "line"]
    assert code_tokens("pkg/load_cookie_jar.py") == [
        "pkg",
        "load_cookie_jar",
        "load",
        "cookie",
        "jar",
        "py",
    ]


def test_bm25s_readme_tokens_miss_a_camel_case_name_the_code_tokenizer_finds() -> None:
    ids, paths = ["a", "b"], ["pkg/headers.py", "pkg/cookies.py"]
    texts = [FILES["pkg/headers.py"], FILES["pkg/cookies.py"]]
    plain = ChunkRanker().scores(ids, paths, texts, "parse header")
    code = ChunkRanker(code=True).scores(ids, paths, texts, "parse header")
    assert plain[0] == 0.0  # "parseheaderline" is one token to bm25s's tokenizer
    assert code[0] > code[1] == 0.0


def test_the_path_counts_only_when_asked() -> None:
    ids, paths, texts = (
        ["a", "b"],
        ["pkg/retry.py", "pkg/other.py"],
        ["value = compute()", "other = thing()"],
    )
    assert not ChunkRanker(code=True).scores(ids, paths, texts, "retry").any()
    with_path = ChunkRanker(with_path=True, code=True).scores(ids, paths, texts, "retry")
    assert with_path[0] > with_path[1] == 0.0


def test_whole_files_are_read_through_git_with_their_path(history: Path) -> None:
    tree = git(history, "ls-tree", "-r", "HEAD").splitlines()
    files = sorted((line.split("\t")[1], line.split()[2]) for line in tree)
    scores = FileRanker(history).scores(files, "cookie jar separator")
    best = max(range(len(files)), key=lambda i: scores[i])
    assert files[best][0] == "pkg/cookies.py"


def test_every_system_is_scored_on_every_case_and_the_best_baseline_is_the_highest(
    history: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench._common, "RESULTS", tmp_path / "results")
    cases = rq.collect_cases(history, 10)
    assert [c.truth for c in cases] == [[p] for p, *_ in reversed(EDITS)]
    rows = rq.evaluate(history, cases, ["hybrid"], True, lambda _: None)
    names = [s.name for s in rows]
    assert names == [
        "stage0 (hybrid)",
        rq.BASELINE_FILES,
        rq.BASELINE_CHUNKS,
        "bm25s",
        "bm25s + path in text",
    ]
    assert all(len(s.ranks) == len(cases) for s in rows)
    assert not rows[1].chunk_ranks and all(len(s.chunk_ranks) == len(cases) for s in rows[2:])
    best = rq.best_baseline(rows)
    assert best.mrr() == max(s.mrr() for s in rows[1:])
    assert rq.main(["--repo", str(history), "--weighting", "hybrid", "--name", "rq"]) == 0
    out = json.loads((tmp_path / "results" / "rq.json").read_text())
    assert out["split"] == "untouched" and out["best_baseline"] in names[1:]
    ratio = out["goal"]["by_weighting"]["stage0 (hybrid)"]["ratio_vs_best"]
    assert ratio == pytest.approx(
        out["rows"][0]["mrr"] / max(r["mrr"] for r in out["rows"][1:]), abs=1e-3
    )


def test_a_corpus_without_a_single_token_scores_nothing() -> None:
    assert ChunkRanker(code=True).scores(["a"], ["a"], ["x = 1"], "x").tolist() == [0.0]
