"""Files in a bundle: crash-safe writes, hashing, walking, and lenient JSON reads.

Every write is atomic (a temp file, fsync, rename, then fsync of the directory), so a
crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from app.audit.canonical import jsonable
from app.audit.masking import mask_value
from app.durable import fsync_dir, fsync_file
from app.evidence.layout import TMP_PREFIX
from app.evidence.records import FileEntry
from app.regular_file import open_regular


def dumps(obj: Any) -> str:
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json", by_alias=True)
    return json.dumps(jsonable(obj), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def masked_dumps(obj: Any) -> str:
    """:func:`dumps` of ``obj`` with every secret in its values masked."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json", by_alias=True)
    return dumps(mask_value(jsonable(obj))[0])


#: the most of a bundle file read into memory (a manifest, a verdict, an audit copy)
MAX_READ_BYTES = 64 << 20


def read_regular(path: Path, limit: int = MAX_READ_BYTES) -> bytes:
    """The bytes of a bundle file, at most ``limit``: a regular file, never through a
    link (:func:`app.regular_file.open_regular`). A repository can ship its own
    ``.switchyard``: a manifest linked to /dev/zero ate all memory, a FIFO hung
    ``evidence show``."""
    with open_regular(path) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(path))
    return data


def file_entry(path: Path) -> FileEntry:
    digest = hashlib.sha256()
    size = 0
    with open_regular(path) as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return FileEntry(sha256=digest.hexdigest(), size=size)


def atomic_write(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=target.parent)
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
    fsync_dir(target.parent)


def walk(root: Path) -> list[tuple[str, Path]]:
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


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; ``{}`` when it is missing, unreadable or not an object."""
    try:
        data = json.loads(read_regular(path).decode("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


__all__ = [
    "atomic_write",
    "dumps",
    "file_entry",
    "fsync_dir",
    "fsync_file",
    "masked_dumps",
    "opt_str",
    "read_json_object",
    "walk",
]
