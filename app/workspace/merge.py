"""Bring a run's branch into the user's branch, only when the gate holds, and atomically.

Two steps, so a UI can show what it found before a human decides:

1. :func:`prepare_merge` reads and verifies the evidence bundle and the checkout and
   returns a :class:`MergePlan`: the gate's inputs from the bundle (tests green on the
   sealed commit, High-Risk, verdicts; see :func:`app.evidence.read.gate_facts`) and
   every precondition that fails ("CODE: message").
2. :func:`execute_merge` evaluates :func:`app.policy.gate.merge_gate` with the human's
   answer, writes a ``merge`` audit line before acting (GR-005), and merges.

Every face that merges (the CLI, the workbench, the ACP agent) reads the plan it acts
on under the repository's merge lock (:func:`locked_plan`; :func:`merge_run` is the
whole of it), so no plan describes another merge half way.

The merge happens whole or not at all. It needs a checkout without uncommitted changes
to tracked files (any, not only those the merge touches: a failed merge is then undone
exactly by resetting to the previous HEAD), and refuses to overwrite a file that exists
but is not tracked. ``git merge --no-ff`` merges the sealed commit (not the branch name,
which could move); on any failure, an interruption included, the merge is aborted and
HEAD, index and work tree are reset and checked against their state before.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.audit.types import AuditSink
from app.commit_point import to_the_end
from app.errors import SwitchyardError
from app.evidence.bundle import (
    MANIFEST,
    MERGE_READY,
    EvidenceError,
    file_entry,
    resolve_run,
    verify_bundle,
)
from app.evidence.live import running
from app.evidence.read import GateFacts, gate_facts
from app.policy.gate import HUMAN, GateResult
from app.policy.schema import Policy
from app.workspace.git import (
    current_branch,
    first_line,
    git_out,
    has_identity,
    repo_root,
    rev_parse,
    run_git,
)
from app.workspace.worktree import (
    FALLBACK_IDENTITY,
    CheckoutFingerprint,
    checkout_fingerprint,
    dirty_paths,
    in_folder,
    outside_reason,
)

# Precondition codes (the gate's own codes are GR-006, HUMAN, GR-002, …).
EVIDENCE = "EVIDENCE"
STATUS = "STATUS"
DIRTY = "DIRTY"
GIT = "GIT"
#: the merge would change files outside the folder it is kept to (an ACP session's cwd)
OUTSIDE = "OUTSIDE"
#: a note: the merge's result holds commits the run's tests never saw
UNTESTED = "UNTESTED"
#: a note: the merge brings in commits of the run's base that the target lacks, which
#: the evidence's diff (base..tip) never showed anyone (a merge into an older branch)
UNREVIEWED = "UNREVIEWED"
#: a note: a stop came while git merged; the merge was finished and recorded first
STOPPED_WHILE_MERGING = "STOPPED"
#: a note: files changed by someone else while git merged, left as they were
KEPT = "KEPT"
#: how long a merge waits for another Switchyard merge of the same repository
LOCK_WAIT_S = 30.0

Confirm = Callable[["MergePlan"], Awaitable[bool]]


class MergeRollbackError(SwitchyardError):
    """A failed merge could not be undone exactly: the checkout needs a human's look."""


class MergePlan(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    bundle: str
    repo: str
    task: str = ""
    status: str | None = None
    session: str
    policy_version: str | None = None
    #: the run branch and the sealed commit to merge
    branch: str | None = None
    tip: str | None = None
    #: the user's branch (``refs/heads/…``) and its HEAD now
    target_ref: str | None = None
    before_head: str | None = None
    #: paths the merge brings in
    files: list[str] = Field(default_factory=list)
    already_merged: bool = False
    facts: GateFacts | None = None
    #: failed preconditions, "CODE: message": each refuses the merge whatever the gate says
    problems: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    def gate(self, *, human_approved: bool, withheld: str | None = None) -> GateResult | None:
        if self.facts is None:
            return None
        return self.facts.gate(human_approved=human_approved, withheld=withheld)

    def blockers(self) -> list[str]:
        """Everything but the human's answer that refuses the merge (empty: ask the human)."""
        gate = self.gate(human_approved=True)
        return [*self.problems, *(gate.reasons if gate else [])]


class MergeOutcome(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    #: merged now, or found already merged
    ok: bool
    merged: bool = False
    already_merged: bool = False
    #: why not, "CODE: message" (the gate's reasons, failed preconditions, git's error)
    reasons: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    gate: GateResult | None = None
    target_ref: str | None = None
    before_head: str | None = None
    after_head: str | None = None
    tip: str | None = None


# ── 1. prepare ───────────────────────────────────────────────────────────────────────────


def prepare_merge(
    repo: Path, run: str, *, sealed_sha256: str | None, policy: Policy, within: str = ""
) -> MergePlan:
    """Read the bundle and the checkout. Raises UnknownRun / NotAGitRepo (exit 2).

    ``within``: a folder of the repository (POSIX) every file the merge changes must lie
    in, "" for the whole repository (an ACP session is kept to its editor's working
    directory): a merge that would change another refuses whole (OUTSIDE).

    ``sealed_sha256`` is the manifest hash the audit chain recorded for the run (see
    :func:`app.evidence.bundle.sealed_hash`), None when it holds no seal line for it: the
    manifest must match it, and a bundle no seal vouches for never merges (anyone can
    write a consistent bundle; only a run writes its seal line). ``policy``'s catalogue
    says which verdicts are a cloud Judge's.
    """
    top = repo_root(repo)
    path = resolve_run(top, run)
    run_id = path.name
    problems: list[str] = []
    notes: list[str] = []
    report = verify_bundle(path)
    manifest = report.manifest
    if manifest is None and not running(path) and (path / MANIFEST).exists():
        # sealed between the two looks (its marker goes after its manifest): read again
        report = verify_bundle(path)
        manifest = report.manifest
    if manifest is None and running(path):
        # (its manifest is written as it ends: "missing" read as a broken bundle)
        problems.append(f"{EVIDENCE}: run {run_id} is still running: it can merge once it ends")
    elif not report.ok or manifest is None:
        problems += [f"{EVIDENCE}: {p}" for p in report.problems]
    if not report.ok or manifest is None:
        return MergePlan(
            run_id=run_id,
            bundle=str(path),
            repo=str(top),
            session=f"merge-{run_id}",
            problems=problems,
        )
    if sealed_sha256 is None:
        problems.append(
            f"{EVIDENCE}: the audit log holds no seal line for run {run_id}: nothing shows"
            " that a run here made this bundle"
        )
    else:
        actual = file_entry(path / MANIFEST).sha256
        if actual != sealed_sha256:
            problems.append(
                f"{EVIDENCE}: manifest.json is not the one sealed in the audit log"
                f" ({actual[:12]}… ≠ {sealed_sha256[:12]}…)"
            )
    if manifest.status != MERGE_READY:
        why = f": {manifest.reason}" if manifest.reason else ""
        problems.append(f"{STATUS}: the run ended {manifest.status}{why}")
    facts: GateFacts | None = None
    try:
        facts = gate_facts(path, manifest, policy)
        notes += facts.notes
    except EvidenceError as exc:
        problems.append(f"{EVIDENCE}: {exc}")

    target = current_branch(top)
    before = rev_parse(top, "HEAD")
    own = False
    if target is None:
        problems.append(f"{GIT}: HEAD is detached; check out the branch to merge into")
    elif own := bool(manifest.branch) and target == f"refs/heads/{manifest.branch}":
        # (it read "already merged into switchyard/…", exit 0: nothing reached the branch)
        problems.append(
            f"{GIT}: the run's own branch {manifest.branch} is checked out; check out the"
            " branch to merge into"
        )
    busy = in_progress(top)
    if busy:
        problems.append(busy)
    tip = manifest.head
    files: list[str] = []
    already = False
    if tip is None:
        # a run stopped before its worktree had a commit (or before it had a worktree)
        problems.append(f"{GIT}: the run sealed no commit: there is nothing to merge")
    elif rev_parse(top, tip) != tip:
        problems.append(f"{GIT}: the sealed commit {tip} is not in the repository")
    else:
        if manifest.branch:
            moved = rev_parse(top, f"refs/heads/{manifest.branch}")
            if moved is not None and moved != tip:
                problems.append(
                    f"{GIT}: branch {manifest.branch} moved to {moved[:12]} after the bundle"
                    f" sealed {tip[:12]}"
                )
        if before is not None and not own:
            already = _is_ancestor(top, tip, before)
            if not already:
                files = _incoming_paths(top, before, tip)
                outside = [f for f in files if not in_folder(f, within)]
                if outside:
                    problems.append(f"{OUTSIDE}: {outside_reason(outside, within)}")
                unseen = _commits_since(top, before, manifest.base)
                if unseen:
                    into = _short_ref(target or "HEAD")
                    notes.append(
                        f"{UNREVIEWED}: {into} lacks {unseen} commit(s) of the run's base"
                        f" {(manifest.base or '')[:12]}: the merge brings them in, and the"
                        " evidence's diff (from that base) does not show them"
                    )
                moved_by = _commits_since(top, manifest.base, before)
                if moved_by:
                    into = _short_ref(target or "HEAD")
                    notes.append(
                        f"{UNTESTED}: {into} has {moved_by} commit(s) the run did not have"
                        f" (its base was {(manifest.base or '')[:12]}): the merged tree was"
                        " never tested; run the tests after the merge"
                    )
    dirty = dirty_paths(top, untracked=False)
    if dirty and not already:
        shown = ", ".join(dirty[:5]) + (" …" if len(dirty) > 5 else "")
        problems.append(
            f"{DIRTY}: the checkout has uncommitted changes ({shown}); commit or stash them"
            " first: Switchyard merges only into a clean checkout, so a failed merge can be"
            " undone exactly"
        )
    in_the_way = _untracked_in_the_way(top, before, files)
    if in_the_way:
        problems.append(
            f"{DIRTY}: the merge would overwrite files that are not tracked:"
            f" {', '.join(in_the_way[:5])}"
        )
    return MergePlan(
        run_id=run_id,
        bundle=str(path),
        repo=str(top),
        task=manifest.task,
        status=manifest.status,
        session=manifest.session or f"merge-{run_id}",
        policy_version=manifest.policy_version,
        branch=manifest.branch,
        tip=manifest.head,
        target_ref=target,
        before_head=before,
        files=files,
        already_merged=already,
        facts=facts,
        problems=problems,
        notes=notes,
    )


# ── 2. execute ───────────────────────────────────────────────────────────────────────────


async def execute_merge(
    plan: MergePlan,
    *,
    human_approved: bool,
    audit: AuditSink | None,
    approver: str | None = None,
    answer: str | None = None,
) -> MergeOutcome:
    """Evaluate the gate with the human's answer; merge when it holds. Audited (kind merge).
    ``answer``: what the human was asked and said, in words, where a face knows it.

    Runs git synchronously (a merge takes moments; an interruption must not leave it half
    done in a thread). The TUI calls it from a worker.
    """
    return await _execute(
        plan, None, human_approved=human_approved, audit=audit, approver=approver, answer=answer
    )


async def _execute(
    plan: MergePlan,
    held: bool | None,
    *,
    human_approved: bool,
    audit: AuditSink | None,
    approver: str | None = None,
    answer: str | None = None,
    withheld: str | None = None,
) -> MergeOutcome:
    """:func:`execute_merge`; ``held``: whether the caller holds the repository's merge
    lock (True), could not have it (False), or leaves it to this (None). ``withheld``: why
    a confirmation given does not count (the HUMAN reason's words)."""
    gate = plan.gate(human_approved=human_approved, withheld=withheld)
    common = {
        "run_id": plan.run_id,
        "gate": gate,
        "target_ref": plan.target_ref,
        "before_head": plan.before_head,
        "tip": plan.tip,
        "notes": [*plan.notes, *(gate.notes if gate else [])],
    }

    async def record(outcome: str, reasons: list[str], detail: str, **values: object) -> None:
        if audit is None:
            return
        await audit.append(
            "merge",
            session=plan.session,
            run=plan.run_id,
            from_=plan.branch,
            to=_short_ref(plan.target_ref),
            reason_codes=[r.partition(":")[0] for r in reasons] or [outcome],
            values={
                "outcome": outcome,
                "tip": plan.tip,
                "before": plan.before_head,
                "human_approved": human_approved,
                "approver": approver if human_approved else None,
                **({"answer": answer} if answer is not None else {}),
                **values,
            },
            detail=detail,
        )

    if held is False:
        reasons = [_lock_refusal()]
        await record("refused", reasons, "; ".join(reasons))
        return MergeOutcome(ok=False, reasons=reasons, **common)
    # "already merged" is a success only for a run that produced a merge-ready result:
    # a stopped run with no commit has its tip at the base, which is no merge at all
    if (
        plan.already_merged
        and plan.status == MERGE_READY
        and not any(p.startswith(EVIDENCE) for p in plan.problems)
    ):
        await record("already_merged", [], f"{plan.tip} is already in {plan.target_ref}")
        return MergeOutcome(ok=True, already_merged=True, after_head=plan.before_head, **common)
    reasons = [*plan.problems, *(gate.reasons if gate else [])]
    if reasons:
        await record("refused", reasons, "; ".join(reasons))
        return MergeOutcome(ok=False, reasons=reasons, **common)
    if held:
        return await _land_unless_moved(plan, gate, record, common)
    # One merge of a repository at a time, from the last check to the outcome: two merges
    # at once each undid the other's (one said "merged" over a merge gone, a review).
    async with _merge_lock(Path(plan.repo)) as took:
        if not took:
            reasons = [_lock_refusal()]
            await record("refused", reasons, "; ".join(reasons))
            return MergeOutcome(ok=False, reasons=reasons, **common)
        return await _land_unless_moved(plan, gate, record, common)


def _lock_refusal() -> str:
    return (
        f"{GIT}: another Switchyard merge of this repository held it for"
        f" {LOCK_WAIT_S:g} s; try again"
    )


async def _land_unless_moved(
    plan: MergePlan,
    gate: GateResult | None,
    record: Callable[..., Awaitable[None]],
    common: dict[str, Any],
) -> MergeOutcome:
    """:func:`_land`, unless the checkout moved since the plan (the caller holds the
    merge lock): while the human read it, say."""
    reasons = _still_as_planned(plan)
    if reasons:
        await record("refused", reasons, "; ".join(reasons))
        return MergeOutcome(ok=False, reasons=reasons, **common)
    return await _land(plan, gate, record, common)


async def _land(
    plan: MergePlan,
    gate: GateResult | None,
    record: Callable[..., Awaitable[None]],
    common: dict[str, Any],
) -> MergeOutcome:
    """Merge (the caller holds the repository's merge lock), audited before and after."""
    assert plan.tip is not None and plan.target_ref is not None
    await record("merging", [], f"merging {plan.tip[:12]} into {plan.target_ref}")

    async def land() -> MergeOutcome:
        kept: list[str] = []
        try:
            after = _merge_atomically(Path(plan.repo), plan, gate, kept)
        except _MergeFailed as exc:
            reason = f"{GIT}: {exc}"
            await record("failed", [reason], f"merge failed and was undone: {exc}", kept=kept)
            notes = [*common["notes"], *_kept_note(kept)]
            return MergeOutcome(ok=False, reasons=[reason], **{**common, "notes": notes})
        except MergeRollbackError as exc:
            await record("rollback_failed", [f"{GIT}: {exc}"], str(exc))
            raise
        await record("merged", [], f"merged as {after[:12]}", after=after, kept=kept)
        notes = [*common["notes"], *_kept_note(kept)]
        return MergeOutcome(ok=True, merged=True, after_head=after, **{**common, "notes": notes})

    # A commit point: a cancel (Ctrl-C, the TUI quitting) that comes while git merges
    # waits for the outcome and its audit line. It cut the "merged" line off and the
    # command said "interrupted" (exit 130) over a merge that had landed.
    outcome, stopped = await to_the_end(land())
    if stopped:
        then = (
            "the merge was finished first and stands"
            if outcome.merged
            else ("the merge was undone: nothing changed")
        )
        note = f"{STOPPED_WHILE_MERGING}: a stop came while git merged; {then}"
        outcome = outcome.model_copy(update={"notes": [*outcome.notes, note]})
    return outcome


async def merge_run(
    repo: Path,
    run: str,
    *,
    audit: AuditSink | None,
    confirm: Confirm | None = None,
    approved: bool = False,
    untested_ok: bool = True,
    approver: str | None = None,
    sealed_sha256: str | None,
    policy: Policy,
    on_wait: Callable[[], object] | None = None,
) -> MergeOutcome:
    """Prepare, ask ``confirm`` (the human) only when nothing else blocks, execute.

    ``approved`` is a confirmation the human gave up front (``--yes``). Without it and
    without ``confirm`` there is no human approval, and the gate refuses (HUMAN).
    ``approver`` says who confirmed, for the audit line ("cli --yes", "tui", …).
    ``untested_ok=False``: an up-front approval does not cover a merged tree the run never
    tested (the branch moved on since it: an UNTESTED note), nor commits of the run's base
    the target lacks (UNREVIEWED); a human asked sees the note. Refused so, the HUMAN
    reason says why the approval given does not count. ``on_wait`` is called first when
    another merge holds the repository's merge lock, which this then waits for (up to
    :data:`LOCK_WAIT_S`): a face says so at once.
    """
    async with locked_plan(
        repo, run, sealed_sha256=sealed_sha256, policy=policy, on_wait=on_wait
    ) as locked:
        plan = locked.plan
        untested = any(n.startswith((UNTESTED, UNREVIEWED)) for n in plan.notes)
        human = approved and (untested_ok or not untested)
        ask = not human and confirm is not None and not plan.already_merged
        if not locked.held or not ask or plan.blockers():
            withheld = upfront_not_covering(plan.notes) if approved and not human else None
            return await locked.execute(
                human_approved=human, audit=audit, approver=approver, withheld=withheld
            )
    assert confirm is not None
    # asked with the lock let go: a human reading the plan holds no other merge up; the
    # merge takes the lock again and checks that the checkout did not move meanwhile
    human = await confirm(plan)
    return await locked.execute(human_approved=human, audit=audit, approver=approver)


def upfront_not_covering(notes: list[str]) -> str:
    """Why a confirmation given up front (``merge --yes``) does not cover this merge, and
    how to merge it: the HUMAN reason, where "a merge needs a human's approval" read as
    if no --yes had been given (its real reason was only in a note: a user audit)."""
    if any(n.startswith(UNTESTED) for n in notes):
        return (
            "--yes does not cover a merged tree the run never tested (the branch moved on"
            " since the run: see the UNTESTED note); to merge, confirm it at the prompt"
            " (without --yes), run the task again so its tests see the branch as it is,"
            " or add --untested to merge it anyway"
        )
    return (
        "--yes does not cover commits the evidence's diff never showed (see the"
        " UNREVIEWED note); to merge, confirm it at the prompt (without --yes), merge"
        " into a branch that has the run's base, or add --untested to merge it anyway"
    )


class LockedPlan:
    """A plan read under the repository's merge lock (:func:`locked_plan`), and its merge."""

    def __init__(self, plan: MergePlan, held: bool) -> None:
        self.plan = plan
        #: True in the block that holds the lock; None after it (the merge takes the lock
        #: again and checks the checkout did not move); False: the lock was not had
        self._held: bool | None = held

    @property
    def held(self) -> bool:
        """Whether the plan was read under the lock. False: another merge held it for
        :data:`LOCK_WAIT_S`, and the plan may describe that merge half way: show it to no
        one (its run id and refs go into the audit line); :meth:`execute` refuses it."""
        return self._held is not False

    async def execute(
        self,
        *,
        human_approved: bool,
        audit: AuditSink | None,
        approver: str | None = None,
        answer: str | None = None,
        withheld: str | None = None,
    ) -> MergeOutcome:
        """:func:`execute_merge`, under the lock still held in the block (no other merge
        comes between the plan and the merge), and never on a plan read without it."""
        return await _execute(
            self.plan,
            self._held,
            human_approved=human_approved,
            audit=audit,
            approver=approver,
            answer=answer,
            withheld=withheld,
        )


@asynccontextmanager
async def locked_plan(
    repo: Path,
    run: str,
    *,
    sealed_sha256: str | None,
    policy: Policy,
    within: str = "",
    on_wait: Callable[[], object] | None = None,
) -> AsyncIterator[LockedPlan]:
    """:func:`prepare_merge` under the repository's merge lock, held until the block
    ends: every face reads the plan it acts on so. Read beside another merge of the
    repository, a plan described that merge half way (MERGE_HEAD, "main has 2 commit(s)
    the run did not have") where it ends "already merged" (a user audit). A human is
    asked after the block, with the lock let go. The read runs in a thread: the
    workbench and the ACP agent merge on their event loop. ``on_wait``: called first
    when another merge holds the lock now, so this waits for it (a face says so)."""
    top = repo_root(repo)
    if on_wait is not None and not await asyncio.to_thread(_free_now, top):
        on_wait()
    async with _merge_lock(top) as held:
        plan = await asyncio.to_thread(
            prepare_merge, repo, run, sealed_sha256=sealed_sha256, policy=policy, within=within
        )
        locked = LockedPlan(plan, held)
        try:
            yield locked
        finally:
            if held:
                locked._held = None


def preview_merge(
    repo: Path, run: str, *, sealed_sha256: str | None, policy: Policy
) -> MergePlan | None:
    """:func:`prepare_merge` for a screen that only shows it (the evidence screen), read
    under the merge lock when it is free now; None while another merge holds it (its
    plan would describe that merge half way). Never waits: the merge it leads to reads
    its plan again under the lock, and a wait would hold the screen's run up for
    :data:`LOCK_WAIT_S`."""
    with _merge_lock_now(repo_root(repo)) as held:
        if not held:
            return None
        return prepare_merge(repo, run, sealed_sha256=sealed_sha256, policy=policy)


# ── git ──────────────────────────────────────────────────────────────────────────────────


class _MergeFailed(Exception):
    pass


def _merge_atomically(top: Path, plan: MergePlan, gate: GateResult | None, kept: list[str]) -> str:
    """Merge the sealed commit; undo it on any failure. ``kept`` gets the files someone
    else changed meanwhile, which neither the merge nor its undoing touches."""
    assert plan.tip is not None
    before = checkout_fingerprint(top, untracked=False)
    config = [] if has_identity(top) else list(FALLBACK_IDENTITY)
    #: files the merge wrote that read back changed (a filter, an eol rule): its own
    artefacts: list[str] = []
    try:
        proc = run_git(
            top,
            "merge",
            "--no-ff",
            "--no-edit",
            "-m",
            _message(plan, gate),
            plan.tip,
            config=config,
            check=False,
            # a terminal's Ctrl-C goes to its whole process group: git died half way and
            # the merge was undone under a "stopped" the user meant for Switchyard
            own_session=True,
        )
        if proc.returncode != 0:
            conflicts = [ln.strip() for ln in proc.stdout.splitlines() if "CONFLICT" in ln]
            said = (
                "; ".join(conflicts)
                or first_line(proc.stderr)
                or first_line(proc.stdout)
                or f"git merge exited {proc.returncode}"
            )
            if "failed to sign" in proc.stderr:  # (git's bare "gpg failed to sign the data")
                said += (
                    " (the merge commit is yours, so git signs it as commit.gpgsign says:"
                    " make your signing key available, or turn commit.gpgsign off here)"
                )
            raise _MergeFailed(said)
        after = git_out(top, "rev-parse", "HEAD")
        if _parents(top, after) != [plan.before_head, plan.tip] or (
            current_branch(top) != plan.target_ref
        ):
            raise _MergeFailed(f"the merge commit {after[:12]} is not the one expected")
        dirty = dirty_paths(top, untracked=False)
        if dirty:
            # A file the merge wrote that does not read back as committed (a filter, an
            # eol rule) fails it; one the merge never touched was changed by someone else
            # meanwhile (an editor's autosave): theirs, kept, and the merge stands.
            touched = set(_changed_paths(top, plan.before_head, after))
            artefacts += [p for p in dirty if p in touched]
            if artefacts:
                raise _MergeFailed(
                    f"the checkout is not clean after the merge ({', '.join(artefacts[:5])})"
                )
            kept += dirty
        return after
    except BaseException:
        kept += _undo(top, before, plan, artefacts)
        raise


def _undo(
    top: Path, before: CheckoutFingerprint, plan: MergePlan, artefacts: list[str]
) -> list[str]:
    """Take back what this merge did, and nothing else: a merge in progress is aborted
    (a merge or cherry-pick of the user's never gets this far: :func:`in_progress`), this
    merge's own commit reset with ``--keep``, which leaves every file the merge did not
    touch as it is now. HEAD moved by another hand is left where it is, said. Returns the
    files changed meanwhile by someone else, kept; raises when the checkout is not as it
    was apart from those. ``artefacts``: files the merge wrote that read back changed
    right after it (a clean filter that does not round-trip): the merge's own, which
    ``--keep`` would refuse to take back, and only those are reset hard."""
    git_dir = Path(git_out(top, "rev-parse", "--absolute-git-dir"))
    if (git_dir / "MERGE_HEAD").exists():
        run_git(top, "merge", "--abort", check=False)  # (git's reset --merge: theirs kept)
    branch = current_branch(top)
    if before.head_ref and branch != before.head_ref:
        # git merge never changes the branch: another hand checked one out meanwhile,
        # and switching it back would undo their checkout (a review)
        raise MergeRollbackError(
            f"the failed merge was not undone in {top}: the checkout moved to"
            f" {_short_ref(branch) or 'a detached HEAD'} while git merged (it was"
            f" {_short_ref(before.head_ref)}); left as it is for you to look at"
        )
    head = rev_parse(top, "HEAD")
    if before.head is not None and head != before.head:
        if head is None or _parents(top, head) != [before.head, plan.tip]:
            raise MergeRollbackError(
                f"the failed merge was not undone in {top}: HEAD moved to"
                f" {(head or '?')[:12]} while git merged, not by this merge (it was"
                f" {before.head[:12]}); left as it is for you to look at"
            )
        proc = run_git(top, "reset", "--keep", "--quiet", before.head, check=False)
        if proc.returncode != 0 and artefacts:
            # --keep refuses the files the merge wrote and its own filter changed: when
            # those are all that differ, they are the merge's, and only they are lost
            dirty = dirty_paths(top, untracked=False)
            if set(dirty) <= set(artefacts):
                proc = run_git(top, "reset", "--hard", "--quiet", before.head, check=False)
        if proc.returncode != 0:
            raise MergeRollbackError(
                f"the merge commit {head[:12]} could not be taken back in {top}: a file it"
                f" wrote was changed meanwhile ({first_line(proc.stderr)}); HEAD was"
                f" {before.head[:12]}, and nothing was reset so that nothing is lost"
            )
    now = checkout_fingerprint(top, untracked=False)
    if now == before:
        return []
    # the checkout was clean (a precondition): what differs now is someone else's change
    # to a file the merge never wrote, kept, or a remnant of the merge, which is not
    dirty = dirty_paths(top, untracked=False)
    remnants = [p for p in dirty if p in set(plan.files)]
    if now.head != before.head or now.head_ref != before.head_ref or remnants or not dirty:
        raise MergeRollbackError(
            f"the failed merge could not be undone exactly in {top}"
            f" ({', '.join(before.differences(now))} differ); HEAD was {before.head}"
        )
    return dirty


def in_progress(top: Path) -> str | None:
    """A merge, cherry-pick, revert or rebase the user has under way in ``top``: a merge
    then aborted it with ours, their message and resolutions lost (an audit)."""
    git_dir = Path(git_out(top, "rev-parse", "--absolute-git-dir"))
    for name, what in (
        ("MERGE_HEAD", "a merge"),
        ("CHERRY_PICK_HEAD", "a cherry-pick"),
        ("REVERT_HEAD", "a revert"),
        ("rebase-merge", "a rebase"),
        ("rebase-apply", "a rebase or git am"),
    ):
        if (git_dir / name).exists():
            return (
                f"{GIT}: {what} is in progress in the checkout ({name}); finish or abort it first"
            )
    return None


@asynccontextmanager
async def _merge_lock(top: Path) -> AsyncIterator[bool]:
    """The repository's merge lock (a ``flock`` on a file in its git directory, shared by
    its linked worktrees), waited for up to :data:`LOCK_WAIT_S` without blocking the
    loop (the workbench merges on it): True when held. A killed holder's lock goes with
    it."""
    fd = _open_lock(top)
    try:
        deadline = time.monotonic() + LOCK_WAIT_S
        while not _try_lock(fd):
            if time.monotonic() >= deadline:
                yield False
                return
            await asyncio.sleep(0.05)
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def _merge_lock_now(top: Path) -> Iterator[bool]:
    """The merge lock if it is free now (no wait): True when held."""
    fd = _open_lock(top)
    try:
        held = _try_lock(fd)
        try:
            yield held
        finally:
            if held:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _free_now(top: Path) -> bool:
    """Whether no other merge holds the merge lock now (a look: nothing is kept)."""
    with _merge_lock_now(top) as free:
        return free


def _open_lock(top: Path) -> int:
    common = Path(git_out(top, "rev-parse", "--git-common-dir"))
    path = (common if common.is_absolute() else top / common) / "switchyard-merge.lock"
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:  # (a read-only .git: one line, not a traceback; a review)
        raise SwitchyardError(f"cannot take the merge lock {path}: {exc.strerror or exc}") from None


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _parents(top: Path, commit: str) -> list[str]:
    return git_out(top, "rev-list", "--parents", "-n", "1", commit).split()[1:]


#: how the merge lists the paths two commits differ in: a submodule's new commit pointer
#: too, whatever a ``.gitmodules`` (``ignore = all``, which the run's change can write) or
#: the user's ``diff.ignoreSubmodules`` says: a flag given outright overrides both (a
#: review: the pointer was missing from the merge's files, and so from its OUTSIDE check)
NAME_ONLY = ("diff", "--name-only", "--no-renames", "-z", "--ignore-submodules=dirty")


def _changed_paths(top: Path, a: str | None, b: str) -> list[str]:
    if a is None:
        return []
    out = run_git(top, *NAME_ONLY, a, b).stdout
    return [p for p in out.split("\0") if p]


def _kept_note(kept: list[str]) -> list[str]:
    if not kept:
        return []
    shown = ", ".join(kept[:5]) + (" …" if len(kept) > 5 else "")
    return [f"{KEPT}: changed by someone else while git merged, left as they were: {shown}"]


def _still_as_planned(plan: MergePlan) -> list[str]:
    top = Path(plan.repo)
    if rev_parse(top, "HEAD") != plan.before_head or current_branch(top) != plan.target_ref:
        return [f"{GIT}: the checkout moved since the merge was prepared; try again"]
    busy = in_progress(top)
    if busy:
        return [busy]
    if dirty_paths(top, untracked=False):
        return [f"{DIRTY}: the checkout has uncommitted changes now; commit or stash them"]
    if _untracked_in_the_way(top, plan.before_head, plan.files):
        return [f"{DIRTY}: untracked files now stand where the merge writes"]
    return []


def _commits_since(top: Path, base: str | None, head: str | None) -> int:
    """Commits in ``head`` that ``base`` does not have; 0 when unknown."""
    if not base or not head or base == head:
        return 0
    proc = run_git(top, "rev-list", "--count", f"{base}..{head}", check=False)
    out = proc.stdout.strip()
    return int(out) if proc.returncode == 0 and out.isdigit() else 0


def _is_ancestor(top: Path, commit: str, of: str) -> bool:
    proc = run_git(top, "merge-base", "--is-ancestor", commit, of, check=False)
    return proc.returncode == 0


def _incoming_paths(top: Path, head: str, tip: str) -> list[str]:
    base = run_git(top, "merge-base", head, tip, check=False).stdout.strip()
    if not base:
        return []
    out = run_git(top, *NAME_ONLY, base, tip).stdout
    return sorted(p for p in out.split("\0") if p)


def _untracked_in_the_way(top: Path, head: str | None, files: list[str]) -> list[str]:
    """Paths the merge writes that exist on disk but are not tracked (untracked or
    ignored: git would overwrite an ignored file, and undoing would then delete it)."""
    if not files or head is None:
        return []
    # The whole listing rather than pathspecs: no argv limit, no pathspec magic in names.
    out = run_git(top, "ls-tree", "-r", "-z", "--name-only", head).stdout
    tracked = {p for p in out.split("\0") if p}
    return [p for p in files if p not in tracked and os.path.lexists(top / p)]


def _message(plan: MergePlan, gate: GateResult | None) -> str:
    lines = [f"switchyard: merge run {plan.run_id}", ""]
    if plan.task:
        lines += [plan.task.strip(), ""]
    lines.append(f"Evidence: .switchyard/runs/{plan.run_id}/ (manifest.json)")
    if gate is not None and gate.approving_verdict is not None:
        v = gate.approving_verdict
        lines.append(f"Judge: {v.who} approved")
    lines.append(f"Approved-by: a human ({HUMAN})")
    return "\n".join(lines) + "\n"


def _short_ref(ref: str | None) -> str | None:
    return ref.removeprefix("refs/heads/") if ref else None


__all__ = [
    "DIRTY",
    "EVIDENCE",
    "GIT",
    "OUTSIDE",
    "STATUS",
    "UNREVIEWED",
    "UNTESTED",
    "Confirm",
    "LockedPlan",
    "MergeOutcome",
    "MergePlan",
    "MergeRollbackError",
    "execute_merge",
    "in_progress",
    "locked_plan",
    "merge_run",
    "prepare_merge",
    "preview_merge",
    "upfront_not_covering",
]
