"""Find the data that ships with the package: the default policy, themes, the demo repo.

In a wheel they are force-included under ``app/_data/``; in a checkout (editable
install) they sit at the repository's top level beside ``app/``.
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """Return the shipped directory ``name`` (``policy``, ``themes`` or ``examples``)."""
    for candidate in (_PKG / "_data" / name, _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"shipped data directory {name!r} not found beside {_PKG}")


def default_policy_path() -> Path:
    return data_dir("policy") / "model-policy.toml"
