"""Evidence bundles (GR-007): one directory per run, sealed by a manifest of sha256 hashes.

``REPO/.switchyard/runs/<run-id>/`` holds what a reviewer (or the merge gate) needs:

=====================  ================================================================
``run.json``           run id, task, session, created (written first, so a crashed run
                       still says what it was)
``TASK_BRIEF.md``      Stage0's task brief; ``brief.json`` its structured form
``synthesis.json``     the opted-in Tier2 synthesis: accepted, cached or dropped (why)
``condensed.json``     the Librarian's condensation, when the brief exceeded the window
``plan.json``          the Architect's plan
``diffs/attempt-N``    every attempt's unified diff, made by Switchyard from the worktree
                       after the edits landed (``.diff``), or why there is none
``edits/attempt-N``    the attempt's edit list as parsed from each reply, the applier's
                       notes (how and where each edit landed) and refusals (``.json``)
``tests/loop-N``       every test loop: the output (``.log``) and the result (``.json``)
``highrisk.json``      the High-Risk classification of the change
``critique.json``      the critic sidecar's report
``second_opinion.json``  the escalation-only second opinions (advice, never a decision)
``verdict.json``       the Judge's verdict(s)
``audit.jsonl``        this run's audit lines, exported from the chain
``cost.json``          the cost summary
``manifest.json``      written last: metadata, and the sha256 and size of every file
=====================  ================================================================

Every file is written atomically (a temp file, fsync, rename), so a crash leaves either
the old file or the new one. After :meth:`EvidenceBundle.finalize` the bundle is sealed:
nothing more may be written. :func:`verify_bundle` re-checks every hash, reports files
that are missing or not listed, and verifies ``audit.jsonl`` line by line.

Every file is masked before it is written (DESIGN decision 3; the one masker,
:mod:`app.audit.masking`): the values of the key variables and the common key shapes
never reach a bundle, and the manifest hashes the masked bytes. ``audit.jsonl`` is no
exception in effect: its lines are the audit log's, masked when they were appended, and
copied verbatim (masking them again would break their hash chain). Stage0 writes
``TASK_BRIEF.md`` and ``brief.json`` itself, masked (:func:`app.stage0.brief.write_brief`).

The concerns live in modules of their own, all re-exported here: the file names
(:mod:`~app.evidence.layout`), the records (:mod:`~app.evidence.records`), crash-safe
file writes (:mod:`~app.evidence.files`), sealing (:mod:`~app.evidence.seal`),
verifying (:mod:`~app.evidence.verify`) and finding runs (:mod:`~app.evidence.runs`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.audit.canonical import jsonable
from app.audit.masking import mask_bytes
from app.clock import Clock, SystemClock, iso
from app.evidence import live
from app.evidence.errors import EvidenceError, UnknownRun
from app.evidence.files import (
    atomic_write,
    dumps,
    file_entry,
    fsync_dir,
    fsync_file,
    masked_dumps,
    opt_str,
    read_json_object,
    walk,
)
from app.evidence.layout import (
    AUDIT,
    BRIEF,
    CONDENSED,
    COST,
    CRITIQUE,
    HIGHRISK,
    MANIFEST,
    PLAN,
    RUN_INFO,
    RUNS_DIR,
    SECOND_OPINION,
    SPEC_OVERRIDES,
    SYNTHESIS,
    TASK_BRIEF,
    TMP_PREFIX,
    VERDICT,
    check_name,
    diff_name,
    edits_name,
    loop_log_name,
    loop_result_name,
    runs_dir,
)
from app.evidence.records import (
    FORMAT,
    MERGE_READY,
    AuditAnchor,
    BundleReport,
    FileEntry,
    Manifest,
    RunInfo,
    RunStatus,
    TestLoopRecord,
)
from app.evidence.runid import validate_run_id
from app.evidence.runs import list_runs, resolve_run
from app.evidence.seal import SEALED_CODE, audit_anchor, bundle_seal_line, sealed_hash
from app.evidence.verify import read_manifest, verify_bundle
from app.paths import repo_state_dir

if TYPE_CHECKING:
    from app.audit.base import AuditBase
    from app.policy.gate import VerdictRecord
    from app.workspace.sandbox import SandboxResult


class EvidenceBundle:
    """A run's bundle being written. :meth:`create` it, write files, :meth:`finalize` it."""

    def __init__(self, path: Path, run_id: str, *, clock: Clock) -> None:
        self.path = path
        self.run_id = run_id
        self._clock = clock
        self.sealed = (path / MANIFEST).exists()
        #: lets go of the lock that says, to any process, that this run is still going
        #: (app.evidence.live): once, at the seal, at :meth:`release`, or when this object
        #: goes (a weakref finalizer: it runs once, and before interpreter teardown)
        self._release: weakref.finalize[[Path, int], EvidenceBundle] | None = None
        #: every file this object wrote, and the sha256 of what it wrote: what the seal
        #: must find as it was (:meth:`changed_meanwhile`)
        self._written: dict[str, str] = {}

    def release(self) -> None:
        """This run no longer goes on (sealed, or given up unsealed): its lock let go."""
        if self._release is not None:
            self._release()

    @classmethod
    def create(
        cls,
        repo: Path,
        run_id: str,
        *,
        task: str = "",
        session: str | None = None,
        clock: Clock | None = None,
    ) -> EvidenceBundle:
        validate_run_id(run_id)
        clock = clock or SystemClock()
        root = repo_state_dir(Path(repo), RUNS_DIR)  # real folders, no link on the way
        path = root / run_id
        try:
            path.mkdir()
        except FileExistsError:
            raise EvidenceError(f"a bundle for run {run_id} already exists ({path})") from None
        except OSError as exc:  # a folder the user cannot write, a full disk
            raise EvidenceError(
                f"cannot create the evidence bundle {path}: {exc.strerror or exc}"
            ) from None
        bundle = cls(path, run_id, clock=clock)
        held = live.hold(path)
        if held is not None:
            bundle._release = weakref.finalize(bundle, live.let_go, path, held)
        info = {"run_id": run_id, "task": task, "session": session, "created": iso(clock.now())}
        try:
            bundle.write_json(RUN_INFO, info)
        except EvidenceError:
            bundle.release()
            shutil.rmtree(path, ignore_errors=True)  # no bundle that says nothing is left
            raise
        return bundle

    @classmethod
    def open(cls, repo: Path, run_id: str, *, clock: Clock | None = None) -> EvidenceBundle:
        """An existing bundle (e.g. to keep writing after a restart, unless sealed)."""
        path = runs_dir(repo) / validate_run_id(run_id)
        if not path.is_dir():
            raise UnknownRun(f"no evidence bundle for run {run_id} in {runs_dir(repo)}")
        return cls(path, run_id, clock=clock or SystemClock())

    # ── files ────────────────────────────────────────────────────────────────────────────

    def write_bytes(self, name: str, data: bytes) -> Path:
        """Write ``name`` (its text masked: undecodable bytes are kept as they are)."""
        if self.sealed:
            raise EvidenceError(f"the bundle of run {self.run_id} is sealed; {name} not written")
        target = self.path / check_name(name)
        masked = mask_bytes(data)
        try:
            atomic_write(target, masked)
        except OSError as exc:  # a full disk, a folder made read-only meanwhile
            raise EvidenceError(f"cannot write {target}: {exc.strerror or exc}") from None
        self._written[name] = hashlib.sha256(masked).hexdigest()
        return target

    def write_text(self, name: str, text: str) -> Path:
        return self.write_bytes(name, text.encode("utf-8", "surrogateescape"))

    def write_json(self, name: str, obj: Any) -> Path:
        # Masked as values first: a key named like a secret loses its value whole, and
        # a line-anchored shape (APP_SECRET=…) still sees the newlines JSON escapes.
        return self.write_text(name, masked_dumps(obj))

    def write_diff(self, attempt: int, diff_text: str) -> Path:
        """``diffs/attempt-N.diff``, masked. Safe for the merge: this copy is for people
        and the gate's reading only. What the merge applies is the sealed commit of the
        run's git branch (``manifest.head``, see :mod:`app.workspace.merge`), made by
        writing the model's unmasked edits in the worktree and tested there; nothing
        ever applies a bundle's diff file, so masking it cannot change what is merged."""
        return self.write_text(diff_name(attempt), diff_text)

    def write_test_loop(
        self,
        loop: int,
        result: SandboxResult,
        *,
        attempt: int | None = None,
        commit: str | None = None,
    ) -> TestLoopRecord:
        """``tests/loop-N.log`` (the output) and ``tests/loop-N.json`` (the result)."""
        log = loop_log_name(loop)
        header = (
            f"$ {' '.join(result.argv)}\n# runner={result.runner}"
            f" exit={result.exit_code} timed_out={str(result.timed_out).lower()}"
            f" duration={result.duration_s}s\n"
            + (f"# not a pass: {result.vacuous}\n" if result.vacuous else "")
        )
        self.write_text(log, header + result.output)
        record = TestLoopRecord(
            loop=loop,
            attempt=attempt,
            commit=commit,
            argv=result.argv,
            exit_code=result.exit_code,
            timed_out=result.timed_out,
            ok=result.ok,
            runner=result.runner,
            degraded=result.degraded,
            reason=result.reason,
            duration_s=result.duration_s,
            log=log,
        )
        self.write_json(loop_result_name(loop), record)
        return record

    def write_verdicts(self, verdicts: Sequence[VerdictRecord | Mapping[str, Any]]) -> Path:
        """``verdict.json`` as ``{"verdicts": [...]}``; each may carry more (findings …)."""
        return self.write_json(VERDICT, {"verdicts": list(verdicts)})

    async def export_audit(self, log: AuditBase) -> int:
        """Write this run's audit lines to ``audit.jsonl`` (atomically). Returns the count."""
        if self.sealed:
            raise EvidenceError(f"the bundle of run {self.run_id} is sealed; audit not written")
        target = self.path / AUDIT
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=self.path)
        os.close(fd)
        try:
            count = await log.export_jsonl(Path(tmp), run=self.run_id)
            fsync_file(Path(tmp))
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        fsync_dir(self.path)
        self._written[AUDIT] = file_entry(target).sha256
        return count

    def adopt(self, *names: str) -> None:
        """Files another writer put in the bundle (Stage0's brief), held to what they
        are now as if this object had written them."""
        for name in names:
            target = self.path / check_name(name)
            if target.is_file() and not target.is_symlink():
                self._written[name] = file_entry(target).sha256

    def changed_meanwhile(self) -> list[str]:
        """The files this object wrote that are not as it wrote them ("plan.json
        missing", "brief.json changed"): a ``git clean -fdx`` or a hand in the run's
        folder while it ran. A seal over what is left vouched for a bundle without its
        brief and plan, and the run merged (an audit)."""
        out: list[str] = []
        for rel, sha in self._written.items():
            target = self.path / rel
            if target.is_symlink() or not target.is_file():
                out.append(f"{rel} missing")
            elif file_entry(target).sha256 != sha:
                out.append(f"{rel} changed")
        return out

    # ── sealing ──────────────────────────────────────────────────────────────────────────

    def finalize(
        self,
        *,
        status: RunStatus,
        task: str | None = None,
        base: str | None = None,
        branch: str | None = None,
        head: str | None = None,
        policy_version: str | None = None,
        session: str | None = None,
        local_only: bool = False,
        reason: str = "",
        extra: Mapping[str, Any] | None = None,
    ) -> Manifest:
        """Hash every file and write ``manifest.json`` last. The bundle is sealed after it."""
        if self.sealed:
            raise EvidenceError(f"the bundle of run {self.run_id} is already sealed")
        info = read_json_object(self.path / RUN_INFO)
        files: dict[str, FileEntry] = {}
        for rel, path in walk(self.path):
            if rel == MANIFEST:
                continue
            if Path(rel).name.startswith(TMP_PREFIX):
                path.unlink()  # a write that crashed half-way: never evidence
                continue
            if path.is_symlink() or not path.is_file():
                raise EvidenceError(f"{rel} in the bundle is not a regular file")
            files[rel] = file_entry(path)
        manifest = Manifest(
            run_id=self.run_id,
            task=task if task is not None else str(info.get("task") or ""),
            session=session if session is not None else opt_str(info.get("session")),
            base=base,
            branch=branch,
            head=head,
            created=str(info.get("created") or iso(self._clock.now())),
            finalized=iso(self._clock.now()),
            policy_version=policy_version,
            local_only=local_only,
            status=status,
            reason=reason,
            files=dict(sorted(files.items())),
            audit=audit_anchor(self.path / AUDIT) if AUDIT in files else None,
            extra=jsonable(dict(extra or {})),
        )
        atomic_write(self.path / MANIFEST, masked_dumps(manifest).encode("utf-8"))
        self.sealed = True
        self.release()
        return manifest

    @property
    def manifest_sha256(self) -> str:
        return file_entry(self.path / MANIFEST).sha256


__all__ = [
    "AUDIT",
    "BRIEF",
    "CONDENSED",
    "COST",
    "CRITIQUE",
    "FORMAT",
    "HIGHRISK",
    "MANIFEST",
    "MERGE_READY",
    "PLAN",
    "RUNS_DIR",
    "RUN_INFO",
    "SEALED_CODE",
    "SECOND_OPINION",
    "SPEC_OVERRIDES",
    "SYNTHESIS",
    "TASK_BRIEF",
    "VERDICT",
    "AuditAnchor",
    "BundleReport",
    "EvidenceBundle",
    "EvidenceError",
    "FileEntry",
    "Manifest",
    "RunInfo",
    "RunStatus",
    "TestLoopRecord",
    "UnknownRun",
    "atomic_write",
    "bundle_seal_line",
    "check_name",
    "diff_name",
    "dumps",
    "edits_name",
    "file_entry",
    "list_runs",
    "loop_log_name",
    "loop_result_name",
    "masked_dumps",
    "read_manifest",
    "resolve_run",
    "runs_dir",
    "sealed_hash",
    "verify_bundle",
]
