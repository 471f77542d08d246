"""Copies of the shipped policy pointed at loopback fakes (test support)."""

from __future__ import annotations

from pathlib import Path

from app.resources import default_policy_path


def policy_pointing(tmp_path: Path, **urls: str) -> Path:
    """The shipped policy with ``[providers.NAME] base_url`` replaced (NAME=url)."""
    text = default_policy_path().read_text(encoding="utf-8")
    for provider, url in urls.items():
        marker = f"[providers.{provider}]\nprotocol = "
        head, sep, tail = text.partition(marker)
        if not sep:
            raise KeyError(provider)
        start = tail.index("base_url = ")
        old_line = tail[start : tail.index("\n", start)]
        text = head + sep + tail.replace(old_line, f'base_url = "{url}"', 1)
    path = tmp_path / "policy.toml"
    path.write_text(text, encoding="utf-8")
    return path
