"""The pure half of the audit chain: canonical JSON, line hashes and chain verification.

Nothing here touches SQLite, so an exported ``audit.jsonl`` (an evidence bundle's) is
verified by exactly the code that verifies the database.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from json.encoder import encode_basestring
from typing import Any

from pydantic import BaseModel, ValidationError

from app.audit.prepared import prepare_plain
from app.audit.types import AuditLine
from app.compact_json import encoder

GENESIS_HASH = "0" * 64


def canonical_json(obj: Any) -> str:
    """One spelling per value, so a hash computed anywhere matches (sorted keys, no spaces)."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


#: :func:`canonical_json`'s text, by orjson where it spells exactly that (app.compact_json):
#: a line read back is written again with it to check that the text is its data's
#: (3.7 µs a line, against 8.3 for ``canonical_json``)
_CANONICAL = encoder(sort_keys=True, allow_nan=False)


def line_hash(fields: Mapping[str, Any]) -> str:
    """sha256 over the canonical JSON of every field but ``hash``."""
    body = {k: v for k, v in fields.items() if k != "hash"}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def chain_line(
    fields: Mapping[str, Any], seq: int, prev_hash: str, ts: str
) -> tuple[AuditLine, str]:
    """Line ``seq`` after ``prev_hash``: the validated line and its canonical text (what
    is stored, exported and verified), hashed once. ``fields``: plain JSON values."""
    appended = prepare_plain(dict(fields)).chain(seq, prev_hash, ts)
    return appended.line, appended.text


def jsonable(obj: Any) -> Any:
    """Turn ``obj`` into plain JSON values that survive a dump/load round trip unchanged.

    A hash is only re-checkable if reading the stored text back gives the same canonical
    form, so tuples become lists, keys become strings, and odd values become their str.
    """
    if obj is None or isinstance(obj, bool | int):
        return obj
    if isinstance(obj, str):
        return _valid_utf8(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, Mapping):
        return {_key(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        items = sorted(obj, key=repr) if isinstance(obj, set | frozenset) else obj
        return [jsonable(v) for v in items]
    if isinstance(obj, BaseModel):
        return jsonable(obj.model_dump(mode="json"))
    if isinstance(obj, enum.Enum):
        # its value, as orjson writes one (app.compact_json); a str or int one is that
        # str or int above
        return jsonable(obj.value)
    return _valid_utf8(str(obj))


def _key(key: Any) -> str:
    # True, False and None as JSON spells them as keys, and a str subclass (a str enum's
    # member) as the string it is, so that the C encoder's quick way (app.audit.prepared)
    # writes the same line: str() of such a member is "Colour.RED" on Python 3.11.
    # Anything else as its str.
    if key is None or isinstance(key, bool):
        return json.dumps(key)
    if isinstance(key, str):
        return _valid_utf8(str.__str__(key))
    return _valid_utf8(str(key))


def _valid_utf8(s: str) -> str:
    # Lone surrogates cannot be stored as UTF-8; replace them rather than lose the line.
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return s.encode("utf-8", "replace").decode("utf-8")
    return s


class VerifyReport(BaseModel):
    """The result of checking a chain. ``first_bad_seq`` is the first seq that fails."""

    ok: bool
    lines_checked: int = 0
    first_bad_seq: int | None = None
    problem: str | None = None
    head_hash: str | None = None  # hash of the last good line; anchors the chain elsewhere


class Problem(Exception):
    """Internal: one verification failure (seq may be unknown for unparsable input)."""

    def __init__(self, seq: int | None, problem: str) -> None:
        super().__init__(problem)
        self.seq = seq
        self.problem = problem


class ChainChecker:
    """Feeds lines in order and raises :class:`Problem` at the first one that fails.

    ``chain=True``: the lines are the whole chain from seq 1: contiguous seqs, each
    ``prev_hash`` equal to the previous line's hash. ``chain=False``: a filtered export
    (a sub-sequence): each line's own hash, strictly increasing seqs, and ``prev_hash``
    wherever two neighbours happen to be consecutive.
    """

    def __init__(self, *, chain: bool = True, start: int = 1) -> None:
        self.chain = chain
        self.count = 0
        #: ``start`` > 1: the chain from that line on (a range read to the head); that
        #: line's own hash is checked, its link to the line before it is not
        self.last_seq = start - 1
        self.last_hash: str | None = None

    def feed(self, raw: str | Mapping[str, Any], *, where: str = "") -> dict[str, Any]:
        expected = self.last_seq + 1
        data = _parse(raw, seq_hint=expected if self.chain else None, where=where)
        seq = data["seq"]
        if self.chain and seq != expected:
            raise Problem(
                expected,
                f"expected line {expected} but found line {seq} (a line was removed or reordered)",
            )
        if not self.chain and seq <= self.last_seq:
            raise Problem(seq, f"line {seq} follows line {self.last_seq} (lines reordered)")
        if _hash_of(raw, data) != data["hash"]:
            raise Problem(seq, f"line {seq} does not match its hash (the line was edited)")
        prev = GENESIS_HASH if seq == 1 else self.last_hash
        linked = self.chain or seq == expected
        if linked and prev is not None and data["prev_hash"] != prev:
            raise Problem(
                seq,
                f"line {seq} does not link to line {seq - 1} (prev_hash mismatch: a line was "
                "edited, replaced or reordered)",
            )
        self.count += 1
        self.last_seq = seq
        self.last_hash = data["hash"]
        return data

    def finish(self, head_hash: str | None, head_seq: int | None = None) -> None:
        """Check the end against an anchor kept elsewhere (catches lines cut off the end)."""
        last = self.last_seq
        if head_seq is not None and head_seq > last:
            raise Problem(last + 1, f"lines {last + 1}–{head_seq} were cut off the end")
        if head_seq is not None and head_seq < last:
            raise Problem(head_seq + 1, f"lines {head_seq + 1}–{last} lie beyond the recorded head")
        if head_hash is not None and head_hash != self.last_hash:
            raise Problem(
                max(last, 1),
                f"line {last} is not the recorded chain head (it was replaced"
                + (")" if head_seq is not None else ", or lines after it were cut off)"),
            )

    def report(self, problem: Problem | None = None) -> VerifyReport:
        if problem is None:
            return VerifyReport(ok=True, lines_checked=self.count, head_hash=self.last_hash)
        return VerifyReport(
            ok=False,
            lines_checked=self.count,
            first_bad_seq=problem.seq,
            problem=problem.problem,
            head_hash=self.last_hash,
        )


def _hash_of(raw: str | Mapping[str, Any], data: dict[str, Any]) -> str:
    """The hash of a line's data (every field but ``hash``), from its text when it has
    one: a text must be exactly the canonical JSON of the data read from it. JSON readers
    differ on a key given twice (Python's keeps the last, others the first), and a human
    reads the text: a line whose text says more or otherwise than its data, with whitespace
    added, keys reordered or a field given twice, was edited even if its data still hashes.
    """
    if not isinstance(raw, str):  # a dict handed in: no text to hold to
        return line_hash(data)
    seq = data["seq"]
    try:
        text = _CANONICAL(data)
    except (ValueError, RecursionError):  # (a number read as an infinity: 1e999)
        text = None
    if text != raw:
        raise Problem(seq, f"line {seq} is not in canonical form (the line was edited)")
    # The canonical text without the hash's own field is the text hashed: sorted keys put
    # it after ``detail`` and ``from`` only (AuditLine forbids any other key), whose values
    # are JSON strings or null, in which a quote is escaped; so its first spelling is that
    # field, and ``kind`` (required) follows it. (Spares a second encoding: 9.6 µs a line.)
    field = f'"hash":{encode_basestring(data["hash"])},'
    at = raw.find(field)
    if at < 0:  # (cannot be, for a validated line: hashed the long way all the same)
        return line_hash(data)
    body = raw[:at] + raw[at + len(field) :]
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def _parse(raw: str | Mapping[str, Any], *, seq_hint: int | None, where: str) -> dict[str, Any]:
    if not isinstance(raw, str | Mapping):  # a line stored as bytes or a number
        raise Problem(seq_hint, f"{where or 'a line'} is not stored as text (it was edited)")
    try:
        data = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except (ValueError, RecursionError):  # (nested past the parser's depth: tampered)
        raise Problem(seq_hint, f"{where or 'a line'} is not valid JSON") from None
    if not isinstance(data, dict):
        raise Problem(seq_hint, f"{where or 'a line'} is not a JSON object")
    try:
        AuditLine.model_validate(data, strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        seq = data.get("seq") if isinstance(data.get("seq"), int) else seq_hint
        raise Problem(seq, f"line {seq} is malformed ({loc}: {first['msg']})") from None
    return data


def check_row(
    checker: ChainChecker,
    seq: int,
    ts: str,
    hash_: str,
    session: str,
    run: str | None,
    kind: str,
    text: str,
) -> None:
    """Feed one stored line to ``checker`` with its index columns: seqs contiguous, and
    the columns (what queries filter and order on, ``ts`` among them: the team's tail
    pages by it) equal to the hashed text."""
    expected = checker.last_seq + 1
    if seq != expected:
        missing = f"{expected}" if seq == expected + 1 else f"{expected}–{seq - 1}"
        raise Problem(expected, f"line {missing} is missing (the chain jumps to {seq})")
    data = checker.feed(text, where=f"line {seq}")
    columns = (ts, hash_, session, run, kind)
    if columns != (data["ts"], data["hash"], data["session"], data["run"], data["kind"]):
        raise Problem(seq, f"the index columns of line {seq} do not match its text")


def verify_lines(
    lines: Iterable[str | Mapping[str, Any]],
    *,
    chain: bool = True,
    head_hash: str | None = None,
    head_seq: int | None = None,
) -> VerifyReport:
    """Verify exported lines (JSON text or dicts). Blank text lines are skipped; any other
    text must be exactly the canonical JSON of what it holds (no space added, no key
    given twice), as the log wrote it.

    ``chain=True`` for a full export (the whole chain from seq 1); ``chain=False`` for an
    export filtered by session or run. Give ``head_hash`` (and ``head_seq``), e.g. from an
    evidence manifest, to also catch lines cut off the end, which no chain can detect alone.
    """
    checker = ChainChecker(chain=chain)
    try:
        for n, raw in enumerate(lines, start=1):
            if isinstance(raw, str) and not raw.strip():
                continue
            checker.feed(raw, where=f"input line {n}")
        checker.finish(head_hash, head_seq)
    except Problem as problem:
        return checker.report(problem)
    return checker.report()
