"""Skips that cannot hide a failure in CI.

``make test`` installs every component the suite uses (llama-cpp-python and the
embedded GGUF, bubblewrap, git, PostgreSQL). On a developer's partial install a test of
a missing component is skipped with the reason; under ``CI=true`` the same condition is
a failure, because there it means the install step broke. Also what the suite takes of
the machine it shares with pytest-xdist's other worker (:func:`llama_threads`).
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing(why: str) -> NoReturn:
    """Skip (a partial local install) or fail (CI) because ``why``."""
    if in_ci():
        pytest.fail(
            f"CI=true: {why}; `make test` installs it, so this is a broken set-up", pytrace=False
        )
    pytest.skip(why)


def llama_threads() -> int:
    """Threads for the in-process llama.cpp: 2 on CI's two cores, 1 beside another
    pytest-xdist worker (llama.cpp's threads spin while they wait, and slow both)."""
    return 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2
