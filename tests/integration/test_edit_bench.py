"""bench/edit_apply.py on a small synthetic history (a real git repo in a temp dir): the
bench's own mining, perturbations and scoring work, and what it measures is sound (the
unperturbed edits land for everyone). Its figures are the bench's, not a test's."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import bench._common
from bench import edit_apply
from bench.edit_history import KINDS, cases, make_hunks

BASE = "".join(
    f"def f{i}(x):\n    y = x + {i}\n    if y > 10:\n        return y\n    return -y\n\n\n"
    for i in range(12)
)


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.fixture
def history(tmp_path: Path) -> Path:
    repo = tmp_path / "hist"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "T")
    git(repo, "config", "user.email", "t@example.invalid")
    text = BASE
    (repo / "mod.py").write_text(text)
    git(repo, "add", "mod.py")
    git(repo, "commit", "-qm", "base")
    for i, (old, new) in enumerate(
        [
            ("    y = x + 3\n", "    y = x + 3\n    y *= 2\n"),
            (
                "        return y\n    return -y\n\n\ndef f7",
                "        return y\n    return 0\n\n\ndef f7",
            ),
            ("def f10(x):\n", "def f10(x: int) -> int:\n"),
        ]
    ):
        assert old in text
        text = text.replace(old, new, 1)
        (repo / "mod.py").write_text(text)
        git(repo, "commit", "-qam", f"change {i}")
    return repo


def test_the_bench_mines_perturbs_and_scores_a_real_history(
    history: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    found = cases(history / ".git", 10)
    assert len(found) == 3 and all(c.path == "mod.py" for c in found)
    for case in found:  # the hunks, applied as written, are the commit
        lines = case.before.splitlines()
        for h in reversed(case.hunks):
            lines[h.start - 1 : h.start - 1 + len(h.old())] = h.new()
        assert "\n".join(lines) + "\n" == case.after
        assert case.context == 3  # unique at git's own width
        assert make_hunks(case.before, case.after, 3) == list(case.hunks)
    monkeypatch.setattr(bench._common, "RESULTS", tmp_path / "results")
    assert edit_apply.main(["--repo", str(history), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cases"] == 3 and set(out["counts"]) <= set(KINDS)
    for applier in edit_apply.APPLIERS:
        assert out["counts"]["none"][applier] == {"correct": 3}
    # git apply and patch need line numbers; Switchyard's blocks carry none
    assert out["counts"]["line numbers missing"]["git apply"] == {"refused": 3}
    assert out["counts"]["line numbers missing"]["switchyard (blocks)"] == {"correct": 3}
    assert out["goals"]["switchyard (blocks)"]["wrong_total"] == 0
    assert (tmp_path / "results" / "edit_apply.json").exists()
