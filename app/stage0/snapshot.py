"""The assembled counts of the last build, kept in memory and on disk (``index.npz``).

A build that finds the same files with the same contents loads the snapshot instead of
assembling thousands of per-content entries again; a build after an edit keeps the
rows of every unchanged file, adds the rows of the changed ones, and remaps columns
to the new vocabulary, all in numpy. The result is the same matrix a build from
scratch gives (same sorted vocabulary, same rows, same counts): :func:`merge` is also
how a build from scratch is made, from an empty snapshot.

The file holds only arrays and JSON (``numpy.load(allow_pickle=False)``): nothing in it
can run code.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.replacing import temp_beside
from app.stage0.cache import BlobData
from app.stage0.chunker import ID_LEN, assign_ids
from app.stage0.index import ChunkRef, path_terms

if TYPE_CHECKING:
    import numpy as np
    from scipy.sparse import csr_matrix

FORMAT = "stage0-snapshot-1"


@dataclass(frozen=True, slots=True)
class FileRow:
    path: str
    key: str  # blob key (content + chunker settings)
    lo: int  # first row
    hi: int  # one past the last row
    binary: bool


@dataclass
class Counts:
    """An index before weighting: chunks, vocabulary, text and path term counts."""

    params: str
    files: list[FileRow]  # every listed file with a known content, in path order
    terms: list[str]  # sorted
    text: csr_matrix  # chunks × terms, float64 counts
    path: csr_matrix  # chunks × terms, each chunk's path tokens
    refs: list[ChunkRef]

    def by_file(self) -> dict[tuple[str, str], FileRow]:
        return {(f.path, f.key): f for f in self.files}


@dataclass(frozen=True, slots=True)
class Listed:
    """A file of the new listing: its content is known from the snapshot (``prev``)
    or given as analyzed ``data``."""

    path: str
    key: str
    prev: FileRow | None
    data: BlobData | None


def empty(params: str) -> Counts:
    import numpy as np
    from scipy.sparse import csr_matrix

    z = csr_matrix((0, 0), dtype=np.float64)
    return Counts(params, [], [], z, z.copy(), [])


def merge(prev: Counts, listed: Sequence[Listed], params: str) -> Counts:
    """The counts for ``listed`` (in path order): unchanged files' rows from ``prev``,
    the others built from their data; columns are the sorted vocabulary in use."""
    import numpy as np
    from scipy.sparse import csr_matrix, vstack

    new_text, new_path, new_refs, new_terms, new_sizes = _new_rows(
        [(x.path, x.key, x.data) for x in listed if x.prev is None and x.data is not None]
    )
    kept = [x.prev for x in listed if x.prev is not None and not x.prev.binary]
    kept_rows = (
        np.concatenate([np.arange(f.lo, f.hi, dtype=np.int64) for f in kept])
        if kept
        else np.zeros(0, dtype=np.int64)
    )
    kept_text = prev.text[kept_rows] if len(kept_rows) else None
    kept_path = prev.path[kept_rows] if len(kept_rows) else None

    used = np.zeros(0, dtype=np.int64)
    if kept_text is not None and kept_path is not None:
        seen = np.zeros(len(prev.terms), dtype=bool)
        seen[kept_text.indices] = True
        seen[kept_path.indices] = True
        used = np.flatnonzero(seen)
    kept_terms = [prev.terms[c] for c in used.tolist()]
    terms = sorted(set(kept_terms).union(new_terms)) if new_terms else kept_terms
    v = len(terms)
    position = {t: i for i, t in enumerate(terms)} if new_terms else None

    def widen(m: csr_matrix, cols: np.ndarray) -> csr_matrix:
        """``m`` with its columns renumbered into the new vocabulary."""
        indices = cols[m.indices] if len(m.indices) else m.indices.astype(np.int32)
        return csr_matrix((m.data, indices, m.indptr), shape=(m.shape[0], v))

    blocks_text: list[csr_matrix] = []
    blocks_path: list[csr_matrix] = []
    if kept_text is not None and kept_path is not None:
        remap = np.zeros(len(prev.terms), dtype=np.int32)
        if position is None:  # nothing new: the kept terms, in order
            remap[used] = np.arange(len(used), dtype=np.int32)
        else:
            remap[used] = np.fromiter((position[t] for t in kept_terms), np.int32, len(used))
        blocks_text.append(widen(kept_text, remap))
        blocks_path.append(widen(kept_path, remap))
    if new_text.shape[0]:
        # (new files may hold no term at all: ``def f(): pass`` is stopwords and a short
        # name, and a fresh one-file repository crashed here)
        at = position or {}
        cols = np.fromiter((at[t] for t in new_terms), np.int32, len(new_terms))
        blocks_text.append(widen(new_text, cols))
        blocks_path.append(widen(new_path, cols))

    # Rows in path order: kept files' rows and new files' rows, interleaved as listed.
    order: list[np.ndarray] = []
    files: list[FileRow] = []
    refs: list[ChunkRef] = []
    kept_at, new_at, row = 0, len(kept_rows), 0
    sizes = iter(new_sizes)
    new_refs_iter = iter(new_refs)
    for x in listed:
        if x.prev is not None:
            n = x.prev.hi - x.prev.lo
            order.append(np.arange(kept_at, kept_at + n, dtype=np.int64))
            refs.extend(prev.refs[x.prev.lo : x.prev.hi])
            kept_at += n
            binary = x.prev.binary
        elif x.data is not None:
            n = next(sizes)
            order.append(np.arange(new_at, new_at + n, dtype=np.int64))
            refs.extend(next(new_refs_iter) for _ in range(n))
            new_at += n
            binary = x.data.binary
        else:
            continue
        files.append(FileRow(x.path, x.key, row, row + n, binary))
        row += n
    perm = np.concatenate(order) if order else np.zeros(0, dtype=np.int64)

    def stack(blocks: list[csr_matrix]) -> csr_matrix:
        if not blocks:
            return csr_matrix((0, v), dtype=np.float64)
        m = csr_matrix(vstack(blocks, format="csr"), dtype=np.float64)
        m = m[perm] if len(perm) else m
        m.sum_duplicates()
        m.sort_indices()
        return m

    return Counts(params, files, terms, stack(blocks_text), stack(blocks_path), refs)


def _new_rows(
    files: Sequence[tuple[str, str, BlobData]],
) -> tuple[csr_matrix, csr_matrix, list[ChunkRef], list[str], list[int]]:
    """Rows for files analyzed anew, over their own sorted vocabulary."""
    import numpy as np
    from scipy.sparse import csr_matrix

    per_path = {path: Counter(path_terms(path)) for path, _, data in files if data.pieces}
    vocab_set: set[str] = set()
    for path, _, data in files:
        vocab_set.update(data.terms)
        if data.pieces:
            vocab_set.update(per_path[path])
    terms = sorted(vocab_set)
    vocab = {t: i for i, t in enumerate(terms)}
    refs: list[ChunkRef] = []
    sizes: list[int] = []
    indptrs, indices, values = [np.zeros(1, dtype=np.int64)], [], []
    offset = 0
    p_rows: list[int] = []
    p_cols: list[int] = []
    p_vals: list[float] = []
    for path, key, data in files:
        sizes.append(len(data.pieces))
        if not data.pieces:
            continue
        mapping = np.fromiter((vocab[t] for t in data.terms), dtype=np.int32, count=len(data.terms))
        indices.append(mapping[data.indices])
        values.append(data.counts.astype(np.float64))
        indptrs.append(data.indptr[1:].astype(np.int64) + offset)
        offset += int(data.indptr[-1])
        ids = assign_ids(path, ((p.kind, p.symbol, p.digest) for p in data.pieces))
        cols = [vocab[t] for t in per_path[path]]
        vals = [float(c) for c in per_path[path].values()]
        for ordinal, (p, cid) in enumerate(zip(data.pieces, ids, strict=True)):
            p_rows.extend([len(refs)] * len(cols))
            p_cols.extend(cols)
            p_vals.extend(vals)
            refs.append(
                ChunkRef(cid, path, p.start, p.end, p.kind, p.symbol, p.tokens, key, ordinal)
            )
    n, v = len(refs), len(terms)
    text = csr_matrix(
        (
            np.concatenate(values) if values else np.zeros(0),
            np.concatenate(indices) if indices else np.zeros(0, dtype=np.int32),
            np.concatenate(indptrs),
        ),
        shape=(n, v),
    )
    path = csr_matrix((np.asarray(p_vals), (p_rows, p_cols)), shape=(n, v), dtype=np.float64)
    path.sum_duplicates()
    path.sort_indices()
    return text, path, refs, terms, sizes


# ── on disk ───────────────────────────────────────────────────────────────────────────
def save(counts: Counts, file: Path) -> None:
    """Write atomically (a reader sees the old snapshot or the new one)."""
    import numpy as np

    header = {
        "format": FORMAT,
        "params": counts.params,
        "files": [[f.path, f.key, f.lo, f.hi, f.binary] for f in counts.files],
        "kinds": [r.kind for r in counts.refs],
        "symbols": [r.symbol for r in counts.refs],
    }
    arrays: dict[str, Any] = {
        "header": np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8),
        "terms": np.frombuffer("\n".join(counts.terms).encode("utf-8"), np.uint8),
        "ids": np.frombuffer("".join(r.id for r in counts.refs).encode("ascii"), np.uint8),
        "nums": np.asarray(
            [(r.start, r.end, r.tokens, r.ordinal) for r in counts.refs], dtype=np.int64
        ).reshape(-1, 4),
    }
    for name, m in (("text", counts.text), ("path", counts.path)):
        arrays[f"{name}_data"] = m.data.astype(np.int32)
        arrays[f"{name}_indices"] = m.indices.astype(np.int32)
        arrays[f"{name}_indptr"] = m.indptr.astype(np.int64)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(file)
    with tmp.open("wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, file)


def load(file: Path, params: str) -> Counts | None:
    """The snapshot in ``file`` if it was made with ``params``; None if absent, stale or
    unreadable (it is derived data: the build makes it again)."""
    import numpy as np

    try:
        with np.load(file, allow_pickle=False) as z:
            header = json.loads(z["header"].tobytes().decode("utf-8"))
            if header.get("format") != FORMAT or header.get("params") != params:
                return None
            text_terms = z["terms"].tobytes().decode("utf-8")
            ids = z["ids"].tobytes().decode("ascii")
            nums = z["nums"]
            mats = {}
            for name in ("text", "path"):
                mats[name] = (
                    z[f"{name}_data"].astype(np.float64),
                    z[f"{name}_indices"],
                    z[f"{name}_indptr"],
                )
    except Exception:  # derived data: an empty, cut or odd file (EOFError, BadZipFile, ...)
        return None
    try:
        return _counts(header, text_terms, ids, nums, mats, params)
    except Exception:  # a header that does not fit its arrays
        return None


def _counts(
    header: dict[str, Any], text_terms: str, ids: str, nums: Any, mats: Any, params: str
) -> Counts | None:
    from scipy.sparse import csr_matrix

    terms = text_terms.split("\n") if text_terms else []
    files = [FileRow(p, k, lo, hi, bool(b)) for p, k, lo, hi, b in header["files"]]
    n = sum(f.hi - f.lo for f in files)
    if len(nums) != n or len(ids) != ID_LEN * n:
        return None
    refs: list[ChunkRef] = []
    kinds, symbols = header["kinds"], header["symbols"]
    rows = nums.tolist()
    for f in files:
        for row in range(f.lo, f.hi):
            start, end, tokens, ordinal = rows[row]
            cid = ids[ID_LEN * row : ID_LEN * (row + 1)]
            refs.append(
                ChunkRef(cid, f.path, start, end, kinds[row], symbols[row], tokens, f.key, ordinal)
            )
    shape = (n, len(terms))
    try:
        text = csr_matrix(mats["text"], shape=shape)
        path = csr_matrix(mats["path"], shape=shape)
    except ValueError:
        return None
    return Counts(params, files, terms, text, path, refs)
