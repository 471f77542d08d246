"""The gateway's address as a client types it (pure; no server imports, so any face that
shows the address can use it)."""

from __future__ import annotations

__all__ = ["base_url"]


def base_url(host: str, port: int) -> str:
    """``http://host:port``; an IPv6 literal in brackets (RFC 3986), its zone's ``%``
    escaped (RFC 6874): ``http://[::1]:4000``, ``http://[fe80::1%25eth0]:4000``."""
    if ":" in host:
        return f"http://[{host.replace('%', '%25')}]:{port}"
    return f"http://{host}:{port}"
