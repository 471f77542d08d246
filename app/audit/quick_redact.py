"""Redaction, the quick way when there is nothing to redact.

redact() walks every string of a line through the masker's regexes (about 60 µs a line,
most of an append's CPU). Nearly every line holds nothing to redact, which one look at
the line's compact JSON text can prove: no secret value from the environment in it, none
of the markers without which no shape of the masker can match (the masker itself skips
its patterns on the same markers, :func:`app.audit.masking.families`), and no key that
redact() blanks by name.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any, cast

import ahocorasick_rs

from app.audit.masking import (
    CI_MARKERS,
    CS_MARKERS,
    LOWER_ASSIGN_NEEDLES,
    SECRET_KEY,
)
from app.audit.redact import redact, secret_env_values
from app.audit.secret_forms import secret_forms

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


#: the ignore-case markers and the secret keys' endings, as looked for in lowered bytes
_CI_NEEDLES = tuple(m.encode() for m in (*CI_MARKERS, *_SECRET_KEY_ENDS))


class Look:
    """Every needle in one pass over the lowered bytes (an Aho-Corasick automaton, every
    match reported, overlapping ones too): the ignore-case markers and the keys' endings
    as they are, and the case-sensitive markers and the environment's secret values
    lowered, each lowered match then compared with the bytes it was lowered from.

    Exactly the two passes it replaces (the exact needles in the bytes, the ignore-case
    ones in the lowered bytes): ``bytes.lower()`` lowers ASCII letters only, byte for
    byte, so an exact needle at a place is its lowered form at that place in the lowered
    bytes, and only there is it compared. Two needles lowered alike share one lowered
    form, compared with both. A value is found in the UTF-8 bytes exactly where it is in
    the text: a valid UTF-8 sequence occurs in another only on its character boundaries
    (a value holding a lone surrogate occurs in no text that encodes, as in none that
    does not). Measured on the router's request: two passes a line 2.5-2.9 µs alone, one
    1.6-1.8 (issue 20); the 28 regex scans before them cost ~16 µs a request in place."""

    def __init__(self, values: tuple[str, ...]) -> None:
        forms = secret_forms(values)
        # the values' runs in their other forms (any case, escaped: as the line's JSON
        # spells them), looked for as the ignore-case markers are; their base64 exactly
        folded = {_as_json(run).encode("utf-8", "surrogatepass") for run in forms.folded}
        ci_needles = (*_CI_NEEDLES, *sorted(folded - set(_CI_NEEDLES)))
        # (a lower-case name is a shape's only where it is assigned: the word alone is in
        # every call line)
        # (the markers as the line's JSON spells them: ``PASS\t`` is the two characters
        # ``\t`` there, and a DB_PASS<tab>= line was written unmasked: a review)
        markers = {*CS_MARKERS, *(_as_json(m) for m in CS_MARKERS)}
        exact = [m.encode() for m in (*sorted(markers), *LOWER_ASSIGN_NEEDLES)]
        exact += [v.encode("utf-8", "surrogatepass") for v in values]
        exact += [run.encode() for run in forms.exact]
        by_lowered: dict[bytes, set[bytes]] = {}
        for needle in exact:
            by_lowered.setdefault(needle.lower(), set()).add(needle)
        # (a lowered form that is an ignore-case needle is found as that one: dirty)
        lowered = [low for low in by_lowered if low not in ci_needles]
        self.ci = len(ci_needles)
        #: for each lowered exact needle (after the ignore-case ones), what it stands for
        self.exact = tuple(frozenset(by_lowered[low]) for low in lowered)
        # a DFA: with the values' runs (~100 needles a key) the default automaton took
        # twice as long a line as with the markers alone, the DFA as long (issue 20)
        automaton = ahocorasick_rs.BytesAhoCorasick(
            [*ci_needles, *lowered], implementation=ahocorasick_rs.Implementation.DFA
        )
        self._find = automaton.find_matches_as_indexes

    def finds(self, raw: bytes) -> bool:
        """Whether ``raw`` holds an exact needle, or an ignore-case one in any case."""
        ci, exact = self.ci, self.exact
        for index, start, end in self._find(raw.lower(), overlapping=True):
            if index < ci or raw[start:end] in exact[index - ci]:
                return True
        return False


def _as_json(text: str) -> str:
    """``text`` as compact JSON spells it inside a string (a backslash doubled)."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


@lru_cache(maxsize=8)
def _look(values: tuple[str, ...]) -> Look:
    """The look for the environment's secret ``values`` (remade only when they change)."""
    return Look(values)


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
    # a URL's password needs both (the automaton would report every URL: most lines with
    # one hold no "@", and a runtime's URL in a fallback line is no reason to redact)
    if raw.find(b"://") >= 0 and raw.find(b"@") >= 0:
        return False
    return not _look(values).finds(raw)


def redact_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """``redact(fields)`` for plain JSON values (``jsonable``'s output): equal to it."""
    if looks_clean(json.dumps(fields, ensure_ascii=False, separators=(",", ":"))):
        return fields
    return cast(dict[str, Any], redact(fields))
