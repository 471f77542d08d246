"""The records a bundle is made of and reported as: the manifest that seals it, a test
loop's result, a row of the run list and a verification report."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

FORMAT = 1

#: How a run ended. Only ``merge_ready`` may be merged.
RunStatus = Literal["merge_ready", "failed", "stopped"]
MERGE_READY: RunStatus = "merge_ready"


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
    """One row of :func:`app.evidence.runs.list_runs`."""

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


__all__ = [
    "FORMAT",
    "MERGE_READY",
    "AuditAnchor",
    "BundleReport",
    "FileEntry",
    "Manifest",
    "RunInfo",
    "RunStatus",
    "TestLoopRecord",
]
