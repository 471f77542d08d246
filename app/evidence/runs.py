"""Finding runs: every bundle under a repo's state dir, and one by its id or a prefix."""

from __future__ import annotations

import contextlib
from pathlib import Path

from app.errors import UsageError
from app.evidence import live
from app.evidence.errors import EvidenceError, UnknownRun
from app.evidence.files import opt_str, read_json_object
from app.evidence.layout import RUN_INFO, runs_dir
from app.evidence.records import Manifest, RunInfo
from app.evidence.verify import read_manifest


def list_runs(repo: Path) -> list[RunInfo]:
    """Every bundle under the repo's state dir, oldest first."""
    out: list[RunInfo] = []
    root = runs_dir(repo)
    live.sweep(root.parent)  # the markers runs killed before their seal left behind
    for path in _bundles(root):
        info = read_json_object(path / RUN_INFO)
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
                created=manifest.created if manifest else opt_str(info.get("created")),
            )
        )
    return sorted(out, key=lambda r: (r.created or "", r.run_id))


def _bundles(root: Path) -> list[Path]:
    """The bundle folders in ``root``: real folders only. A link there (a repository can
    ship one) would have a bundle read from wherever it points."""
    if not root.is_dir():
        return []
    return [
        p
        for p in root.iterdir()
        if not p.name.startswith(".") and not p.is_symlink() and p.is_dir()
    ]


def resolve_run(repo: Path, ref: str) -> Path:
    """The bundle directory for a run id or a unique prefix of one."""
    root = runs_dir(repo)
    names = sorted(p.name for p in _bundles(root))
    if ref in names:
        return root / ref
    matches = [n for n in names if ref and n.startswith(ref)]
    if len(matches) == 1:
        return root / matches[0]
    if not matches:
        raise UnknownRun(f"no run {ref!r} in {root}")
    shown = ", ".join(matches[:5]) + (" …" if len(matches) > 5 else "")
    raise UsageError(f"run {ref!r} is ambiguous: {shown}")


__all__ = ["list_runs", "resolve_run"]
