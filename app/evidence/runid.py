"""Run ids: one per pipeline run, used in directory names and the ``switchyard/<id>`` branch."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

from app.errors import UsageError

# Letters, digits, '.', '_' and '-', starting with a letter or digit: safe as a directory
# name and as a git branch component (no '..', no '.lock' suffix, see below).
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


def validate_run_id(run_id: str) -> str:
    """Return ``run_id`` if it is safe for a path and a branch name; UsageError otherwise."""
    if not _RUN_ID.match(run_id) or ".." in run_id or run_id.endswith((".lock", ".")):
        raise UsageError(
            f"invalid run id {run_id!r}: use letters, digits, '.', '_' and '-' (at most 80)"
        )
    return run_id


def new_run_id(now: datetime, token: str | None = None) -> str:
    """``YYYYMMDD-HHMMSS-xxxxxx``: sorts by time; ``token`` (hex) is injected in tests."""
    stamp = now.astimezone(UTC).strftime("%Y%m%d-%H%M%S")
    return validate_run_id(f"{stamp}-{token or secrets.token_hex(3)}")


__all__ = ["new_run_id", "validate_run_id"]
