"""Every test runs with its own data dir and config dir, and without cloud keys."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

pytest_plugins = [
    "tests.fakes.fixtures",
    "tests.socket_guard",
    "tests.pg",
    "tests.json_watch",
    "tests.integration.sim_kit",
]

# CI (.ci/run) replays the same property examples on every run, so that whether a change
# lands does not hang on which random examples a run draws; local runs keep exploring
# (they found the two edge cases fixed in b581e9b and 9eeea21).
hypothesis_settings.register_profile("ci", derandomize=True, database=None)
hypothesis_settings.load_profile(os.environ.get("SWITCHYARD_HYPOTHESIS_PROFILE", "default"))

# A test's subprocesses (`python -m app`: the CLI, the gateway, the ACP agent) run this
# checkout: the venv's editable install names the main one, and from a git worktree they
# ran its code, not the code under test (an ACP fix's test passed that never ran it).
_ROOT = str(Path(__file__).resolve().parent.parent)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p)

CLOUD_KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DEEPSEEK_API_KEY", "MOONSHOT_API_KEY")


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("SWITCHYARD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    for name in CLOUD_KEYS:
        monkeypatch.delenv(name, raising=False)
    for name in (
        "SWITCHYARD_POLICY",
        "SWITCHYARD_LOCAL_ONLY",
        "SPEC_KIT_CONSENSUS",
        "SPEC_KIT_CRITIC",
        "SWITCHYARD_APPROVE",
    ):
        monkeypatch.delenv(name, raising=False)
    yield


@pytest.fixture
def policy_path() -> Path:
    from app.resources import default_policy_path

    return default_policy_path()


@pytest.fixture
def policy():  # type: ignore[no-untyped-def]
    from app.policy import load_policy

    return load_policy().policy
