"""Secrets never reach an audit line: env values and common key shapes are redacted."""

from __future__ import annotations

import pytest

from app.audit.redact import REDACTED, redact, redact_text, secret_env_values


@pytest.mark.parametrize(
    "text",
    [
        "key sk-abcdefghijklmnopqrstuvwx here",
        "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz012345",
        "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz_012345",
        "ghp_" + "a" * 36,
        "xoxb-1234567890-abcdef",
        "AIza" + "B" * 35,
    ],
)
def test_key_shapes_are_redacted(text: str) -> None:
    out = redact(text)
    assert REDACTED in out
    assert "abcdefghijklmnop" not in out.lower()
    assert "aaaaaaaaaaaaaaaa" not in out and "BBBBBBBB" not in out


def test_headers_keep_their_name_but_lose_the_value() -> None:
    assert redact("Authorization: Bearer eyJhbGciOi.payload.sig") == (
        f"Authorization: Bearer {REDACTED}"
    )
    assert redact("x-api-key: abc123secretvalue") == f"x-api-key: {REDACTED}"
    assert redact('{"x-api-key": "abc123secretvalue"}') == f'{{"x-api-key": "{REDACTED}"}}'
    assert redact("api_key=abc123secretvalue&x=1") == f"api_key={REDACTED}&x=1"


def test_ordinary_text_is_left_alone() -> None:
    for text in ("task-abcdefghijklmnopqrstuvwx", "sk-learn", "bearer of bad news", "risk-free"):
        assert redact(text) == text


def test_env_values_are_redacted_wherever_they_appear(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPSEEK_API_KEY", "plain-looking-value-1234")
    monkeypatch.setenv("HF_TOKEN", "hf-token-value-5678")
    monkeypatch.setenv("SHORT_TOKEN", "abc")  # too short to redact safely
    out = redact({"detail": "used plain-looking-value-1234 and hf-token-value-5678 abc"})
    assert out == {"detail": f"used {REDACTED} and {REDACTED} abc"}


def test_env_cache_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # (no run of 12 characters in common: a value is masked in part, secret_forms)
    monkeypatch.setenv("OPENAI_API_KEY", "first-canary-7f3a9c")
    assert redact("first-canary-7f3a9c") == REDACTED
    monkeypatch.setenv("OPENAI_API_KEY", "second-sentinel-b41e")
    assert redact("second-sentinel-b41e") == REDACTED
    assert redact("first-canary-7f3a9c") == "first-canary-7f3a9c"
    monkeypatch.delenv("OPENAI_API_KEY")
    assert redact("second-sentinel-b41e") == "second-sentinel-b41e"


def test_secret_env_values_selects_by_name() -> None:
    env = {
        "OPENAI_API_KEY": "aaaaaaaa",
        "GITHUB_TOKEN": "bbbbbbbbbb",
        "PATH": "/usr/bin:/bin",
        "MY_API_KEY": "short",
    }
    assert secret_env_values(env) == ("bbbbbbbbbb", "aaaaaaaa")


def test_nested_structures_and_secret_keys() -> None:
    data = {
        "headers": {"Authorization": "Basic dXNlcjpwYXNz", "Accept": "json"},
        "list": ["ok", ("sk-" + "x" * 20, 3)],
        "n": 5,
        "none": None,
        "flag": True,
        "api_key": "anything-at-all",
        "tokens": 12,
    }
    assert redact(data) == {
        "headers": {"Authorization": REDACTED, "Accept": "json"},
        "list": ["ok", [REDACTED, 3]],
        "n": 5,
        "none": None,
        "flag": True,
        "api_key": REDACTED,
        "tokens": 12,
    }


def test_redact_text_without_env() -> None:
    assert redact_text("nothing here") == "nothing here"


def test_assignments_of_key_variables() -> None:
    assert redact("OPENAI_API_KEY=abc123secretvalue ok") == f"OPENAI_API_KEY={REDACTED} ok"
