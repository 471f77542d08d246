"""Verifying a bundle: reading its manifest and re-checking every file and audit line."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from app.audit.canonical import verify_lines
from app.counted import counted
from app.errors import UsageError
from app.evidence.errors import EvidenceError
from app.evidence.files import file_entry, read_regular, walk
from app.evidence.layout import AUDIT, MANIFEST, check_name
from app.evidence.records import AuditAnchor, BundleReport, Manifest


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
    for rel, _ in walk(path):
        if rel != MANIFEST and rel not in manifest.files:
            problems.append(f"{rel}: not listed in the manifest (a file was added)")

    if AUDIT in manifest.files and (path / AUDIT).is_file():
        problems.extend(_audit_problems(path / AUDIT, manifest))
    elif manifest.audit is not None and AUDIT not in manifest.files:
        problems.append(f"{MANIFEST} anchors audit lines but does not list {AUDIT}")
    return report(manifest, checked)


def _audit_problems(path: Path, manifest: Manifest) -> list[str]:
    problems: list[str] = []
    try:
        text = read_regular(path).decode("utf-8", errors="replace")
    except OSError as exc:
        return [f"{AUDIT}: cannot be read: {exc.strerror or exc}"]
    # split at "\n" alone, as the export writes them: a line's text keeps U+2028 or U+0085
    # (a model's words in a detail) as it is, and splitlines() cut such a line in two
    lines = [line for line in text.split("\n") if line.strip()]
    anchor = manifest.audit or AuditAnchor(lines=0)
    report = verify_lines(lines, chain=False, head_hash=anchor.head_hash, head_seq=anchor.head_seq)
    if not report.ok:
        problems.append(f"{AUDIT}: {report.problem}")
        return problems
    if len(lines) != anchor.lines:
        problems.append(f"{AUDIT}: {counted(len(lines), 'line')}, the manifest says {anchor.lines}")
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
        return Manifest.model_validate_json(read_regular(target))
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top)"
        raise EvidenceError(f"{MANIFEST} is not a valid manifest ({loc}: {err['msg']})") from None
    except OSError as exc:
        raise EvidenceError(f"{MANIFEST} cannot be read: {exc.strerror or exc}") from None


__all__ = ["read_manifest", "verify_bundle"]
