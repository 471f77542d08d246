"""The on-disk cache: per-content chunks and term counts, and the last scan's stats.

One SQLite file, ``REPO/.switchyard/stage0/cache.sqlite``:

- ``blob``: for each (content, chunker settings) key, the chunks' line ranges, kinds and
  symbols, their term counts (a local vocabulary plus CSR arrays) and, apart, their
  texts (each chunk's compressed on its own, so a query reads back only the chunks it
  picked). Keys hash the content, never the path, so a file that moves, or comes back in
  an older commit, is not tokenized again.
- ``stat``: size, mtime, ctime, inode and blob id of every working-tree file at the last
  scan, so an unchanged file is not even read.

Beside it, ``index.npz`` keeps the last build's assembled counts (see
:mod:`app.stage0.snapshot`).

Nothing here is pickled: a repository that ships a ``.switchyard`` directory cannot run
code through it. A cache that cannot be read is deleted and rebuilt: it is derived data.

Texts are masked before they are analyzed (:func:`app.stage0.index.analyze`), so neither
the texts nor the vocabulary hold a secret. What is masked depends on the environment
(the values of key variables) and on the patterns' version: the cache records their
fingerprint (:func:`app.audit.masking.masking_fingerprint`) and, when it changes, drops
every analyzed content and the snapshot, so no text masked under other rules survives.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.audit.masking import masking_fingerprint
from app.stage0.corpus import StatRow

if TYPE_CHECKING:
    import numpy as np

#: Bumped when a table's layout changes (2: each chunk's text compressed on its own); a
#: cache of another version is emptied and rebuilt.
SCHEMA_VERSION = "2"
#: the most of the cache file read through a memory map (a large repository's is ~50 MB)
MMAP_BYTES = 256 * 2**20


@dataclass(frozen=True, slots=True)
class PieceMeta:
    start: int
    end: int
    kind: str
    symbol: str | None
    tokens: int  # estimated LLM tokens of the text (app.tokens.count_text)
    digest: str  # sha1 of the text: chunk ids are made from it


@dataclass(frozen=True, slots=True)
class BlobData:
    """What one file's content gives, independent of its path."""

    binary: bool
    pieces: tuple[PieceMeta, ...]
    terms: tuple[str, ...]  # sorted local vocabulary
    indptr: np.ndarray  # int32, len(pieces) + 1
    indices: np.ndarray  # int32 positions in ``terms``, sorted within each piece
    counts: np.ndarray  # int32 term counts


class Stage0Cache:
    """Blob and stat tables in one SQLite file (``path=None``: in memory only)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._mem: dict[str, BlobData] = {}
        self._db = self._open()
        #: the last build's assembled counts (app.stage0.snapshot.Counts), and its file
        self.snapshot: Any = None
        self.snapshot_file = path.with_name("index.npz") if path is not None else None
        self.check_masking()

    def _open(self) -> sqlite3.Connection:
        if self.path is None:
            return self._init(sqlite3.connect(":memory:"))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return self._init(sqlite3.connect(self.path, timeout=30))
        except sqlite3.DatabaseError:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            return self._init(sqlite3.connect(self.path, timeout=30))

    @staticmethod
    def _init(db: sqlite3.Connection) -> sqlite3.Connection:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # a dropped content is overwritten, not left in a free page (see check_masking)
        db.execute("PRAGMA secure_delete=ON")
        # Reads through a memory map: a query's texts sit behind each content's arrays in
        # overflow pages, one read() each without it (−30 % of a query's text loading).
        # SQLite remaps when the file changes size, so other connections are safe.
        db.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
        db.executescript(
            """
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS stat (
                path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER,
                ino INTEGER, blob TEXT, racy INTEGER);
            CREATE TABLE IF NOT EXISTS blob (
                key TEXT PRIMARY KEY, meta TEXT NOT NULL, arrays BLOB NOT NULL,
                texts BLOB NOT NULL);
            """
        )
        row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is None or row[0] != SCHEMA_VERSION:
            with db:
                db.execute("DELETE FROM stat")
                db.execute("DELETE FROM blob")
                # and the snapshot of counts, which names contents no longer here: forgetting
                # the masking fingerprint has check_masking delete it
                db.execute("DELETE FROM meta WHERE key = 'masking'")
                db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        return db

    def check_masking(self) -> None:
        """Drop what was analyzed under other masking rules (see the module's doc)."""
        now = masking_fingerprint()
        row = self._db.execute("SELECT value FROM meta WHERE key = 'masking'").fetchone()
        if row is not None and row[0] == now:
            return
        with self._db:
            self._db.execute("DELETE FROM stat")
            self._db.execute("DELETE FROM blob")
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('masking', ?)", (now,))
        # what this process holds of the dropped contents goes too, or a build would
        # reuse it and never store the texts again
        self._mem.clear()
        self.snapshot = None
        if self.snapshot_file is not None:
            self.snapshot_file.unlink(missing_ok=True)

    def close(self) -> None:
        self._db.close()

    def reset(self) -> None:
        """Start again from nothing: the file's pages could not be read (a crash, a full
        disk). It is derived data; every Stage0 command crashed on it until it was
        deleted by hand."""
        self._db.close()
        self._mem.clear()
        self.snapshot = None
        with contextlib.suppress(OSError):  # a read-only folder: _open says what is wrong
            if self.path is not None:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            if self.snapshot_file is not None:
                self.snapshot_file.unlink(missing_ok=True)
        self._db = self._open()
        self.check_masking()

    # ── stat ──────────────────────────────────────────────────────────────────────────
    def stats(self) -> dict[str, StatRow]:
        rows = self._db.execute("SELECT path, size, mtime_ns, ctime_ns, ino, blob, racy FROM stat")
        return {r[0]: StatRow(r[1], r[2], r[3], r[4], r[5], bool(r[6])) for r in rows}

    def update_stats(self, changed: dict[str, StatRow], present: Iterable[str]) -> None:
        keep = set(present)
        with self._db:
            gone = [(p,) for (p,) in self._db.execute("SELECT path FROM stat") if p not in keep]
            self._db.executemany("DELETE FROM stat WHERE path = ?", gone)
            self._db.executemany(
                "INSERT OR REPLACE INTO stat VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (p, s.size, s.mtime_ns, s.ctime_ns, s.ino, s.blob, int(s.racy))
                    for p, s in sorted(changed.items())
                ],
            )

    # ── blobs ─────────────────────────────────────────────────────────────────────────
    def get(self, keys: Iterable[str]) -> dict[str, BlobData]:
        import numpy as np

        found: dict[str, BlobData] = {}
        todo = []
        for key in keys:
            hit = self._mem.get(key)
            if hit is not None:
                found[key] = hit
            else:
                todo.append(key)
        for i in range(0, len(todo), 500):
            part = todo[i : i + 500]
            marks = ",".join("?" * len(part))
            sql = f"SELECT key, meta, arrays FROM blob WHERE key IN ({marks})"
            for key, meta_json, arrays in self._db.execute(sql, part):
                meta: dict[str, Any] = json.loads(meta_json)
                n_p, n_nz = len(meta["pieces"]), meta["nnz"]
                flat = np.frombuffer(arrays, dtype="<i4")
                data = BlobData(
                    binary=meta["binary"],
                    pieces=tuple(PieceMeta(*p) for p in meta["pieces"]),
                    terms=tuple(meta["terms"]),
                    indptr=flat[: n_p + 1],
                    indices=flat[n_p + 1 : n_p + 1 + n_nz],
                    counts=flat[n_p + 1 + n_nz :],
                )
                self._mem[key] = data
                found[key] = data
        return found

    def put(self, items: dict[str, tuple[BlobData, list[str]]]) -> None:
        import numpy as np

        rows = []
        for key, (data, texts) in sorted(items.items()):
            self._mem[key] = data
            meta = {
                "binary": data.binary,
                "pieces": [
                    [p.start, p.end, p.kind, p.symbol, p.tokens, p.digest] for p in data.pieces
                ],
                "terms": list(data.terms),
                "nnz": len(data.indices),
            }
            flat = np.concatenate([data.indptr, data.indices, data.counts]).astype("<i4")
            packed = pack_texts(texts)
            rows.append((key, json.dumps(meta, ensure_ascii=False), flat.tobytes(), packed))
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO blob VALUES (?, ?, ?, ?)", rows)

    def prune(self, live: Iterable[str], *, slack: float = 1.0) -> int:
        """Delete contents no current file has, once they outnumber the live ones by
        ``slack`` (so switching branches back and forth stays cheap). Returns how many."""
        keep = set(live)
        (total,) = self._db.execute("SELECT COUNT(*) FROM blob").fetchone()
        if total - len(keep) <= slack * max(len(keep), 1):
            return 0
        dead = [(k,) for (k,) in self._db.execute("SELECT key FROM blob") if k not in keep]
        with self._db:
            self._db.executemany("DELETE FROM blob WHERE key = ?", dead)
        for (key,) in dead:
            self._mem.pop(key, None)
        return len(dead)

    def texts(self, keys: Iterable[str]) -> dict[str, list[str]]:
        """Every chunk's text of each content."""
        return {key: unpack_texts(packed) for key, packed in self._packed(keys)}

    def chunk_texts(self, wanted: Iterable[tuple[str, int]]) -> dict[tuple[str, int], str]:
        """The texts of some chunks, ``(content key, ordinal)``: only those are unpacked."""
        by_key: dict[str, list[int]] = {}
        for key, ordinal in wanted:
            by_key.setdefault(key, []).append(ordinal)
        out: dict[tuple[str, int], str] = {}
        for key, packed in self._packed(by_key):
            for ordinal in by_key[key]:
                out[key, ordinal] = unpack_text(packed, ordinal)
        return out

    def _packed(self, keys: Iterable[str]) -> Iterable[tuple[str, bytes]]:
        todo = sorted(set(keys))
        for i in range(0, len(todo), 500):
            part = todo[i : i + 500]
            marks = ",".join("?" * len(part))
            sql = f"SELECT key, texts FROM blob WHERE key IN ({marks})"
            yield from self._db.execute(sql, part)


# A content's texts: the number of chunks n, n + 1 offsets (little-endian uint32) and each
# chunk's UTF-8 text compressed on its own, so one chunk is read without the others.
_COUNT = struct.Struct("<I")


def pack_texts(texts: list[str]) -> bytes:
    frames = [zlib.compress(t.encode("utf-8"), 1) for t in texts]
    offsets = [0]
    for frame in frames:
        offsets.append(offsets[-1] + len(frame))
    head = struct.pack(f"<{len(offsets) + 1}I", len(texts), *offsets)
    return head + b"".join(frames)


def _frame(packed: bytes, ordinal: int) -> bytes:
    (n,) = _COUNT.unpack_from(packed, 0)
    if not 0 <= ordinal < n:
        raise IndexError(ordinal)
    lo, hi = struct.unpack_from("<2I", packed, 4 + 4 * ordinal)
    base = 4 * (n + 2)
    return packed[base + lo : base + hi]


def unpack_text(packed: bytes, ordinal: int) -> str:
    """One chunk's text from :func:`pack_texts`'s bytes."""
    return zlib.decompress(_frame(packed, ordinal)).decode("utf-8")


def unpack_texts(packed: bytes) -> list[str]:
    (n,) = _COUNT.unpack_from(packed, 0)
    return [unpack_text(packed, i) for i in range(n)]
