"""Evidence bundles (GR-007): one directory per run, sealed by a manifest of sha256 hashes.

``REPO/.switchyard/runs/<run-id>/`` holds what a reviewer (or the merge gate) needs:

=====================  ================================================================
``run.json``           run id, task, session, created (written first, so a crashed run
                       still says what it was)
``TASK_BRIEF.md``      Stage0's task brief; ``brief.json`` its structured form
``synthesis.json``     the opted-in Tier2 synthesis: accepted, cached or dropped (why)
``condensed.json``     the Librarian's condensation, when the brief exceeded the window
``plan.json``          the Architect's plan
``diffs/attempt-N``    every diff attempt, as the model wrote it (``.diff``)
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
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.audit.canonical import jsonable, verify_lines
from app.clock import Clock, SystemClock, iso
from app.errors import SwitchyardError, UsageError
from app.evidence.runid import validate_run_id
from app.paths import STATE_DIR_NAME, repo_state_dir

if TYPE_CHECKING:
    from app.audit.log import AuditLog
    from app.audit.types import AuditLine
    from app.policy.gate import VerdictRecord
    from app.workspace.sandbox import SandboxResult

FORMAT = 1
RUNS_DIR = "runs"

MANIFEST = "manifest.json"
RUN_INFO = "run.json"
TASK_BRIEF = "TASK_BRIEF.md"
BRIEF = "brief.json"
PLAN = "plan.json"
HIGHRISK = "highrisk.json"
CRITIQUE = "critique.json"
SECOND_OPINION = "second_opinion.json"
SYNTHESIS = "synthesis.json"
CONDENSED = "condensed.json"
VERDICT = "verdict.json"
AUDIT = "audit.jsonl"
COST = "cost.json"

#: How a run ended. Only ``merge_ready`` may be merged.
RunStatus = Literal["merge_ready", "failed", "stopped"]
MERGE_READY: RunStatus = "merge_ready"
#: reason code of the audit line that records a sealed bundle's manifest hash
SEALED_CODE = "EVIDENCE_SEALED"

_TMP_PREFIX = ".tmp-"
_NAME_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


class EvidenceError(SwitchyardError):
    """A bundle cannot be written or read as asked."""


class UnknownRun(SwitchyardError):
    """No bundle matches the run id (or prefix) given."""

    exit_code = 2


def diff_name(attempt: int) -> str:
    return f"diffs/attempt-{attempt}.diff"


def loop_log_name(loop: int) -> str:
    return f"tests/loop-{loop}.log"


def loop_result_name(loop: int) -> str:
    return f"tests/loop-{loop}.json"


# ── records ──────────────────────────────────────────────────────────────────────────────


class FileEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    sha256: str
    size: int


class AuditAnchor(BaseModel):
    """The end of ``audit.jsonl``: a cut-off tail shows up as a mismatch here."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lines: int
    head_seq: int | None = None
    head_hash: str | None = None


class Manifest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: int = FORMAT
    run_id: str
    task: str = ""
    session: str | None = None
    #: the user's HEAD the run started from, the run branch and its tip when sealed
    base: str | None = None
    branch: str | None = None
    head: str | None = None
    created: str
    finalized: str
    policy_version: str | None = None
    local_only: bool = False
    status: RunStatus
    #: why the run ended as it did (empty for merge_ready)
    reason: str = ""
    files: dict[str, FileEntry]
    audit: AuditAnchor | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


class TestLoopRecord(BaseModel):
    """``tests/loop-N.json``: what the merge gate reads to decide "tests green" (GR-006)."""

    __test__: ClassVar[bool] = False  # not a pytest test class

    model_config = ConfigDict(frozen=True, extra="forbid")

    loop: int
    attempt: int | None = None
    #: the worktree commit the tests ran on; the merge checks it is the branch tip
    commit: str | None = None
    argv: list[str]
    exit_code: int
    timed_out: bool
    ok: bool
    runner: str
    degraded: bool
    reason: str = ""
    duration_s: float
    log: str


class RunInfo(BaseModel):
    """One row of :func:`list_runs`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    path: str
    finalized: bool
    status: str | None = None
    task: str = ""
    created: str | None = None


class BundleReport(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    ok: bool
    run_id: str
    path: str
    problems: list[str]
    files_checked: int = 0
    manifest: Manifest | None = None


# ── writing ──────────────────────────────────────────────────────────────────────────────


def runs_dir(repo: Path) -> Path:
    return Path(repo) / STATE_DIR_NAME / RUNS_DIR


class EvidenceBundle:
    """A run's bundle being written. :meth:`create` it, write files, :meth:`finalize` it."""

    def __init__(self, path: Path, run_id: str, *, clock: Clock) -> None:
        self.path = path
        self.run_id = run_id
        self._clock = clock
        self.sealed = (path / MANIFEST).exists()

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
        root = repo_state_dir(Path(repo)) / RUNS_DIR
        root.mkdir(parents=True, exist_ok=True)
        path = root / run_id
        try:
            path.mkdir()
        except FileExistsError:
            raise EvidenceError(f"a bundle for run {run_id} already exists ({path})") from None
        bundle = cls(path, run_id, clock=clock)
        info = {"run_id": run_id, "task": task, "session": session, "created": iso(clock.now())}
        bundle.write_json(RUN_INFO, info)
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
        if self.sealed:
            raise EvidenceError(f"the bundle of run {self.run_id} is sealed; {name} not written")
        target = self.path / check_name(name)
        atomic_write(target, data)
        return target

    def write_text(self, name: str, text: str) -> Path:
        return self.write_bytes(name, text.encode("utf-8", "surrogateescape"))

    def write_json(self, name: str, obj: Any) -> Path:
        return self.write_text(name, dumps(obj))

    def write_diff(self, attempt: int, diff_text: str) -> Path:
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

    async def export_audit(self, log: AuditLog) -> int:
        """Write this run's audit lines to ``audit.jsonl`` (atomically). Returns the count."""
        if self.sealed:
            raise EvidenceError(f"the bundle of run {self.run_id} is sealed; audit not written")
        target = self.path / AUDIT
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=self.path)
        os.close(fd)
        try:
            count = await log.export_jsonl(Path(tmp), run=self.run_id)
            _fsync_file(Path(tmp))
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.path)
        return count

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
        info = _read_json_object(self.path / RUN_INFO)
        files: dict[str, FileEntry] = {}
        for rel, path in _walk(self.path):
            if rel == MANIFEST:
                continue
            if Path(rel).name.startswith(_TMP_PREFIX):
                path.unlink()  # a write that crashed half-way: never evidence
                continue
            if path.is_symlink() or not path.is_file():
                raise EvidenceError(f"{rel} in the bundle is not a regular file")
            files[rel] = file_entry(path)
        manifest = Manifest(
            run_id=self.run_id,
            task=task if task is not None else str(info.get("task") or ""),
            session=session if session is not None else _opt_str(info.get("session")),
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
            audit=_audit_anchor(self.path / AUDIT) if AUDIT in files else None,
            extra=jsonable(dict(extra or {})),
        )
        atomic_write(self.path / MANIFEST, dumps(manifest).encode("utf-8"))
        self.sealed = True
        return manifest

    @property
    def manifest_sha256(self) -> str:
        return file_entry(self.path / MANIFEST).sha256


def bundle_seal_line(manifest: Manifest, manifest_sha256: str) -> dict[str, Any]:
    """The audit line that anchors a sealed bundle in the chain, as ``append`` kwargs.

    With it, ``evidence verify`` also catches a bundle rewritten wholesale (files and a
    recomputed manifest), which the manifest alone cannot.
    """
    return {
        "kind": "run",
        "run": manifest.run_id,
        "reason_codes": [SEALED_CODE],
        "values": {"manifest_sha256": manifest_sha256, "status": manifest.status},
        "detail": f"evidence bundle sealed ({manifest.status}, {len(manifest.files)} files)",
    }


def sealed_hash(lines: Iterable[AuditLine], run_id: str) -> tuple[str, int] | None:
    """The manifest sha256 (and line seq) of the newest seal line for ``run_id``, if any."""
    found: tuple[str, int] | None = None
    for line in lines:
        if line.run == run_id and line.kind == "run" and SEALED_CODE in line.reason_codes:
            value = line.values.get("manifest_sha256")
            if isinstance(value, str):
                found = (value, line.seq)
    return found


# ── verifying ────────────────────────────────────────────────────────────────────────────


def verify_bundle(path: Path) -> BundleReport:
    """Check a bundle against its manifest: hashes, sizes, missing and unlisted files,
    and the audit lines (each line's hash, order, run, and the anchored tail)."""
    path = Path(path)
    run_id = path.name
    problems: list[str] = []

    def report(manifest: Manifest | None = None, checked: int = 0) -> BundleReport:
        return BundleReport(
            ok=not problems,
            run_id=run_id,
            path=str(path),
            problems=problems,
            files_checked=checked,
            manifest=manifest,
        )

    if not path.is_dir():
        problems.append(f"no bundle at {path}")
        return report()
    try:
        manifest = read_manifest(path)
    except EvidenceError as exc:
        problems.append(str(exc))
        return report()
    if manifest.run_id != run_id:
        problems.append(f"{MANIFEST}: run id {manifest.run_id!r} is not the bundle's {run_id!r}")

    checked = 0
    for rel, entry in manifest.files.items():
        try:
            check_name(rel)
        except UsageError:
            problems.append(f"{MANIFEST} lists an invalid name {rel!r}")
            continue
        target = path / rel
        if target.is_symlink() or (target.exists() and not target.is_file()):
            problems.append(f"{rel}: not a regular file")
            continue
        if not target.exists():
            problems.append(f"{rel}: missing (listed in the manifest)")
            continue
        actual = file_entry(target)
        checked += 1
        if actual.sha256 != entry.sha256:
            problems.append(
                f"{rel}: sha256 {actual.sha256[:12]}… does not match the manifest's"
                f" {entry.sha256[:12]}… (the file was changed)"
            )
        elif actual.size != entry.size:
            problems.append(f"{rel}: size {actual.size} is not the manifest's {entry.size}")
    for rel, _ in _walk(path):
        if rel != MANIFEST and rel not in manifest.files:
            problems.append(f"{rel}: not listed in the manifest (a file was added)")

    if AUDIT in manifest.files and (path / AUDIT).is_file():
        problems.extend(_audit_problems(path / AUDIT, manifest))
    elif manifest.audit is not None and AUDIT not in manifest.files:
        problems.append(f"{MANIFEST} anchors audit lines but does not list {AUDIT}")
    return report(manifest, checked)


def _audit_problems(path: Path, manifest: Manifest) -> list[str]:
    problems: list[str] = []
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = [line for line in text.splitlines() if line.strip()]
    anchor = manifest.audit or AuditAnchor(lines=0)
    report = verify_lines(lines, chain=False, head_hash=anchor.head_hash, head_seq=anchor.head_seq)
    if not report.ok:
        problems.append(f"{AUDIT}: {report.problem}")
        return problems
    if len(lines) != anchor.lines:
        problems.append(f"{AUDIT}: {len(lines)} lines, the manifest says {anchor.lines}")
    for n, raw in enumerate(lines, start=1):
        run = json.loads(raw).get("run")
        if run != manifest.run_id:
            problems.append(f"{AUDIT}: line {n} belongs to run {run!r}, not {manifest.run_id!r}")
            break
    return problems


def read_manifest(path: Path) -> Manifest:
    target = Path(path) / MANIFEST
    if not target.exists():
        raise EvidenceError(f"{MANIFEST} is missing (the run was not finalized)")
    try:
        return Manifest.model_validate_json(target.read_bytes())
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top)"
        raise EvidenceError(f"{MANIFEST} is not a valid manifest ({loc}: {err['msg']})") from None
    except OSError as exc:
        raise EvidenceError(f"{MANIFEST} cannot be read: {exc.strerror or exc}") from None


# ── finding runs ─────────────────────────────────────────────────────────────────────────


def list_runs(repo: Path) -> list[RunInfo]:
    """Every bundle under the repo's state dir, oldest first."""
    root = runs_dir(repo)
    if not root.is_dir():
        return []
    out: list[RunInfo] = []
    for path in root.iterdir():
        if not path.is_dir() or path.name.startswith("."):
            continue
        info = _read_json_object(path / RUN_INFO)
        manifest: Manifest | None = None
        with contextlib.suppress(EvidenceError):
            manifest = read_manifest(path)
        out.append(
            RunInfo(
                run_id=path.name,
                path=str(path),
                finalized=manifest is not None,
                status=manifest.status if manifest else None,
                task=manifest.task if manifest else str(info.get("task") or ""),
                created=manifest.created if manifest else _opt_str(info.get("created")),
            )
        )
    return sorted(out, key=lambda r: (r.created or "", r.run_id))


def resolve_run(repo: Path, ref: str) -> Path:
    """The bundle directory for a run id or a unique prefix of one."""
    root = runs_dir(repo)
    names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if ref in names:
        return root / ref
    matches = [n for n in names if ref and n.startswith(ref)]
    if len(matches) == 1:
        return root / matches[0]
    if not matches:
        raise UnknownRun(f"no run {ref!r} in {root}")
    shown = ", ".join(matches[:5]) + (" …" if len(matches) > 5 else "")
    raise UsageError(f"run {ref!r} is ambiguous: {shown}")


# ── helpers ──────────────────────────────────────────────────────────────────────────────


def check_name(name: str) -> str:
    """A bundle-relative file name: plain parts, no '..', not the manifest, no temp names."""
    parts = name.split("/")
    if (
        not name
        or name == MANIFEST
        or any(not _NAME_PART.match(p) or p in (".", "..") for p in parts)
        or parts[-1].startswith(_TMP_PREFIX)
    ):
        raise UsageError(f"invalid evidence file name {name!r}")
    return name


def dumps(obj: Any) -> str:
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json", by_alias=True)
    return json.dumps(jsonable(obj), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def file_entry(path: Path) -> FileEntry:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return FileEntry(sha256=digest.hexdigest(), size=size)


def atomic_write(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    # The rename itself is only durable once the directory is synced.
    with contextlib.suppress(OSError):
        _fsync_file(path)


def _walk(root: Path) -> list[tuple[str, Path]]:
    """Every non-directory entry under ``root`` (symlinks included, not followed)."""
    out: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        # A symlinked directory is an entry in its own right: list it, do not descend.
        for d in list(dirnames):
            if (here / d).is_symlink():
                dirnames.remove(d)
                filenames.append(d)
        for f in filenames:
            p = here / f
            out.append((p.relative_to(root).as_posix(), p))
    return sorted(out)


def _audit_anchor(path: Path) -> AuditAnchor:
    count, last = 0, None
    with path.open(encoding="utf-8") as fh:
        for raw in fh:
            if raw.strip():
                count += 1
                last = raw
    if last is None:
        return AuditAnchor(lines=0)
    try:
        data = json.loads(last)
    except ValueError:
        raise EvidenceError(f"{AUDIT}: the last line is not JSON") from None
    return AuditAnchor(lines=count, head_seq=data.get("seq"), head_hash=data.get("hash"))


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


__all__ = [
    "AUDIT",
    "CONDENSED",
    "COST",
    "CRITIQUE",
    "HIGHRISK",
    "MANIFEST",
    "MERGE_READY",
    "PLAN",
    "RUN_INFO",
    "SECOND_OPINION",
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
    "bundle_seal_line",
    "diff_name",
    "list_runs",
    "loop_log_name",
    "loop_result_name",
    "read_manifest",
    "resolve_run",
    "sealed_hash",
    "verify_bundle",
]
