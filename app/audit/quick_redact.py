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


def _grouped(markers: tuple[str, ...]) -> tuple[tuple[bytes, tuple[bytes, ...]], ...]:
    """What maybe_secret() looks for, as UTF-8 bytes, grouped under a common prefix of
    three characters (or the whole marker): one look rules out a whole group."""
    groups: dict[bytes, list[bytes]] = {}
    for marker in markers:
        raw = marker.encode()
        groups.setdefault(raw[:3], []).append(raw)
    # A group of one is looked for whole; its prefix alone would only cost a second look.
    return tuple(
        (members[0], ()) if len(members) == 1 else (prefix, tuple(members))
        for prefix, members in groups.items()
    )


# maybe_secret()'s markers, and the secret keys' endings, grouped for looks_clean().
_CS_GROUPS = _grouped(CS_MARKERS)
_CI_GROUPS = _grouped((*CI_MARKERS, *_SECRET_KEY_ENDS))


def _any_marker(data: bytes, groups: tuple[tuple[bytes, tuple[bytes, ...]], ...]) -> bool:
    # find(), not ``in``: ``needle in data`` first tries the needle as a byte value, and
    # the TypeError it raises and clears costs more than the search (two dozen a line).
    find = data.find
    for prefix, members in groups:
        if find(prefix) >= 0 and (not members or any(find(m) >= 0 for m in members)):
            return True
    return False


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
    if values and (any(_JSON_ESCAPED.search(v) for v in values) or any(v in text for v in values)):
        return False
    if not text.isascii() and _FOLDS_TO_ASCII.search(text):
        return False
    try:
        raw = text.encode("utf-8") if data is None else data
    except UnicodeEncodeError:
        return False
    return not (_any_marker(raw, _CS_GROUPS) or _any_marker(raw.lower(), _CI_GROUPS))


def redact_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """``redact(fields)`` for plain JSON values (``jsonable``'s output): equal to it."""
    if looks_clean(json.dumps(fields, ensure_ascii=False, separators=(",", ":"))):
        return fields
    return cast(dict[str, Any], redact(fields))
