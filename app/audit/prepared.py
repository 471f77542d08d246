"""An audit line made ready before its place in the chain is known: its canonical text in
five pieces between which the chain's own fields (``hash``, ``prev_hash``, ``seq``,
``ts``) go once the tail is read. The line itself is read from the finished text when it
is asked for (:class:`~app.audit.types.Appended`).

The text is what :func:`app.audit.canonical.canonical_json` gives for the whole line
(sorted keys, no spaces): the top-level keys are fixed (:class:`AuditLine` forbids any
other), and sorted they run ``detail, from, [hash], kind, policy_version, [prev_hash],
provenance, reason_codes, role, run, [seq], session, to, [ts], values``. Building it here,
outside the transaction, keeps an append's write short; the quick way
(:func:`prepare`) turns the values into JSON in one pass (orjson, or json's C encoder where
orjson would spell them otherwise: :mod:`app.compact_json`), where
:func:`~app.audit.canonical.jsonable` walks them in Python, and is taken only when its
result is exactly the slow way's (:func:`prepare_plain` over ``redact(jsonable(..))``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from json.encoder import encode_basestring
from typing import Any

from pydantic import BaseModel

from app.audit.types import Appended, read_line
from app.compact_json import REFUSED, RESPELT, stdlib_encoder, told_encoder

_SCALARS_A = ("detail", "from")
_SCALARS_B = ("kind", "policy_version")
_SCALARS_C = ("role", "run")
_SCALARS_D = ("session", "to")


def _default(obj: Any) -> Any:
    """What ``jsonable`` makes of a value JSON has no spelling for (the encoder then
    encodes the result, as ``jsonable`` recurses into it; an ``Enum`` member and a
    ``UUID`` never come here: :mod:`app.compact_json` writes them as ``jsonable`` does)."""
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=repr)
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    return str(obj)


# Canonical JSON by json's C encoder, built once: the scalars, the slow way's values, and
# the reason codes (a short list of strings: quicker there than orjson with the checks its
# text needs, 0.3 µs against 0.7). A circular value is a RecursionError rather than a
# ValueError: either takes the slow way.
_ENCODE = stdlib_encoder(sort_keys=True, allow_nan=False, default=_default)
# The same text by orjson where it spells the same (app.compact_json), and how it was
# made: a text orjson wrote has string keys only (an append encodes two such values).
_encode_told = told_encoder(sort_keys=True, allow_nan=False, default=_default)


# A key the encoder wrote from a number, a bool or None: it sorts those as they were
# (10 after 9), where canonical JSON sorts their text ("10" before "9"), so only the slow
# way orders them right. A string followed by a colon is a key (a value is followed by a
# comma or a bracket); a string key spelled like one, or an escaped quote inside a value
# followed by a colon, takes the slow way too, needlessly but rightly. (No `[{,]` before
# the quote: the quote first lets the regex engine skip to each one at C speed.)
_ODD_KEY = re.compile(r'"(?:-?[0-9][^"]*|-?Infinity|NaN|true|false|null)":')


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if type(value) is str:
        return encode_basestring(value)
    return _ENCODE(value)


# pydantic's JSON parser refuses a text nested deeper than this (its recursion limit is
# 200): a line with as many brackets in it is read before it is written, never after.
_BRACKETS = 100


def index_text(raw: str) -> str | None:
    """A JSON string (or null) of a line's index (:attr:`PreparedLine.index`), as its
    text spells it."""
    if raw == "null":
        return None
    if "\\" in raw:
        value = json.loads(raw)
        if not isinstance(value, str):
            raise ValueError(raw)
        return value
    return raw[1:-1]


class PreparedLine:
    """A line's canonical text without the chain's fields, in the five pieces they go
    between; its spool record's index columns (kind, session, run); and whether its
    fields are known to make a valid :class:`AuditLine` (``checked``: every scalar a
    ``str`` or None where the line allows it, values and provenance JSON objects, the
    reason codes a list of strings, and shallow enough for pydantic's parser)."""

    __slots__ = ("_a", "_b", "_c", "_d", "_e", "checked", "index")

    def __init__(
        self, parts: tuple[str, str, str, str, str], scalars: Mapping[str, str], checked: bool
    ) -> None:
        self._a, self._b, self._c, self._d, self._e = parts
        kind = scalars["kind"]
        kind = kind[1:-1] if kind[:1] == '"' and "\\" not in kind else kind
        #: ``kind\tsession\trun`` as app.audit.store's records spell them (JSON for the
        #: last two), from the scalars the text was made of
        self.index = f"{kind}\t{scalars['session']}\t{scalars['run']}"
        self.checked = checked

    @property
    def session(self) -> str:
        """The line's session, as its text has it (read from the index: the session's JSON
        string, written as the line's)."""
        return index_text(self.index.split("\t", 2)[1]) or ""

    def chain(self, seq: int, prev_hash: str, ts: str) -> Appended:
        """Line ``seq`` after ``prev_hash`` at ``ts``: its canonical text (what is stored,
        exported and verified), hashed once. A line not ``checked`` is read (validated)
        here, so that one which does not validate is never written; a checked one is read
        only when its :attr:`Appended.line` is asked for."""
        prev = f'"prev_hash":{encode_basestring(prev_hash)},'
        tail = f'{self._c}"seq":{int(seq)},{self._d}"ts":{encode_basestring(ts)},{self._e}'
        digest = hashlib.sha256(f"{self._a}{self._b}{prev}{tail}".encode()).hexdigest()
        text = f'{self._a}"hash":"{digest}",{self._b}{prev}{tail}'
        return Appended(seq, digest, text, None if self.checked else read_line(text))


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
#: the scalars AuditLine requires as strings (it allows None for the others)
_REQUIRED = frozenset(("detail", "kind", "session"))


def prepare_plain(fields: dict[str, Any]) -> PreparedLine:
    """The pieces of ``fields`` already made plain (``redact(jsonable(raw))``); the line
    is read when chained (the slow way is rare: its fields are not checked here)."""
    scalars = {k: _scalar(fields[k]) for k in _ALL_SCALARS}
    parts = _parts(
        scalars,
        _ENCODE(fields["provenance"]),
        _ENCODE(fields["reason_codes"]),
        _ENCODE(fields["values"]),
    )
    return PreparedLine(parts, scalars, checked=False)


def prepare(raw: dict[str, Any]) -> tuple[PreparedLine, str, bytes] | None:
    """The quick way: ``raw`` (a line's fields as given) turned into canonical text in one
    pass (:mod:`app.compact_json`); with that text and its UTF-8 (for the redaction look).
    None when only the slow way spells it exactly (a NaN, a lone surrogate, a key that is
    not exactly a string).
    """
    try:
        scalars: dict[str, str] = {}
        # whether every scalar has the type AuditLine asks (a str, or None where allowed)
        plain = True
        for key in _ALL_SCALARS:
            value = raw[key]
            if type(value) is str:
                scalars[key] = encode_basestring(value)
            elif value is None:
                scalars[key] = "null"
                plain = plain and key not in _REQUIRED
            else:
                scalars[key] = _ENCODE(value)
                plain = False
        provenance, p_made = _encode_told(raw["provenance"])
        values, v_made = _encode_told(raw["values"])
        # A value orjson refused may hold a key that is not exactly a str (a str subclass
        # that sorts otherwise than its text did reach the C encoder): the slow way. A
        # text orjson wrote has string keys only (1.5 µs a look spared).
        if p_made == REFUSED or v_made == REFUSED:
            return None
        if (p_made == RESPELT and _ODD_KEY.search(provenance)) or (
            v_made == RESPELT and _ODD_KEY.search(values)
        ):
            return None
        parts = _parts(scalars, provenance, _ENCODE(raw["reason_codes"]), values)
        text = "".join(parts)
        data = text.encode("utf-8")
    # UnicodeEncodeError is a ValueError
    except (TypeError, ValueError, RecursionError):
        return None
    # The line is vouched for without reading it back when its text is a valid line's:
    # the scalars' types, values and provenance JSON objects, the reason codes a list of
    # strings, and shallow enough for pydantic's parser.
    codes = raw["reason_codes"]
    checked = (
        plain
        and provenance[:1] == "{"
        and values[:1] == "{"
        and type(codes) is list
        and all(type(code) is str for code in codes)
        and text.count("{") + text.count("[") < _BRACKETS
    )
    return PreparedLine(parts, scalars, checked), text, data
