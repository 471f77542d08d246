"""Whether a run is merged into the branch checked out, read from git.

A sealed bundle cannot say it was merged later: its manifest keeps ``merge_ready`` for
good. The merge's audit line says a merge happened once (into the branch then checked
out, as the commit it made); git says whether the run's sealed commit is in the branch
now, which is what the merge itself goes by (``already merged``: the tip is an ancestor
of HEAD, :func:`app.workspace.merge.prepare_merge`). So git is the source here: a merge
reset away since reads as not merged, a merge made by hand with git reads as merged,
and the faces say "merged" exactly when ``m`` / ``switchyard merge`` would answer
"already merged". The commit named is the one of the branch's first-parent line that
brought the run's tip in: the merge commit Switchyard made (the audit line's ``after``),
or the tip itself after a fast-forward made by hand.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from app.errors import SwitchyardError
from app.evidence.records import MERGE_READY, Manifest
from app.evidence.runs import resolve_run
from app.evidence.verify import read_manifest
from app.workspace.git import current_branch, repo_root, rev_parse, run_git


class Merged(BaseModel):
    """A run found merged into the branch checked out."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: the branch (``refs/heads/…``) that holds the run's sealed commit
    target_ref: str
    #: the commit of that branch that brought the run's tip in
    commit: str
    #: what the run changed (its base to its tip: the evidence's diff, what was merged)
    files: list[str] = Field(default_factory=list)

    @property
    def into(self) -> str:
        return self.target_ref.removeprefix("refs/heads/")

    def said(self) -> str:
        """``merged into main @ 14e0222b3aab``"""
        return f"merged into {self.into} @ {self.commit[:12]}"


def merged_heads(repo: Path, manifests: list[Manifest]) -> set[str]:
    """The run ids among ``manifests`` merged into the branch checked out (one git call
    per merge-ready run: the runs list)."""
    try:
        top = repo_root(repo)
        target = current_branch(top)
        head = rev_parse(top, "HEAD")
        if target is None or head is None:
            return set()
        return {m.run_id for m in manifests if _merged(top, m, target, head)}
    except SwitchyardError:  # not a git repository, git missing: nothing is said merged
        return set()


def merged_into(repo: Path, manifest: Manifest) -> Merged | None:
    """``manifest``'s run as merged into the branch checked out, or None: not merged, not
    a merge-ready run (a run with no commit of its own has its tip in the branch from the
    start), the run's own branch checked out, or no git to ask."""
    try:
        top = repo_root(repo)
        target = current_branch(top)
        head = rev_parse(top, "HEAD")
        if target is None or head is None or not _merged(top, manifest, target, head):
            return None
        tip = manifest.head
        assert tip is not None
        return Merged(
            target_ref=target,
            commit=_brought_in_by(top, tip, head),
            files=_changed(top, manifest.base, tip),
        )
    except SwitchyardError:
        return None


def merged_run(repo: Path, run: str) -> Merged | None:
    """:func:`merged_into` of the run ``run`` names (None: no readable manifest)."""
    try:
        return merged_into(repo, read_manifest(resolve_run(repo, run)))
    except SwitchyardError:
        return None


def _merged(top: Path, manifest: Manifest, target: str, head: str) -> bool:
    tip = manifest.head
    if manifest.status != MERGE_READY or not tip or tip == manifest.base:
        return False
    if manifest.branch and target == f"refs/heads/{manifest.branch}":
        return False  # (its own branch holds its tip: that is no merge)
    proc = run_git(top, "merge-base", "--is-ancestor", tip, head, check=False)
    return proc.returncode == 0  # (1: not an ancestor; 128: a commit git does not know)


def _brought_in_by(top: Path, tip: str, head: str) -> str:
    """The first commit of ``head``'s first-parent line that descends from ``tip``: the
    merge that brought it in, or ``tip`` itself when it is on that line (fast-forward)."""
    out = run_git(
        top, "rev-list", "--first-parent", "--ancestry-path", "--reverse", f"{tip}..{head}"
    ).stdout.split()
    if not out:
        return tip  # HEAD is the tip
    parents = run_git(top, "rev-list", "--parents", "-n", "1", out[0]).stdout.split()[1:]
    return tip if parents[:1] == [tip] else out[0]


def _changed(top: Path, base: str | None, tip: str) -> list[str]:
    if not base:
        return []
    proc = run_git(top, "diff", "--name-only", "--no-renames", "-z", base, tip, check=False)
    return sorted(p for p in proc.stdout.split("\0") if p) if proc.returncode == 0 else []


__all__ = ["Merged", "merged_heads", "merged_into", "merged_run"]
