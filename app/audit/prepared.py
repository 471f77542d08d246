"""An audit line made ready before its place in the chain is known: its fields as plain
JSON values, and its canonical text in five pieces between which the chain's own fields
(``hash``, ``prev_hash``, ``seq``, ``ts``) go once the tail is read.

The text is what :func:`app.audit.canonical.canonical_json` gives for the whole line
(sorted keys, no spaces): the top-level keys are fixed (:class:`AuditLine` forbids any
other), and sorted they run ``detail, from, [hash], kind, policy_version, [prev_hash],
provenance, reason_codes, role, run, [seq], session, to, [ts], values``. Building it here,
outside the transaction, keeps an append's write short; the quick way
(:func:`prepare`) turns the values into JSON with the C encoder in one pass, where
:func:`~app.audit.canonical.jsonable` walks them in Python, and is taken only when its
result is exactly the slow way's (:func:`prepare_plain` over ``redact(jsonable(..))``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from json.encoder import encode_basestring
from typing import Any, cast

from pydantic import BaseModel

from app.audit.types import AuditLine

_SCALARS_A = ("detail", "from")
_SCALARS_B = ("kind", "policy_version")
_SCALARS_C = ("role", "run")
_SCALARS_D = ("session", "to")


class NotPlain(Exception):
    """Internal: a value the quick way cannot spell as the slow way does."""


def _default(obj: Any) -> Any:
    """What ``jsonable`` makes of a value JSON has no spelling for (the encoder then
    encodes the result, as ``jsonable`` recurses into it)."""
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=repr)
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    return str(obj)


_ENCODE = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_default
).encode

# The C encoder ``_ENCODE`` builds on every call, built once: the same text without
# json.encoder's Python wrappers (an append encodes three values). Without the markers
# a circular value is a RecursionError rather than a ValueError: either takes the slow way.
_MAKE_ENCODER: Any = getattr(json.encoder, "c_make_encoder", None)
_C_ENCODE: Any = (
    None
    if _MAKE_ENCODER is None
    else _MAKE_ENCODER(None, _default, encode_basestring, None, ":", ",", True, False, False)
)


def _encode(value: Any) -> str:
    if _C_ENCODE is None:  # an interpreter without json's C encoder
        return _ENCODE(value)
    return "".join(_C_ENCODE(value, 0))


def _sorted_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads`` hook: every object's keys in sorted order, as canonical JSON has them.

    The encoder sorts keys as they were (numbers as numbers); a key that was not a string
    can come out of order, and then only the slow way spells the line right.
    """
    keys = [k for k, _ in pairs]
    if keys != sorted(keys):
        raise NotPlain
    return dict(pairs)


_DECODE = json.JSONDecoder(object_pairs_hook=_sorted_pairs).decode
# The decoder's scanner itself: the texts decoded here are this module's encoder's, with
# no whitespace around them, so decode()'s two whitespace matches are not needed.
_SCAN: Callable[[str, int], tuple[Any, int]] = cast(
    Any, json.JSONDecoder(object_pairs_hook=_sorted_pairs)
).scan_once


def _plain(text: str) -> Any:
    return _DECODE(text)


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if type(value) is str:
        return encode_basestring(value)
    return _ENCODE(value)


class PreparedLine:
    """``fields`` (plain JSON values) and their canonical text, without the chain's fields."""

    __slots__ = ("_a", "_b", "_c", "_d", "_e", "fields")

    def __init__(self, fields: dict[str, Any], parts: tuple[str, str, str, str, str]) -> None:
        self.fields = fields
        self._a, self._b, self._c, self._d, self._e = parts

    def chain(self, seq: int, prev_hash: str, ts: str) -> tuple[AuditLine, str]:
        """Line ``seq`` after ``prev_hash``: the validated line and its canonical text
        (what is stored, exported and verified), hashed once."""
        prev = f'"prev_hash":{encode_basestring(prev_hash)},'
        tail = f'{self._c}"seq":{int(seq)},{self._d}"ts":{encode_basestring(ts)},{self._e}'
        digest = hashlib.sha256(f"{self._a}{self._b}{prev}{tail}".encode()).hexdigest()
        body = {**self.fields, "seq": seq, "ts": ts, "prev_hash": prev_hash, "hash": digest}
        line = AuditLine.model_validate(body)
        return line, f'{self._a}"hash":"{digest}",{self._b}{prev}{tail}'


def _parts(
    scalars: Mapping[str, str], provenance: str, reason_codes: str, values: str
) -> tuple[str, str, str, str, str]:
    s = scalars
    return (
        f'{{"detail":{s["detail"]},"from":{s["from"]},',
        f'"kind":{s["kind"]},"policy_version":{s["policy_version"]},',
        f'"provenance":{provenance},"reason_codes":{reason_codes},'
        f'"role":{s["role"]},"run":{s["run"]},',
        f'"session":{s["session"]},"to":{s["to"]},',
        f'"values":{values}}}',
    )


_ALL_SCALARS = (*_SCALARS_A, *_SCALARS_B, *_SCALARS_C, *_SCALARS_D)


def prepare_plain(fields: dict[str, Any]) -> PreparedLine:
    """The pieces of ``fields`` already made plain (``redact(jsonable(raw))``)."""
    scalars = {k: _scalar(fields[k]) for k in _ALL_SCALARS}
    parts = _parts(
        scalars,
        _ENCODE(fields["provenance"]),
        _ENCODE(fields["reason_codes"]),
        _ENCODE(fields["values"]),
    )
    return PreparedLine(fields, parts)


def prepare(raw: dict[str, Any]) -> tuple[PreparedLine, str, bytes] | None:
    """The quick way: ``raw`` (a line's fields as given) turned into plain values and text
    with the C encoder; with the fields' canonical text and its UTF-8 (for the redaction
    look). None when only the slow way spells it exactly (a NaN, a lone surrogate, a key
    that is not a string).
    """
    try:
        scalars = {k: _scalar(raw[k]) for k in _ALL_SCALARS}
        provenance = _encode(raw["provenance"])
        reason_codes = _encode(raw["reason_codes"])
        values = _encode(raw["values"])
        parts = _parts(scalars, provenance, reason_codes, values)
        text = "".join(parts)
        data = text.encode("utf-8")
        fields = {
            k: (v if v is None or type(v) is str else _plain(scalars[k]))
            for k in _ALL_SCALARS
            for v in (raw[k],)
        }
        # The three values back as plain JSON, in one scan.
        fields["provenance"], fields["reason_codes"], fields["values"] = _SCAN(
            f"[{provenance},{reason_codes},{values}]", 0
        )[0]
    # UnicodeEncodeError is a ValueError; StopIteration: a text the scanner cannot read
    except (TypeError, ValueError, RecursionError, StopIteration, NotPlain):
        return None
    return PreparedLine(fields, parts), text, data
