"""``switchyard merge``: only through the gate, and all or nothing, in real repos."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from app.audit.log import AuditLog
from app.cli import main as cli_main
from app.cli.main import main
from app.clock import ManualClock
from app.config import load_settings
from app.evidence.bundle import EvidenceBundle, bundle_seal_line
from app.evidence.read import audit_seal
from app.policy import load_policy
from app.policy.gate import VerdictRecord
from app.workspace import merge as merge_mod
from app.workspace.merge import MergePlan, merge_run, prepare_merge
from app.workspace.sandbox import SandboxResult, run_sandboxed, sandbox_degradation_line
from app.workspace.testcmd import detect_test_command
from app.workspace.worktree import Worktree, checkout_fingerprint
from tests.integration.test_workspace_repo import commit, git, make_repo
from tests.integration.test_workspace_submodules import SUB, lib_commit, pointer_diff
from tests.integration.test_workspace_worktree import FIX, NEW_FILE

CLOUD = VerdictRecord(
    model="claude-sonnet-4.6",
    provider="anthropic",
    local=False,
    verdict="approve",
    citations_resolved=True,
)
LOCAL = VerdictRecord(
    model="qwen3-14b", provider="local", local=True, verdict="approve", citations_resolved=True
)


@pytest.fixture(autouse=True)
def _commands(monkeypatch: pytest.MonkeyPatch) -> None:
    mods = (*cli_main.COMMAND_MODULES, "app.cli.evidence_cmd", "app.cli.merge_cmd")
    monkeypatch.setattr(cli_main, "COMMAND_MODULES", tuple(dict.fromkeys(mods)))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path)


def fake_tests(exit_code: int) -> SandboxResult:
    return SandboxResult(
        argv=["python", "-m", "pytest"],
        cwd="/w",
        exit_code=exit_code,
        output="1 passed\n" if exit_code == 0 else "1 failed\n",
        timed_out=False,
        runner="bwrap",
        degraded=False,
        reason="",
        duration_s=0.5,
        timeout_s=600,
        memory_mb=4096,
    )


def make_run(
    repo: Path,
    run_id: str = "run-1",
    *,
    diff: str = FIX,
    tests_ok: bool = True,
    high_risk: bool | None = False,
    verdicts: Sequence[VerdictRecord] = (CLOUD,),
    status: str = "merge_ready",
    seal: bool = True,
    commit: bool = True,
) -> Path:
    """A finished run as the pipeline leaves it: the branch, a sealed bundle, and its seal
    line in the audit log (``seal=False``: a bundle no run sealed here)."""
    wt = Worktree.create(repo, run_id)
    applied = wt.apply_diff(diff)
    assert applied.ok, applied.reason
    b = EvidenceBundle.create(repo, run_id, task="fix add()", session="s1", clock=ManualClock())
    b.write_diff(1, diff)
    b.write_test_loop(1, fake_tests(0 if tests_ok else 1), attempt=1, commit=wt.head())
    if high_risk is not None:
        b.write_json("highrisk.json", {"high_risk": high_risk})
    b.write_verdicts(list(verdicts))
    m = b.finalize(
        status=status,  # type: ignore[arg-type]
        base=wt.base,
        branch=wt.branch,
        head=wt.head() if commit else None,
        session="s1",
    )
    if seal:

        async def write() -> None:
            async with AuditLog.open(load_settings().audit_db) as log:
                await log.append(**bundle_seal_line(m, b.manifest_sha256), session="s1")

        asyncio.run(write())
    wt.remove()  # the branch stays
    return b.path


POLICY = load_policy().policy


def sealed(repo: Path, run_id: str) -> str | None:
    """The manifest hash the audit log sealed for ``run_id``, as the CLI finds it."""
    found = asyncio.run(audit_seal(load_settings().audit_db, run_id))
    return found[0] if found else None


def merge_approved(repo: Path, run_id: str = "run-1") -> Any:
    """``merge_run`` of ``run_id`` confirmed up front (``--yes``), no audit log."""
    return asyncio.run(
        merge_run(
            repo, run_id, audit=None, approved=True, sealed_sha256=sealed(repo, run_id),
            policy=POLICY,
        )
    )  # fmt: skip


def merge_lines() -> list[Any]:
    async def read() -> list[Any]:
        async with AuditLog.open(load_settings().audit_db) as log:
            return [x for x in await log.lines() if x.kind == "merge"]

    return asyncio.run(read())


def assert_refused(
    repo: Path, args: list[str], capsys: pytest.CaptureFixture[str], *codes: str
) -> str:
    before = checkout_fingerprint(repo)
    assert main(["merge", *args, "--repo", str(repo)]) == 1
    err = capsys.readouterr().err
    assert "merge refused" in err and "nothing was changed" in err
    for code in codes:
        assert f"  {code}: " in err, err
    assert checkout_fingerprint(repo) == before
    return err


# ── through the gate ─────────────────────────────────────────────────────────────────────


def test_gate_holds_and_yes_merges(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_run(repo)
    before = git(repo, "rev-parse", "HEAD")
    tip = git(repo, "rev-parse", "switchyard/run-1")
    assert main(["merge", "run", "--repo", str(repo), "--yes"]) == 0  # a prefix will do
    out = capsys.readouterr().out
    assert out.startswith("merged run run-1 into main:")
    head = git(repo, "rev-parse", "HEAD")
    assert git(repo, "rev-list", "--parents", "-n", "1", head).split()[1:] == [before, tip]
    assert git(repo, "status", "--porcelain") == ""
    assert (repo / "calc.py").read_text().endswith("a + b\n")
    message = git(repo, "log", "-1", "--format=%B")
    assert (
        "switchyard: merge run run-1" in message
        and "Judge: claude-sonnet-4.6 (anthropic)" in message
    )
    outcomes = [(x.values["outcome"], x.values["approver"]) for x in merge_lines()]
    assert outcomes == [("merging", "cli --yes"), ("merged", "cli --yes")]
    line = merge_lines()[-1]
    assert line.run == "run-1" and line.session == "s1" and line.to == "main"
    assert line.from_ == "switchyard/run-1" and line.values["after"] == head

    # Twice is fine: nothing to do.
    assert main(["merge", "run-1", "--repo", str(repo), "--yes"]) == 0
    assert "already merged" in capsys.readouterr().out
    assert git(repo, "rev-parse", "HEAD") == head


def test_evidence_show_says_a_merged_run_is_merged(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`switchyard evidence show` said merge_ready and "gate holds" after the merge, and
    never that the run was merged (a user audit). Git says so (the run's sealed commit is
    in the branch checked out, app/workspace/merged.py): the status line, a merged line,
    and --json's ``merged``; the sealed status stays the manifest's."""
    make_run(repo)
    show = ["evidence", "show", "run-1", "--repo", str(repo)]
    assert main([*show, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["merged"] is None
    assert main(["merge", "run-1", "--repo", str(repo), "--yes"]) == 0
    head = git(repo, "rev-parse", "HEAD")
    capsys.readouterr()
    assert main([*show, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["status"] == "merge_ready"
    assert data["merged"] == {
        "into": "main",
        "target_ref": "refs/heads/main",
        "commit": head,
        "files": ["calc.py"],
        "source": "git",
    }
    assert main(show) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"run run-1  merge_ready, merged into main @ {head[:12]}"
    assert f"  merged    into main @ {head[:12]} (calc.py)" in out
    assert "gate      held; the run is merged: nothing is left to merge" in out
    assert "given a human's confirmation at merge time" not in out
    git(repo, "reset", "-q", "--hard", "HEAD~1")  # the merge taken back: not merged
    assert main([*show, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["merged"] is None


def test_merges_into_a_branch_that_moved_on(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_run(repo)
    commit(repo, {"docs/usage.md": "use it\n"}, "user work meanwhile")
    before = git(repo, "rev-parse", "HEAD")
    # --yes was given before the plan was read: it confirms a tested tree, not this one
    assert main(["merge", "run-1", "--repo", str(repo), "--yes"]) == 1
    refused = capsys.readouterr().err
    # the refusal's reason says why --yes did not count (it read "HUMAN: a merge needs a
    # human's approval", the real reason only in a note: a user audit), and how to merge
    reasons = refused.split("  note:")[0]
    assert "HUMAN: --yes does not cover a merged tree the run never tested" in reasons
    assert "needs a human's approval" not in refused
    assert "confirm it at the prompt (without --yes)" in reasons
    assert "run the task again" in reasons and "--untested" in reasons
    assert refused.count("--yes does not cover") == 1  # said once, not again in a note
    assert git(repo, "rev-parse", "HEAD") == before
    assert main(["merge", "run-1", "--repo", str(repo), "--yes", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    (reason,) = data["reasons"]
    assert reason.startswith("HUMAN: --yes does not cover") and reason in data["gate"]["reasons"]
    line = merge_lines()[-1]  # the audit line keeps the gate code, with the words
    assert line.reason_codes == ["HUMAN"] and "--yes does not cover" in line.detail
    assert main(["merge", "run-1", "--repo", str(repo), "--yes", "--untested"]) == 0
    assert (repo / "calc.py").read_text().endswith("a + b\n")
    assert (repo / "docs" / "usage.md").read_text() == "use it\n"
    assert git(repo, "status", "--porcelain") == ""
    # what was merged holds a commit the run's tests never saw: said, not hidden
    err = capsys.readouterr().err
    assert "note: UNTESTED: main has 1 commit(s) the run did not have" in err


def test_red_tests_are_refused(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_run(repo, tests_ok=False)
    err = assert_refused(repo, ["run-1", "--yes"], capsys, "GR-006")
    assert "the last test loop (1) exited 1" in err
    (line,) = merge_lines()
    assert line.values["outcome"] == "refused" and line.reason_codes == ["GR-006"]


def test_high_risk_with_only_a_local_verdict_is_refused(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_run(repo, high_risk=True, verdicts=[LOCAL])
    err = assert_refused(repo, ["run-1", "--yes"], capsys, "GR-002")
    assert "GR-003: local model qwen3-14b (local) cannot approve a merge" in err


def test_missing_classification_counts_as_high_risk(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_run(repo, high_risk=None, verdicts=[])
    err = assert_refused(repo, ["run-1", "--yes"], capsys, "GR-002")
    assert "no highrisk.json: treated as High-Risk" in err


def test_a_cloud_rejection_blocks(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_run(repo, verdicts=[CLOUD.model_copy(update={"verdict": "reject"})])
    assert_refused(repo, ["run-1", "--yes"], capsys, "JUDGE")


def test_no_human_no_merge(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_run(repo)
    # pytest's stdin is not a terminal, and there is no --yes.
    err = assert_refused(repo, ["run-1"], capsys, "HUMAN")
    assert "pass --yes to confirm as the human" in err


def test_the_prompt_is_the_humans_answer(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    make_run(repo)

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Tty("n\n"))
    err = assert_refused(repo, ["run-1"], capsys, "HUMAN")
    assert "pass --yes" not in err
    monkeypatch.setattr(sys, "stdin", Tty("y\n"))
    assert main(["merge", "run-1", "--repo", str(repo)]) == 0
    out = capsys.readouterr().out
    assert "merge run run-1 into main?" in out and "files     calc.py" in out
    assert merge_lines()[-1].values["approver"] == "cli prompt"


def test_nobody_is_asked_when_something_else_blocks(repo: Path) -> None:
    make_run(repo, tests_ok=False)
    asked: list[MergePlan] = []

    async def confirm(plan: MergePlan) -> bool:
        asked.append(plan)
        return True

    outcome = asyncio.run(
        merge_run(
            repo, "run-1", audit=None, confirm=confirm, sealed_sha256=sealed(repo, "run-1"),
            policy=POLICY,
        )
    )  # fmt: skip
    assert not outcome.ok and asked == []


# ── preconditions ────────────────────────────────────────────────────────────────────────


def test_status_other_than_merge_ready_is_refused(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_run(repo, status="stopped")
    assert_refused(repo, ["run-1", "--yes"], capsys, "STATUS")


def test_a_run_that_sealed_no_commit_is_refused_in_words(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run stopped before its worktree had a commit: "the sealed commit None is not in
    the repository" (in the text and in --json's reasons)."""
    make_run(repo, status="stopped", commit=False)
    err = assert_refused(repo, ["run-1", "--yes"], capsys, "STATUS", "GIT")
    assert "GIT: the run sealed no commit: there is nothing to merge" in err
    assert "None" not in err


def test_a_tampered_bundle_is_refused(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = make_run(repo, tests_ok=False)
    # Forge green tests: the manifest no longer matches.
    loop = path / "tests" / "loop-1.json"
    data = json.loads(loop.read_text())
    loop.write_text(json.dumps({**data, "exit_code": 0, "ok": True}))
    err = assert_refused(repo, ["run-1", "--yes"], capsys, "EVIDENCE")
    assert "tests/loop-1.json: sha256" in err


def test_a_bundle_not_matching_its_seal_is_refused(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_run(repo)
    manifest = path / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"task": "fix add()"', '"task": "other"'))
    assert_refused(repo, ["run-1", "--yes"], capsys, "EVIDENCE")


def test_a_bundle_no_run_sealed_is_refused(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A consistent bundle (files, manifest, hashes) is easy to write by hand; only a run
    writes its seal line. With none in the audit log the bundle merged, High-Risk or not."""
    make_run(repo, seal=False)
    err = assert_refused(repo, ["run-1", "--yes"], capsys, "EVIDENCE")
    assert "no seal line for run run-1" in err


@pytest.mark.parametrize(
    "claimed",
    [
        # a local model of the catalogue labelled as a cloud provider
        VerdictRecord(
            model="qwen3-14b", provider="openai", local=False, verdict="approve",
            citations_resolved=True,
        ),
        # a model the policy does not know, labelled cloud
        VerdictRecord(
            model="my-own-judge", provider="anthropic", local=False, verdict="approve",
            citations_resolved=True,
        ),
    ],
    ids=["local model labelled cloud", "model not in the catalogue"],
)  # fmt: skip
def test_a_verdict_counts_as_cloud_only_by_the_policys_catalogue(
    repo: Path, capsys: pytest.CaptureFixture[str], claimed: VerdictRecord
) -> None:
    """GR-002/003: the gate took verdict.json's own provider/local labels on trust, so a
    local model's approval labelled "openai" merged a High-Risk change."""
    make_run(repo, high_risk=True, verdicts=[claimed])
    err = assert_refused(repo, ["run-1", "--yes"], capsys, "GR-002")
    assert f"verdict.json names {claimed.model} ({claimed.provider}) as a cloud Judge" in err


def test_a_dirty_checkout_is_refused_and_kept(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_run(repo)
    (repo / "README.md").write_text("# my unsaved work\n")
    err = assert_refused(repo, ["run-1", "--yes"], capsys, "DIRTY")
    assert "README.md" in err and "clean checkout" in err
    assert (repo / "README.md").read_text() == "# my unsaved work\n"


def test_untracked_and_ignored_files_in_the_way_are_refused(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_run(repo, diff=NEW_FILE)
    (repo / "notes").mkdir()
    (repo / "notes" / "new.txt").write_text("mine, untracked\n")
    assert_refused(repo, ["run-1", "--yes"], capsys, "DIRTY")
    commit(repo, {".gitignore": "notes/\n"}, "ignore notes")
    err = assert_refused(repo, ["run-1", "--yes"], capsys, "DIRTY")
    assert "notes/new.txt" in err
    assert (repo / "notes" / "new.txt").read_text() == "mine, untracked\n"
    # Untracked files elsewhere are no obstacle.
    (repo / "notes" / "new.txt").unlink()
    (repo / "scratch.txt").write_text("unrelated\n")
    # (main moved on with the .gitignore commit: an untested tree, said so)
    assert main(["merge", "run-1", "--repo", str(repo), "--yes", "--untested"]) == 0
    assert (repo / "scratch.txt").read_text() == "unrelated\n"


def test_a_moved_branch_or_detached_head_is_refused(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_run(repo)
    tip = git(repo, "rev-parse", "switchyard/run-1")
    git(repo, "branch", "-f", "switchyard/run-1", "main")
    assert_refused(repo, ["run-1", "--yes"], capsys, "GIT")
    git(repo, "branch", "-f", "switchyard/run-1", tip)
    git(repo, "checkout", "-q", "--detach")
    assert_refused(repo, ["run-1", "--yes"], capsys, "GIT")


def test_unknown_run_and_not_a_repo_exit_2(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["merge", "nope", "--repo", str(repo), "--yes"]) == 2
    plain = tmp_path / "plain"
    plain.mkdir()
    assert main(["merge", "run-1", "--repo", str(plain), "--yes"]) == 2
    assert "not a git work tree" in capsys.readouterr().err
    # a file where the folder goes: it said "no such directory"
    afile = tmp_path / "notes.txt"
    afile.write_text("x")
    assert main(["merge", "run-1", "--repo", str(afile), "--yes"]) == 2
    assert capsys.readouterr().err == f"switchyard: {afile}: not a directory\n"
    # --untested widens what --yes confirms: alone it did nothing, unsaid
    assert main(["merge", "run-1", "--repo", str(repo), "--untested"]) == 2
    assert "--untested goes with --yes" in capsys.readouterr().err


# ── all or nothing ───────────────────────────────────────────────────────────────────────


def test_a_conflicting_merge_is_aborted_and_nothing_changes(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_run(repo)
    commit(repo, {"calc.py": "def add(a, b):\n    return b + a  # the user's fix\n"}, "user")
    (repo / "untracked.txt").write_text("kept\n")
    err = assert_refused(repo, ["run-1", "--yes", "--untested"], capsys, "GIT")
    assert "CONFLICT (content): Merge conflict in calc.py" in err
    assert not (repo / ".git" / "MERGE_HEAD").exists()
    assert (repo / "calc.py").read_text().endswith("# the user's fix\n")
    assert [x.values["outcome"] for x in merge_lines()] == ["merging", "failed"]


def test_an_interruption_after_the_merge_commit_is_undone(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_run(repo)
    before = checkout_fingerprint(repo)
    real = merge_mod.git_out

    def interrupted(cwd: Path, *args: str, config: Sequence[str] = ()) -> str:
        if args == ("rev-parse", "HEAD"):  # right after `git merge` made its commit
            raise KeyboardInterrupt
        return real(cwd, *args, config=config)

    monkeypatch.setattr(merge_mod, "git_out", interrupted)

    async def yes(plan: MergePlan) -> bool:
        return True

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(
            merge_run(
                repo, "run-1", audit=None, confirm=yes, sealed_sha256=sealed(repo, "run-1"),
                policy=POLICY,
            )
        )  # fmt: skip
    assert checkout_fingerprint(repo) == before
    assert git(repo, "log", "-1", "--format=%s") == "initial"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_while_git_merges_waits_for_the_outcome_and_its_line(
    repo: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    signum: signal.Signals,
) -> None:
    """asyncio.run makes the first Ctrl-C a cancel at the next await: it came while git
    merged, cut the "merged" line off and printed "interrupted" (130) over a merge that
    had landed. A SIGTERM ended the process at once, silent (143), git merging on in its
    own session with no outcome line ever written (a user audit): it is a stop too."""
    make_run(repo)
    tip = git(repo, "rev-parse", "switchyard/run-1")
    real = merge_mod.git_out

    def ctrl_c(cwd: Path, *args: str, config: Sequence[str] = ()) -> str:
        if args == ("rev-parse", "HEAD"):  # right after `git merge` made its commit
            signal.raise_signal(signum)  # the handler cancels the task
        return real(cwd, *args, config=config)

    monkeypatch.setattr(merge_mod, "git_out", ctrl_c)
    assert main(["merge", "run-1", "--repo", str(repo), "--yes", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["merged"] is True and data["ok"] is True
    said = "STOPPED: a stop came while git merged; the merge was finished first and stands"
    assert said in data["notes"]
    head = git(repo, "rev-parse", "HEAD")
    assert git(repo, "rev-list", "--parents", "-n", "1", head).split()[2] == tip
    assert [x.values["outcome"] for x in merge_lines()] == ["merging", "merged"]


def _while_git_merges(monkeypatch: pytest.MonkeyPatch, meanwhile: Any) -> None:
    """``meanwhile()`` runs right after ``git merge`` returns, as another hand would act
    while git merged (an editor's autosave, another merge, a commit)."""
    real = merge_mod.run_git

    def run_git(cwd: Path, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        proc = real(cwd, *args, **kw)
        if args[:2] == ("merge", "--no-ff"):
            meanwhile()
        return proc

    monkeypatch.setattr(merge_mod, "run_git", run_git)


def test_a_file_saved_while_git_merges_is_kept_and_the_merge_stands(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An edit to a file the merge never wrote, made while git merged, read as "the
    checkout is not clean after the merge": the undo reset it away (git reset --hard) and
    the command said "nothing was changed" (an audit)."""
    make_run(repo)
    _while_git_merges(monkeypatch, lambda: (repo / "README.md").write_text("# saved\n"))
    assert main(["merge", "run-1", "--repo", str(repo), "--yes"]) == 0
    assert (repo / "README.md").read_text() == "# saved\n"  # theirs, as they left it
    assert (repo / "calc.py").read_text().endswith("a + b\n")
    err = capsys.readouterr().err
    assert "KEPT: changed by someone else while git merged, left as they were: README.md" in err
    assert merge_lines()[-1].values["kept"] == ["README.md"]


def test_a_failed_merge_is_undone_without_losing_a_file_saved_meanwhile(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make_run(repo)
    commit(repo, {"calc.py": "def add(a, b):\n    return b + a  # mine\n"}, "user")
    _while_git_merges(monkeypatch, lambda: (repo / "README.md").write_text("# saved\n"))
    assert main(["merge", "run-1", "--repo", str(repo), "--yes", "--untested"]) == 1
    err = capsys.readouterr().err
    assert "CONFLICT (content)" in err and "KEPT:" in err
    assert (repo / "README.md").read_text() == "# saved\n"
    assert (repo / "calc.py").read_text().endswith("# mine\n")
    assert not (repo / ".git" / "MERGE_HEAD").exists()


def test_an_interrupted_merge_is_taken_back_keeping_a_file_saved_meanwhile(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_run(repo)
    before = git(repo, "rev-parse", "HEAD")

    def saved_then_interrupted() -> None:
        (repo / "README.md").write_text("# saved\n")
        raise KeyboardInterrupt

    _while_git_merges(monkeypatch, saved_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        merge_approved(repo)
    assert git(repo, "rev-parse", "HEAD") == before
    assert (repo / "README.md").read_text() == "# saved\n"
    assert (repo / "calc.py").read_text().endswith("a - b\n")


def test_a_head_moved_by_another_hand_while_git_merges_is_left_where_it_is(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The undo reset to its own HEAD from before, taking away a commit someone else made
    meanwhile (two merges at once: one said "merged" over a merge gone, an audit)."""
    make_run(repo)
    _while_git_merges(
        monkeypatch, lambda: git(repo, "commit", "-q", "--allow-empty", "-m", "another hand")
    )
    with pytest.raises(merge_mod.MergeRollbackError, match="not by this merge"):
        merge_approved(repo)
    assert git(repo, "log", "-1", "--format=%s") == "another hand"


def test_a_merge_its_own_filter_leaves_changed_is_taken_back_whole(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A clean filter that does not round-trip makes the merged file read back changed:
    the merge fails, and its undo (reset --keep) refused that file and left the merge
    commit on the branch, saying "nothing was reset" (a review). The merge's own files
    are taken back hard when they are all that differ."""
    make_run(repo)
    before = git(repo, "rev-parse", "HEAD")
    git(repo, "config", "filter.squash.clean", "sed 's/a + b/a+b/'")
    git(repo, "config", "filter.squash.smudge", "cat")
    (repo / ".git" / "info").mkdir(exist_ok=True)
    (repo / ".git" / "info" / "attributes").write_text("*.py filter=squash\n")
    err = assert_refused(repo, ["run-1", "--yes"], capsys, "GIT")
    assert "not clean after the merge (calc.py)" in err
    assert git(repo, "rev-parse", "HEAD") == before
    assert (repo / "calc.py").read_text().endswith("a - b\n")


def test_a_branch_checked_out_while_git_merges_is_left_checked_out(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The undo switched HEAD back to the branch the merge began on, undoing a checkout
    another hand made meanwhile (a review): it says so and leaves it."""
    make_run(repo)
    _while_git_merges(monkeypatch, lambda: git(repo, "checkout", "-q", "-b", "mine"))
    with pytest.raises(merge_mod.MergeRollbackError, match="moved to mine while git merged"):
        merge_approved(repo)
    assert git(repo, "symbolic-ref", "--short", "HEAD") == "mine"


def test_one_merge_of_a_repository_at_a_time(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import fcntl
    import os

    make_run(repo)
    before = git(repo, "rev-parse", "HEAD")
    monkeypatch.setattr(merge_mod, "LOCK_WAIT_S", 0.2)
    fd = os.open(repo / ".git" / "switchyard-merge.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another merge of it, in flight
    try:
        err = assert_refused(repo, ["run-1", "--yes"], capsys, "GIT")
        assert "another Switchyard merge of this repository" in err
    finally:
        os.close(fd)
    assert git(repo, "rev-parse", "HEAD") == before
    assert main(["merge", "run-1", "--repo", str(repo), "--yes"]) == 0


def test_a_second_merge_at_once_reads_the_first_once_it_is_done(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two `merge RUN --yes` at once: the second read the first half way (MERGE_HEAD,
    "main has 2 commit(s) the run did not have") and refused over it (a user audit). It
    reads the checkout under the merge lock, once the first is done: already merged."""
    import threading

    make_run(repo)
    seal = sealed(repo, "run-1")
    real_git, real_lock = merge_mod.run_git, merge_mod._merge_lock
    second: dict[str, Any] = {}
    came = threading.Event()  # the second waits for the lock, or has its outcome

    def merge_second() -> None:
        try:
            second["outcome"] = asyncio.run(
                merge_run(repo, "run-1", audit=None, approved=True, sealed_sha256=seal,
                          policy=POLICY)
            )  # fmt: skip
        finally:
            came.set()

    thread = threading.Thread(target=merge_second)

    def lock(top: Path) -> Any:
        if threading.current_thread() is thread:
            came.set()
        return real_lock(top)

    def run_git(cwd: Path, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        if args[:2] == ("merge", "--no-ff") and not thread.is_alive() and not came.is_set():
            # the first merge half way, as git leaves it while it works: the second looks
            real_git(cwd, "merge", "--no-ff", "--no-commit", args[-1], check=False)
            assert (repo / ".git" / "MERGE_HEAD").exists()
            thread.start()
            assert came.wait(60)  # (a guard against a hang, not a timing)
            real_git(cwd, "merge", "--abort")
        return real_git(cwd, *args, **kw)

    monkeypatch.setattr(merge_mod, "run_git", run_git)
    monkeypatch.setattr(merge_mod, "_merge_lock", lock)
    first = merge_approved(repo)
    thread.join()
    assert first.ok and first.merged
    later = second["outcome"]
    assert "MERGE_HEAD" not in " ".join(later.reasons + later.notes), later
    assert later.ok and later.already_merged and later.before_head == first.after_head, later
    assert git(repo, "rev-parse", "HEAD") == first.after_head


@pytest.mark.parametrize("marker", ["MERGE_HEAD", "CHERRY_PICK_HEAD"])
def test_the_users_merge_or_cherry_pick_in_progress_is_refused_and_kept(
    repo: Path, capsys: pytest.CaptureFixture[str], marker: str
) -> None:
    """The merge aborted the user's own merge under way (or an empty cherry-pick's),
    its message with it (an audit)."""
    make_run(repo)
    git(repo, "checkout", "-q", "-b", "side")
    commit(repo, {"side.txt": "side\n"}, "side work")
    git(repo, "checkout", "-q", "main")
    if marker == "MERGE_HEAD":
        git(repo, "merge", "--no-commit", "--no-ff", "-s", "ours", "side")
    else:  # the same change already on main: the pick stops, empty, and waits
        commit(repo, {"side.txt": "side\n"}, "the same on main")
        subprocess.run(["git", "-C", str(repo), "cherry-pick", "side"], capture_output=True)
    assert main(["merge", "run-1", "--repo", str(repo), "--yes"]) == 1
    err = capsys.readouterr().err
    assert f"in progress in the checkout ({marker})" in err
    assert (repo / ".git" / marker).exists()


def test_a_merge_into_a_branch_that_lacks_the_runs_base_says_what_it_brings(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run based on main merged into an older branch brought main's commits in, which
    the evidence's diff (base..tip) never showed, with no note (an audit)."""
    git(repo, "branch", "old")
    commit(repo, {"wip.txt": "unreviewed\n"}, "wip on main")
    make_run(repo)
    git(repo, "checkout", "-q", "old")
    before = git(repo, "rev-parse", "HEAD")
    # --yes confirms what the evidence shows: not this
    assert main(["merge", "run-1", "--repo", str(repo), "--yes"]) == 1
    err = capsys.readouterr().err
    assert "UNREVIEWED: old lacks 1 commit(s) of the run's base" in err
    assert "HUMAN: --yes does not cover commits the evidence's diff never showed" in err
    assert "needs a human's approval" not in err
    assert git(repo, "rev-parse", "HEAD") == before and not (repo / "wip.txt").exists()
    assert main(["merge", "run-1", "--repo", str(repo), "--yes", "--untested"]) == 0
    assert (repo / "wip.txt").exists()


def test_a_merge_git_cannot_sign_says_why_and_changes_nothing(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """commit.gpgsign on, no key: git's bare "gpg failed to sign the data" gave no clue
    that the merge commit is signed as the user's (the run's own commits are not)."""
    make_run(repo)
    git(repo, "config", "commit.gpgsign", "true")
    git(repo, "config", "gpg.program", "false")  # a signer that always fails
    err = assert_refused(repo, ["run-1", "--yes"], capsys, "GIT")
    assert "failed to sign" in err and "commit.gpgsign" in err


def test_merging_into_the_runs_own_branch_is_refused(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It said "already merged into switchyard/run-1", exit 0: nothing reached main."""
    make_run(repo)
    git(repo, "checkout", "-q", "switchyard/run-1")
    err = assert_refused(repo, ["run-1", "--yes"], capsys, "GIT")
    assert "the run's own branch switchyard/run-1 is checked out" in err


def test_json_output(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_run(repo, tests_ok=False)
    assert main(["merge", "run-1", "--repo", str(repo), "--yes", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and data["merged"] is False and data["run_id"] == "run-1"
    assert data["reasons"][0].startswith("GR-006:")
    assert data["gate"]["ok"] is False and data["target_ref"] == "refs/heads/main"


def test_prepare_reports_without_changing_anything(repo: Path) -> None:
    make_run(repo)
    before = checkout_fingerprint(repo)
    plan = prepare_merge(repo, "run-1", sealed_sha256=sealed(repo, "run-1"), policy=POLICY)
    assert plan.problems == [] and plan.blockers() == []
    assert plan.files == ["calc.py"] and plan.target_ref == "refs/heads/main"
    assert plan.facts is not None and plan.facts.tests_green
    gate = plan.gate(human_approved=False)
    assert gate is not None and gate.reasons == ["HUMAN: a merge needs a human's approval"]
    assert checkout_fingerprint(repo) == before


def test_a_submodule_pointer_a_gitmodules_hides_is_among_the_merges_files(
    repo: Path, tmp_path: Path
) -> None:
    """``ignore = all`` in a .gitmodules hid a submodule's new commit from git diff's
    reading: the merge's files lacked it, and an ACP merge kept to src/ let it through."""
    lib = tmp_path / "lib"
    lib.mkdir()
    git(lib, "init", "-q", "-b", "main")
    c1, c2 = lib_commit(lib, "one\n"), lib_commit(lib, "two\n")
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib), SUB)
    git(repo / SUB, "checkout", "-q", c1)
    git(repo, "config", "-f", ".gitmodules", f"submodule.{SUB}.ignore", "all")
    git(repo, "add", SUB, ".gitmodules")
    git(repo, "commit", "-q", "-m", "the submodule at c1, its changes ignored")
    base = git(repo, "rev-parse", "HEAD")
    make_run(repo, diff=pointer_diff(c1, c2))
    tip = git(repo, "rev-parse", "switchyard/run-1")
    assert git(repo, "diff", "--name-only", base, tip) == ""  # (what git says by default)
    plan = prepare_merge(
        repo, "run-1", sealed_sha256=sealed(repo, "run-1"), policy=POLICY, within="src"
    )
    assert plan.files == [SUB]
    outside = [p for p in plan.problems if p.startswith("OUTSIDE: ")]
    assert (
        len(outside) == 1
        and f"outside src/, the folder the change is kept to: {SUB}" in (outside[0])
    ), plan.problems
    assert merge_mod._changed_paths(repo, base, tip) == [SUB]


# ── the whole way, as the pipeline will drive it ────────────────────────────────────────


def test_end_to_end_worktree_sandbox_evidence_merge(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = "20260101-120000-e2e000"
    before = checkout_fingerprint(repo)
    wrong = FIX.replace("a + b", "a * b")

    async def pipeline() -> None:
        async with AuditLog.open(load_settings().audit_db, policy_version="1.0.0") as log:
            wt = Worktree.create(repo, run_id)
            b = EvidenceBundle.create(repo, run_id, task="fix add()", session="s1")
            cmd = detect_test_command(wt.path, repo=repo, python=sys.executable)
            for loop, diff in enumerate((wrong, FIX), start=1):
                applied = wt.apply_diff(diff)
                b.write_diff(loop, diff)
                assert applied.ok
                lines: list[str] = []

                async def pane(line: str, lines: list[str] = lines) -> None:
                    lines.append(line)

                result = await run_sandboxed(cmd.argv, cwd=wt.path, on_line=pane, timeout_s=120)
                if result.degraded:
                    line = sandbox_degradation_line(result)
                    await log.append(**line, session="s1", run=run_id)
                b.write_test_loop(loop, result, attempt=applied.attempt, commit=wt.head())
                await log.append(
                    "run",
                    session="s1",
                    run=run_id,
                    values={"loop": loop, "exit": result.exit_code},
                )
                assert result.ok == (loop == 2), result.output
                assert lines == result.output.splitlines()
                assert checkout_fingerprint(repo) == before  # untouched until the merge
            b.write_json("highrisk.json", {"high_risk": False})
            b.write_verdicts([CLOUD])
            await b.export_audit(log)
            m = b.finalize(status="merge_ready", base=wt.base, branch=wt.branch, head=wt.head())
            await log.append(**bundle_seal_line(m, b.manifest_sha256), session="s1")
            wt.remove()

    asyncio.run(pipeline())
    assert checkout_fingerprint(repo) == before
    assert main(["evidence", "verify", run_id, "--repo", str(repo)]) == 0
    assert main(["merge", run_id, "--repo", str(repo), "--yes"]) == 0
    capsys.readouterr()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout


def test_a_refusals_reasons_are_shown_not_obeyed(capsys: pytest.CaptureFixture[str]) -> None:
    # a reason quotes git's or a model's words: an ESC in one reached the terminal
    import argparse

    from app.cli.merge_cmd import _render
    from app.workspace.merge import MergeOutcome

    outcome = MergeOutcome(
        run_id="r1", ok=False, reasons=["GIT: error in a\x1b[2Jb"], notes=["see\x1b]0;x\x07"]
    )
    _render(argparse.Namespace(json=False), outcome)
    err = capsys.readouterr().err
    assert "GIT: error in a␛[2Jb" in err and "note: see␛]0;x␇" in err
    assert "\x1b" not in err and "\x07" not in err


def test_a_run_still_going_in_another_process_is_said_so_not_broken(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second workbench read another's live run as abandoned: "the bundle does not
    verify: manifest.json is missing", and its merge wrote that refusal into the shared
    audit (a TUI audit). The run's maker holds a lock beside its bundle until the seal."""
    import textwrap

    from app.evidence.live import running

    repo = make_repo(tmp_path, {"a.py": "x = 1\n"})
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                sys.path.insert(0, {str(Path.cwd())!r})
                from pathlib import Path
                from app.evidence.bundle import EvidenceBundle
                b = EvidenceBundle.create(Path({str(repo)!r}), "20260101-000000-aaaaaa")
                print("made", flush=True)
                sys.stdin.readline()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "made"
        path = repo / ".switchyard" / "runs" / "20260101-000000-aaaaaa"
        assert running(path)
        plan = prepare_merge(repo, path.name, sealed_sha256=None, policy=load_policy().policy)
        assert plan.problems == [
            "EVIDENCE: run 20260101-000000-aaaaaa is still running: it can merge once it ends"
        ]
        capsys.readouterr()
        main(["evidence", "show", path.name, "--repo", str(repo), "--json"])
        assert json.loads(capsys.readouterr().out)["status"] == "running"
    finally:
        holder.kill()  # (no finalizer runs: the kernel lets go of the lock)
        holder.wait(timeout=30)
    assert not running(path)  # its process ended: not live, however it ended
    sealed = EvidenceBundle.create(repo, "20260101-000001-bbbbbb")
    assert running(sealed.path)
    sealed.finalize(status="failed", reason="test")
    assert not running(sealed.path)


def test_a_sigterm_at_the_merge_prompt_ends_the_command_and_merges_nothing(repo: Path) -> None:
    """A SIGTERM at "merge? [y/N]" is a stop (exit 143, nothing merged): read in the
    default executor, the answer's read kept the process alive after the stop, as
    asyncio.run waited for its executor (a review)."""
    import os
    import select

    make_run(repo)
    before = git(repo, "rev-parse", "HEAD")
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "merge", "run-1", "--repo", str(repo)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    try:
        seen = b""
        while b"merge? [y/N]" not in seen:
            ready, _, _ = select.select([master], [], [], 60)
            assert ready, f"no prompt: {seen.decode(errors='replace')}"
            seen += os.read(master, 4096)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert git(repo, "rev-parse", "HEAD") == before
