"""The run's diff is what lands, byte for byte: read as text, git's output lost every CR
(a change from LF to CRLF showed as equal ``-``/``+`` lines, a lone CR became a line
break that no parser could read), and the user's diff config decided the file names
the High-Risk classifier read. Real repos, a real bundle."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.clock import ManualClock
from app.evidence.bundle import EvidenceBundle, verify_bundle
from app.pipeline.grounding import diff_size
from app.pipeline.signals import diff_files
from app.policy import load_policy
from app.policy.highrisk import HighRiskResult, classify_diff
from app.tui.evidence_data import load_run_view
from app.workspace.git import GitError, run_git_raw
from app.workspace.worktree import Worktree
from tests.integration.test_workspace_repo import git, make_repo

RUN = "20260101-120000-crlf01"


def _classify(diff: str) -> HighRiskResult:
    return classify_diff(diff, load_policy().policy.high_risk)


def _sealed(repo: Path, diff: str) -> Path:
    """A finished bundle holding ``diff`` as attempt 1's."""
    bundle = EvidenceBundle.create(repo, RUN, task="line ends", clock=ManualClock())
    bundle.write_diff(1, diff)
    bundle.finalize(status="failed", reason="a test's bundle")
    return bundle.path


def test_a_change_from_lf_to_crlf_shows_in_the_diff_the_evidence_and_the_classifier(
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path)
    wt = Worktree.create(repo, "run-1")
    source = wt.read_file("calc.py")
    assert source == "def add(a, b):\n    return a - b\n"
    assert wt.apply_files({"calc.py": source.replace("\n", "\r\n")}).ok
    diff = wt.diff()
    assert "-def add(a, b):\n-    return a - b\n+def add(a, b):\r\n+    return a - b\r\n" in diff
    assert diff_size(diff) == 4 and diff_files(diff) == ["calc.py"]
    assert _classify(diff).files == ["calc.py"]
    path = _sealed(repo, diff)
    assert b"+def add(a, b):\r\n" in (path / "diffs" / "attempt-1.diff").read_bytes()
    report = verify_bundle(path)
    assert report.ok, report.problems
    # the evidence screen reads the CRs back (read_text had made them line ends)
    view = load_run_view(repo, RUN, None, None)
    assert view.diffs == [("attempt-1", diff)]


def test_a_lone_cr_inside_a_line_stays_inside_it(tmp_path: Path) -> None:
    """Read as text, ``+x = 1\\rimport ctypes`` became two lines, the second without its
    ``+``: the classifier refused the diff as malformed."""
    wt = Worktree.create(make_repo(tmp_path), "run-1")
    assert wt.apply_files({"calc.py": "x = 1\rimport ctypes\n"}).ok
    diff = wt.diff()
    assert "+x = 1\rimport ctypes\n" in diff
    assert diff_size(diff) == 3  # two lines removed, one added
    result = _classify(diff)
    assert result.high_risk and result.files == ["calc.py"]
    assert [(f.rule_id, f.line_no) for f in result.reasons if f.source == "line"] == [
        ("unsafe_ffi_sandbox", 1)
    ]


def test_the_users_diff_config_does_not_change_what_the_classifier_reads(
    tmp_path: Path,
) -> None:
    """``diff.noprefix`` dropped the ``a/``/``b/`` the classifier strips, so it stripped
    the file's own folder instead (``c/auth.py`` read as ``auth.py``)."""
    repo = make_repo(tmp_path)
    for key, value in (
        ("diff.noprefix", "true"),
        ("diff.mnemonicPrefix", "true"),
        ("color.diff", "always"),
        ("color.ui", "always"),
        ("diff.external", str(tmp_path / "no-such-differ")),
    ):
        git(repo, "config", key, value)
    wt = Worktree.create(repo, "run-1")
    assert wt.apply_files({"c/auth.py": "TOKEN_TTL = 60\r\n", "w/x.py": "y = 2\n"}).ok
    diff = wt.diff()
    assert "\x1b" not in diff
    assert "diff --git a/c/auth.py b/c/auth.py\n" in diff and "+++ b/w/x.py\n" in diff
    assert "+TOKEN_TTL = 60\r\n" in diff
    result = _classify(diff)
    assert result.files == ["c/auth.py", "w/x.py"]
    assert result.rule_ids == ["auth_crypto_secrets_pii"]
    assert diff_files(diff) == ["c/auth.py", "w/x.py"]
    report = verify_bundle(_sealed(repo, diff))
    assert report.ok, report.problems


def test_a_failing_git_is_an_error_with_gits_own_words(tmp_path: Path) -> None:
    """The bytes runner fails as :func:`run_git` does (the diff raised GitError before)."""
    repo = make_repo(tmp_path)
    with pytest.raises(GitError) as caught:
        run_git_raw(repo, "diff", "no-such-rev", "HEAD")
    assert "no-such-rev" in caught.value.message
    assert run_git_raw(repo, "diff", "no-such-rev", check=False).returncode != 0
