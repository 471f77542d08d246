"""The errors of writing, reading and finding evidence bundles."""

from __future__ import annotations

from app.errors import SwitchyardError


class EvidenceError(SwitchyardError):
    """A bundle cannot be written or read as asked."""


class UnknownRun(SwitchyardError):
    """No bundle matches the run id (or prefix) given."""

    exit_code = 2


__all__ = ["EvidenceError", "UnknownRun"]
