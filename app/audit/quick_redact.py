"""Redaction, the quick way when there is nothing to redact.

redact() walks every string of a line through case-insensitive regexes (about 60 µs a
line, most of an append's CPU). Nearly every line holds nothing to redact, which one look
at the line's compact JSON text can prove: no secret value from the environment in it,
none of the key shapes redact() looks for, and no key that redact() blanks by name. The
look is written against redact.py's patterns as they are below: if they change, it is
off and every line takes redact() itself.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, cast

from app.audit.redact import _MAYBE_SHAPED, _SECRET_KEY, redact, secret_env_values

_SHAPED_AS_WRITTEN = r"(?i)sk-|bearer|api[_-]?key|gh[pousr]_|github_pat_|xox|AIza"
_SECRET_KEY_AS_WRITTEN = (
    r"(?i)^(authorization|proxy-authorization|x-api-key|api[_-]?key|[a-z0-9_]*_api_key|"
    r"password|secret|client_secret|access_token|refresh_token|auth_token|id_token)$"
)
_SHORTCUT = (
    _MAYBE_SHAPED.pattern == _SHAPED_AS_WRITTEN and _SECRET_KEY.pattern == _SECRET_KEY_AS_WRITTEN
)
# What _MAYBE_SHAPED finds, in lower case (it ignores case).
_SHAPES = (
    "sk-",
    "bearer",
    "apikey",
    "api_key",
    "api-key",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "xox",
    "aiza",
)
# How every key _SECRET_KEY matches ends in compact JSON ("…token":), and a key ending in a
# newline, which its $ also matches ("password\n").
_SECRET_KEY_ENDS = ('authorization":', 'key":', 'password":', 'secret":', 'token":', '\\n":')
# The only non-ASCII characters that an ignore-case pattern matches to ASCII letters
# (İ ı ſ K); lower() maps no other one to ASCII. A line holding one takes redact().
_FOLDS_TO_ASCII = re.compile("[\u0130\u0131\u017f\u212a]")
# A secret holding a character JSON escapes would not be found in the text as it is.
_JSON_ESCAPED = re.compile(r'["\\\x00-\x1f]')
_env_seen: tuple[tuple[Any, ...], tuple[str, ...]] | None = None


def _secret_values() -> tuple[str, ...]:
    """``secret_env_values()``, recomputed only when the environment has changed."""
    global _env_seen
    data = getattr(os.environ, "_data", None)
    if not isinstance(data, dict):
        return secret_env_values()
    snapshot = tuple(data.items())
    if _env_seen is None or _env_seen[0] != snapshot:
        _env_seen = (snapshot, secret_env_values())
    return _env_seen[1]


def redact_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """``redact(fields)`` for plain JSON values (``jsonable``'s output): equal to it."""
    if _SHORTCUT:
        values = _secret_values()
        if not any(_JSON_ESCAPED.search(v) for v in values):
            text = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
            if not _FOLDS_TO_ASCII.search(text):
                low = text.lower()
                if not (
                    any(v in text for v in values)
                    or any(s in low for s in _SHAPES)
                    or any(k in low for k in _SECRET_KEY_ENDS)
                ):
                    return fields
    return cast(dict[str, Any], redact(fields))
