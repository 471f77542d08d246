"""The router's name for the local_only rule (GR-009). The rule itself is defined once,
in :mod:`app.backends.local_only`, where the launcher can use it too (backends import
nothing from the router)."""

from __future__ import annotations

from app.backends.local_only import effective_local_only

__all__ = ["effective_local_only"]
