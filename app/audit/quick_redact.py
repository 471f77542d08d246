"""Redaction, the quick way when there is nothing to redact.

redact() walks every string of a line through the masker's regexes (about 60 µs a line,
most of an append's CPU). Nearly every line holds nothing to redact, which one look at
the line's compact JSON text can prove: no secret value from the environment in it, none
of the markers without which no shape of the masker can match (the masker itself skips
its patterns on the same look, :func:`app.audit.masking.maybe_secret`), and no key that
redact() blanks by name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any, cast

import ahocorasick_rs

from app.audit.masking import CI_MARKERS, CS_MARKERS, SECRET_KEY
from app.audit.redact import redact, secret_env_values

_SECRET_KEY_AS_WRITTEN = (
    r"(?i)^(authorization|proxy-authorization|x-api-key|api[_-]?key|[a-z0-9_]*_api_key|"
    r"password|secret|client_secret|access_token|refresh_token|auth_token|id_token)$"
)
_SHORTCUT = SECRET_KEY.pattern == _SECRET_KEY_AS_WRITTEN
# How every key SECRET_KEY matches ends in compact JSON ("…token":), and a key ending in a
# newline, which its $ also matches ("password\n").
_SECRET_KEY_ENDS = ('authorization":', 'key":', 'password":', 'secret":', 'token":', '\\n":')
# The only non-ASCII characters that an ignore-case pattern matches to ASCII letters
# (İ ı ſ K); lower() maps no other one to ASCII. A line holding one takes redact().
_FOLDS_TO_ASCII = re.compile("[\u0130\u0131\u017f\u212a]")
# A secret holding a character JSON escapes would not be found in the text as it is.
_JSON_ESCAPED = re.compile(r'["\\\x00-\x1f]')


#: the matches in the bytes, as (needle, start, end): none when they hold no needle
Find = Callable[[bytes], list[tuple[int, int, int]]]


def _finder(needles: Iterable[bytes]) -> Find:
    """A search for any of ``needles`` in one pass over the bytes (an Aho-Corasick
    automaton): it finds a match wherever one of them occurs. Measured on the router's
    request, in place: its 28 regex scans (one per first byte of a marker, each at C
    speed) cost ~16 µs, its four automaton passes (two a line) ~10 (issue 20)."""
    return ahocorasick_rs.BytesAhoCorasick(list(needles)).find_matches_as_indexes


#: the ignore-case markers and the secret keys' endings, looked for in the lowered bytes
_CI_FIND = _finder(m.encode() for m in (*CI_MARKERS, *_SECRET_KEY_ENDS))


@lru_cache(maxsize=8)
def _cs_find(values: tuple[str, ...]) -> Find:
    """The case-sensitive markers and the environment's secret ``values``, in one search
    (remade only when the values change). A value is found in the UTF-8 bytes exactly
    where it is in the text: a valid UTF-8 sequence occurs in another only on its
    character boundaries (a value holding a lone surrogate occurs in no text that
    encodes, as in none that does not)."""
    found = [m.encode() for m in CS_MARKERS]
    found += [v.encode("utf-8", "surrogatepass") for v in values]
    return _finder(found)


@lru_cache(maxsize=8)
def _escaped(values: tuple[str, ...]) -> bool:
    """Whether a secret value holds a character JSON escapes, or is empty (which every
    text holds, and no automaton looks for), keyed on the values: looked at again only
    when the environment's have changed."""
    return any(not v or _JSON_ESCAPED.search(v) for v in values)


def _secret_values() -> tuple[str, ...]:
    """``secret_env_values()`` (recomputed only when the environment has changed)."""
    return secret_env_values()


def looks_clean(text: str, data: bytes | None = None) -> bool:
    """True when ``redact()`` would change nothing in the values whose compact JSON is
    ``text`` (``data``: its UTF-8, when the caller has it). One look at the text.

    The markers are ASCII, so they are looked for in the UTF-8 bytes (a multi-byte
    character holds no ASCII byte), and ``bytes.lower()`` lowers what ``str.lower()``
    would once no character that folds to ASCII is in the text.
    """
    if not _SHORTCUT:
        return False
    values = _secret_values()
    if values and _escaped(values):
        return False
    try:
        raw = text.encode("utf-8") if data is None else data
    except UnicodeEncodeError:
        return False
    # (the bytes that begin or hold those characters in UTF-8, at memchr's speed first)
    if (
        not text.isascii()
        and (0xC4 in raw or 0xC5 in raw or 0x84 in raw)
        and _FOLDS_TO_ASCII.search(text)
    ):
        return False
    return not (_cs_find(values)(raw) or _CI_FIND(raw.lower()))


def redact_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """``redact(fields)`` for plain JSON values (``jsonable``'s output): equal to it."""
    if looks_clean(json.dumps(fields, ensure_ascii=False, separators=(",", ":"))):
        return fields
    return cast(dict[str, Any], redact(fields))
