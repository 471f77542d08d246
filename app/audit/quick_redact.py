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
import os
import re
from typing import Any, cast

from app.audit.masking import SECRET_KEY, maybe_secret
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
                    or maybe_secret(text)
                    or any(k in low for k in _SECRET_KEY_ENDS)
                ):
                    return fields
    return cast(dict[str, Any], redact(fields))
