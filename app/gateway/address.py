"""The gateway's address as a client types it (pure; no server imports, so any face that
shows the address can use it)."""

from __future__ import annotations

from app.hosts import http_url as base_url

__all__ = ["base_url"]
