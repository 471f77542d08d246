"""Keep secrets out of audit lines: every field is redacted before it is hashed and stored.

Two nets: the current values of key-like environment variables (exact matches, wherever
they appear), and the shapes keys commonly have (``sk-…``, ``Bearer …``, ``x-api-key: …``,
``AKIA…``, private key blocks, ``APP_SECRET=…``) for keys that never passed through the
environment. The patterns live in :mod:`app.audit.masking`, the one masker every file
Switchyard writes (evidence, briefs, memories, the Stage0 cache) and every cloud request
go through; this module is the audit log's door to it, and the log formatter's.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from app.audit.masking import (
    REDACTED,
    SECRET_ENV_VARS,
    SECRET_KEY,
    Masker,
    secret_env_values,
)

__all__ = [
    "REDACTED",
    "SECRET_ENV_VARS",
    "SECRET_KEY",
    "RedactingFormatter",
    "redact",
    "redact_text",
    "secret_env_values",
]


def redact_text(text: str, env_pattern: re.Pattern[str] | None = None) -> str:
    """``text`` with every shaped secret masked, and the values ``env_pattern`` finds."""
    return Masker(env_pattern).text(text)


def redact(obj: Any) -> Any:
    """A copy of ``obj`` (str/dict/list/tuple, nested) with every secret replaced.

    Tuples come back as lists (audit lines are JSON); numbers, None and bools pass through.
    """
    return Masker.from_environment().walk(obj)


class RedactingFormatter(logging.Formatter):
    """A log formatter whose every record (message, arguments, traceback) is masked
    before a handler writes it: diagnostic log files are files written too."""

    def format(self, record: logging.LogRecord) -> str:
        return Masker.from_environment().text(super().format(record))
