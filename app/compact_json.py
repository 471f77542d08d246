"""Compact JSON text, exactly as CPython's C encoder writes it, made by orjson where orjson
writes the same text (a leaf: the standard library and orjson only).

``json.dumps`` and ``JSONEncoder.encode`` build the C encoder again on every call, and go
through a few Python frames to reach it: about a microsecond each time, paid several
times a request on the router's path (audit values, ledger records, the input hash).
:func:`stdlib_encoder` builds it once. Even so, encoding is slow where it sorts keys and
spells floats (4.7 µs for the escalation line's values here, against orjson's 0.5), so
:func:`encoder` asks orjson first and keeps its text only where it is the C encoder's
(``tests/unit/test_compact_json.py`` holds the two to one text):

- orjson refuses what it cannot write as the C encoder would (a key that is not exactly a
  ``str``, an integer past 64 bits, a lone surrogate, nesting past 254 levels): the C
  encoder then writes it, or raises as it always did.
- orjson writes NaN and the infinities as ``null``: a text holding ``null`` is written
  again by the C encoder (which writes ``NaN``, or refuses it).
- orjson (3.11.7 on: before, ``1e16`` had no sign) spells a float below 1e-4 in decimals
  (``0.00001`` for ``1e-05``) and an exponent without Python's padding (``1e-7``): a text
  with a number in either form is written again. Brute force over two million doubles:
  every other float is spelled as ``repr``; and at import a few probes check it, so an
  orjson that spells floats otherwise is not used at all.
- A subclass of ``str``, ``int``, ``float``, ``list``, ``tuple`` or ``dict`` is handed to
  orjson's ``default`` here, which gives what the C encoder writes for it (the base
  type's value, read as the C encoder reads it); a ``datetime`` or a dataclass goes to
  the caller's ``default``, as with the C encoder.
- An ``Enum`` member is written as its value, and a ``UUID`` as its ``str``, on both ways
  (orjson cannot be told otherwise; the C encoder's ``default`` is given them so). One
  spelling still differs: a ``str`` or ``int`` Enum member whose value is not its own
  content (a custom ``__new__``), which the C encoder writes as its content. Both texts
  are canonical JSON of what they hold.
- An ``orjson.Fragment`` is written by orjson as the JSON it holds.
"""

from __future__ import annotations

import enum
import json
import re
import uuid
from collections.abc import Callable
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import Any

import orjson


def _refuse(obj: Any) -> Any:
    """``JSONEncoder.default``: a value JSON has no spelling for is an error."""
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _with_enums(default: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``default``, with an ``Enum`` member written as its value and a ``UUID`` as its
    ``str`` (what orjson writes of them, and cannot be told otherwise)."""

    def with_enums(obj: Any) -> Any:
        if isinstance(obj, enum.Enum):
            return obj.value
        if isinstance(obj, uuid.UUID):
            return str(obj)
        return default(obj)

    return with_enums


def stdlib_encoder(
    *,
    sort_keys: bool = False,
    ensure_ascii: bool = False,
    allow_nan: bool = True,
    default: Callable[[Any], Any] = _refuse,
) -> Callable[[Any], str]:
    """``lambda value: json.dumps(value, separators=(",", ":"), sort_keys=..., ...)``,
    without the per-call set-up, an ``Enum`` member that is not a ``str`` or an ``int``
    written as its value and a ``UUID`` as its ``str`` (a ``str`` or ``int`` one is
    written as the string or number it is). Without circular-reference markers: a value
    that holds itself is a RecursionError (``json.dumps`` says ValueError)."""
    default = _with_enums(default)
    make: Any = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # an interpreter without json's C encoder
        dumps = json.JSONEncoder(
            separators=(",", ":"),
            sort_keys=sort_keys,
            ensure_ascii=ensure_ascii,
            allow_nan=allow_nan,
            default=default,
        ).encode
        return dumps
    quote = encode_basestring_ascii if ensure_ascii else encode_basestring
    c_encode = make(None, default, quote, None, ":", ",", sort_keys, False, allow_nan)

    def encode(value: Any) -> str:
        return "".join(c_encode(value, 0))

    return encode


# A float orjson spells otherwise than ``float.__repr__``: with an exponent (both put a
# sign after the ``e``, orjson from 3.11.7; Python pads it to two digits, orjson does
# not), or below 1e-4 in decimals (``0.00001`` for ``1e-05``). Looked for with ``e``
# first, which the regex engine finds at C speed (0.4 µs over a line's values, where a
# regex that starts with a class of characters tries every byte: 2.5-8.7 µs); a string
# holding such a spelling ("5e-3", "0.0000") is written again too, needlessly but rightly.
_EXPONENT = re.compile(rb"e[-+](?<=[0-9]e[-+])")

#: what orjson leaves to the C encoder's ways (a subclass of a JSON type, a datetime, a
#: dataclass): it would write them where the C encoder refuses, or spell them otherwise
PASSTHROUGH = (
    orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
)


def _as_c_encoder_reads(obj: Any, default: Callable[[Any], Any]) -> Any:
    """What the C encoder writes a subclass of a JSON type as, as a plain value for orjson
    (its checks run in this order); anything else goes to ``default``."""
    if isinstance(obj, str):
        return str.__str__(obj)
    if isinstance(obj, int):  # (bool is never subclassed)
        return int.__int__(obj)
    if isinstance(obj, float):
        return float.__float__(obj)
    if isinstance(obj, list | tuple):
        return list(obj)  # (the C encoder iterates a subclass as it iterates)
    if isinstance(obj, dict):
        # The C encoder reads a dict subclass by its items(), each an exact pair, and
        # writes every one of them: a key given twice, or an item that is not a pair, is
        # left to it (raised here, so the C encoder writes it, or refuses it).
        items = list(obj.items())
        plain = dict(items)
        if len(plain) != len(items) or any(type(item) is not tuple for item in items):
            raise TypeError("a dict subclass whose items() the C encoder reads otherwise")
        return plain
    return default(obj)


#: floats orjson must spell as ``repr`` or in a form the checks catch (else it is not used)
_PROBES = (1e16, 1.2345678901234568e17, 1e22, 1e-5, 1.5e-7, 5e-324, 0.0001, 1e15, -0.0)


def _spells_floats_as_checked() -> bool:
    for f in _PROBES:
        data = orjson.dumps(f)
        if data != repr(f).encode() and b"0.0000" not in data and not _EXPONENT.search(data):
            return False
    return True


#: whether this orjson may be asked at all (an older one wrote ``1e16`` for ``1e+16``)
USABLE = _spells_floats_as_checked()


#: how :func:`told_encoder` made a text: orjson refused the value, or was not asked (an
#: orjson that is not :data:`USABLE`; any key may be in it: the audit's quick way then
#: steps aside, so every line takes the slow way, correct and slower), and the C encoder
#: wrote it; orjson took it but spells it otherwise and the C encoder wrote it; orjson
#: wrote it (every key in it is exactly a ``str``)
REFUSED, RESPELT, BY_ORJSON = 0, 1, 2


def told_encoder(
    *,
    sort_keys: bool = False,
    allow_nan: bool = True,
    default: Callable[[Any], Any] = _refuse,
) -> Callable[[Any], tuple[str, int]]:
    """:func:`encoder`, telling also how the text was made (:data:`REFUSED`,
    :data:`RESPELT`, :data:`BY_ORJSON`): the audit's quick way looks for keys that are
    not strings only in a text orjson did not write (app.audit.prepared)."""
    slow = stdlib_encoder(sort_keys=sort_keys, allow_nan=allow_nan, default=default)
    if not USABLE:
        return lambda value: (slow(value), REFUSED)
    plain = _with_enums(default)
    options = PASSTHROUGH | (orjson.OPT_SORT_KEYS if sort_keys else 0)
    dumps = orjson.dumps
    exponent = _EXPONENT.search

    def fallback(obj: Any) -> Any:
        return _as_c_encoder_reads(obj, plain)

    def encode(value: Any) -> tuple[str, int]:
        try:
            data = dumps(value, fallback, options)
        except TypeError:  # (orjson.JSONEncodeError is one)
            return slow(value), REFUSED
        # (find, not ``in``: ``in`` tries a bytes needle as an int first, and raises and
        # clears a TypeError each time: 0.54 -> 0.40 µs for the two over a line's values)
        if data.find(b"null") >= 0 or data.find(b"0.0000") >= 0 or exponent(data) is not None:
            return slow(value), RESPELT
        return data.decode(), BY_ORJSON

    return encode


def encoder(
    *,
    sort_keys: bool = False,
    ensure_ascii: bool = False,
    allow_nan: bool = True,
    default: Callable[[Any], Any] = _refuse,
) -> Callable[[Any], str]:
    """:func:`stdlib_encoder`'s text, made by orjson where orjson writes exactly that text
    (see the module's docstring), else by the C encoder (:func:`told_encoder`, its text
    only). ``ensure_ascii``: the C encoder alone (orjson writes UTF-8)."""
    if ensure_ascii or not USABLE:
        return stdlib_encoder(
            sort_keys=sort_keys, ensure_ascii=ensure_ascii, allow_nan=allow_nan, default=default
        )
    told = told_encoder(sort_keys=sort_keys, allow_nan=allow_nan, default=default)

    def encode(value: Any) -> str:
        return told(value)[0]

    return encode
