"""One index build: scan → cached analysis of new contents → assembled matrix.

A content already in the cache is not read, chunked or tokenized again, whatever path
or commit it appears under. What was read and what was tokenized is reported, so
tests (and the progress display) can see that an edit re-indexes one file only.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from app.errors import SwitchyardError
from app.stage0.cache import BlobData, Stage0Cache
from app.stage0.chunker import CHUNKER_VERSION, chunk_mode
from app.stage0.corpus import Progress, Scan
from app.stage0.index import DEFAULT_WEIGHTING, FEATURES_VERSION, Index, analyze, blob_key
from app.stage0.snapshot import Counts, Listed, empty, merge
from app.stage0.tokenize import TOKENIZER_VERSION

#: Reads contents the scan did not (given as (path, blob id)); returns them by blob id and
#: leaves out any it cannot read or whose content no longer has that id.
Reader = Callable[[list[tuple[str, str]]], dict[str, bytes]]

#: Analyzed contents are written to the cache in batches of this many.
_BATCH = 256


@dataclass
class BuildReport:
    files: int = 0  # files indexed (text files with at least one chunk or empty)
    chunks: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    read: list[str] = field(default_factory=list)  # paths read from disk or git
    tokenized: list[str] = field(default_factory=list)  # paths chunked + tokenized
    corpus_hash: str = ""
    keys: set[str] = field(default_factory=set)  # cache keys of every listed content
    #: listed but not indexed: unreadable now, or changed since its stat was taken
    unread: list[str] = field(default_factory=list)


def build_index(
    scan: Scan,
    cache: Stage0Cache,
    *,
    chunk_lines: int,
    overlap: int,
    reader: Reader | None = None,
    weighting: str = DEFAULT_WEIGHTING,
    progress: Progress | None = None,
) -> tuple[Index, BuildReport]:
    report = BuildReport(skipped=Counter(scan.skipped), read=list(scan.read))
    keyed = sorted(
        (e.path, e.blob, blob_key(e.blob, chunk_mode(e.path), chunk_lines, overlap))
        for e in scan.entries
    )
    report.keys = {k for _, _, k in keyed}
    params = f"{chunk_lines}:{overlap}:c{CHUNKER_VERSION}t{TOKENIZER_VERSION}{FEATURES_VERSION}"
    prev = last_counts(cache, params) or empty(params)
    known = prev.by_file()
    have = cache.get(k for p, _, k in keyed if (p, k) not in known)
    todo: dict[str, tuple[str, str]] = {}  # key -> (first path, blob)
    for path, blob, key in keyed:
        if (path, key) not in known and key not in have and key not in todo:
            todo[key] = (path, blob)
    if todo:
        # A content the scan did not read (its stat matched) but the cache lacks: new
        # chunker settings, or pruned. Read it now.
        wanted = [(p, b) for p, b in todo.values() if b not in scan.contents]
        contents = dict(scan.contents)
        if wanted:
            if reader is None:
                raise RuntimeError("contents missing from the scan and no reader given")
            got = reader(wanted)
            contents.update(got)
            report.read.extend(p for p, b in wanted if b in got)
        batch: dict[str, tuple[BlobData, list[str]]] = {}
        total = len(todo)
        for i, (key, (path, blob)) in enumerate(sorted(todo.items(), key=lambda kv: kv[1])):
            if progress is not None and i % 32 == 0:
                progress("index", i, total)
            raw = contents.get(blob)
            if raw is None:
                report.unread.append(path)
                continue
            batch[key] = analyze(raw, chunk_mode(path), chunk_lines, overlap)
            have[key] = batch[key][0]
            report.tokenized.append(path)
            if len(batch) >= _BATCH:
                cache.put(batch)
                batch = {}
        if batch:
            cache.put(batch)
        if progress is not None:
            progress("index", total, total)
    listed: list[Listed] = []
    digest = hashlib.sha1(f"{weighting}\0{chunk_lines}\0{overlap}\n".encode())
    for path, _, key in keyed:
        row = known.get((path, key))
        data = have.get(key) if row is None else None
        if row is None and data is None:
            report.skipped["unreadable"] += 1
            continue
        listed.append(Listed(path, key, row, data))
        if row.binary if row is not None else data.binary:  # type: ignore[union-attr]
            report.skipped["binary"] += 1
            continue
        report.files += 1
        digest.update(f"{path}\0{key}\n".encode("utf-8", "surrogateescape"))
    unchanged = all(x.prev is not None for x in listed) and len(listed) == len(prev.files)
    counts = prev if unchanged else merge(prev, listed, params)
    if not unchanged:
        keep_counts(cache, counts)
    index = Index(counts.refs, counts.terms, counts.text, counts.path, weighting)
    report.chunks = len(index)
    report.corpus_hash = digest.hexdigest()[:16]
    report.read.sort()
    report.tokenized.sort()
    return index, report


def last_counts(cache: Stage0Cache, params: str) -> Counts | None:
    """The last build's counts: in memory, else from ``index.npz`` beside the cache."""
    from app.stage0 import snapshot

    hit = cache.snapshot
    if isinstance(hit, Counts) and hit.params == params:
        return hit
    if cache.snapshot_file is None:
        return None
    loaded = snapshot.load(cache.snapshot_file, params)
    cache.snapshot = loaded
    return loaded


def keep_counts(cache: Stage0Cache, counts: Counts) -> None:
    from app.stage0 import snapshot

    cache.snapshot = counts
    if cache.snapshot_file is not None:
        snapshot.save(counts, cache.snapshot_file)


class CacheDropped(SwitchyardError):
    """Chunk texts this index names are gone from the cache: another Switchyard, with
    other secrets in its environment (so other masking), emptied it after this one built
    its index (it was a KeyError traceback)."""


def load_texts(cache: Stage0Cache, index: Index, rows: list[int]) -> dict[int, str]:
    """Texts of some chunks, by row. Raises :class:`CacheDropped` when some are gone."""
    refs = index.refs
    texts = cache.chunk_texts((refs[r].key, refs[r].ordinal) for r in rows)
    missing = [r for r in rows if (refs[r].key, refs[r].ordinal) not in texts]
    if missing:
        raise CacheDropped(
            f"the Stage0 cache was emptied while this index was in use ({len(missing)} "
            "chunk texts gone): another Switchyard with other secrets in its environment "
            "rebuilt it; run again"
        )
    return {r: texts[refs[r].key, refs[r].ordinal] for r in rows}
