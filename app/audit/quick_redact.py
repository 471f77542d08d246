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
from collections.abc import Callable
from functools import lru_cache
from typing import Any, cast

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


Search = Callable[[bytes], "re.Match[bytes] | None"]


def _searches(markers: tuple[str, ...]) -> tuple[Search, ...]:
    """A search for any of ``markers`` (as UTF-8 bytes), one regex per first byte.

    A regex whose alternatives all begin with one byte is scanned for that byte at C
    speed and tries its alternatives only there: half the time of a ``bytes.find`` per
    marker over a line (which tries every byte), where one alternation of every marker
    is slower still (it tries them at nearly every position). Measured on the router's
    two lines: 11.1 and 10.1 µs a line with a find per group, 5.3 and 4.8 µs (issue 20).
    """
    by_first: dict[bytes, list[bytes]] = {}
    for marker in markers:
        raw = marker.encode()
        by_first.setdefault(raw[:1], []).append(raw)
    return tuple(
        re.compile(b"|".join(re.escape(m) for m in members)).search for members in by_first.values()
    )


# maybe_secret()'s markers, and the secret keys' endings, for looks_clean().
_CS_SEARCHES = _searches(CS_MARKERS)
_CI_SEARCHES = _searches((*CI_MARKERS, *_SECRET_KEY_ENDS))


def _any_marker(data: bytes, searches: tuple[Search, ...]) -> bool:
    # (a loop, not any() over a generator: resuming one per search costs ~0.1 µs each)
    for search in searches:  # noqa: SIM110
        if search(data) is not None:
            return True
    return False


@lru_cache(maxsize=8)
def _escaped(values: tuple[str, ...]) -> bool:
    """Whether a secret value holds a character JSON escapes (keyed on the values: looked
    at again only when the environment's have changed)."""
    return any(_JSON_ESCAPED.search(v) for v in values)


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
    if values:
        if _escaped(values):
            return False
        for value in values:
            if value in text:
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
    return not (_any_marker(raw, _CS_SEARCHES) or _any_marker(raw.lower(), _CI_SEARCHES))


def redact_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """``redact(fields)`` for plain JSON values (``jsonable``'s output): equal to it."""
    if looks_clean(json.dumps(fields, ensure_ascii=False, separators=(",", ":"))):
        return fields
    return cast(dict[str, Any], redact(fields))
