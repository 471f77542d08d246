"""`switchyard serve`'s own arguments: a size limit that is no size is a usage error
(exit 2, one line, no traceback), and an IPv6 address is printed as a URL a client can
use. Real subprocesses on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.fakes.policy import policy_pointing
from tests.integration.test_gateway import said_until_listening
from tests.reliability.kit import closed_port


@pytest.mark.parametrize("size", ["nan", "inf", "-inf", "1e-9", "0", "-1"])
def test_a_body_limit_that_is_no_size_is_a_usage_error(size: str) -> None:
    """``nan`` and ``inf`` crashed with a traceback; ``1e-9`` truncated to a 0-byte limit
    that refused every request."""
    done = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--port", "0", "--max-body-mb", size],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "--max-body-mb" in done.stderr and "Traceback" not in done.stderr


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", "serve", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("size", ["1e9", "1025", "1024.5"])
def test_a_body_limit_past_a_gib_is_a_usage_error(size: str) -> None:
    """``--max-body-mb 1e9`` (a petabyte) was accepted (a user audit)."""
    done = _serve("--max-body-mb", size)
    assert done.returncode == 2, done.stderr
    assert "--max-body-mb" in done.stderr and "at most 1024" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_largest_body_limit_is_a_gib() -> None:
    from app.cli.serve_cmd import body_limit

    assert body_limit(1024) == 1024 * 1024 * 1024
    assert body_limit(16) == 16 * 1024 * 1024


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_a_short_token_off_loopback_is_a_usage_error_that_says_how_to_make_one(how: str) -> None:
    """``--host 0.0.0.0 --token x`` was accepted: a one-character token guards a gateway
    every machine that reaches the address may call (a user audit). The token itself is
    never said back."""
    token = "tok-9q"
    if how == "flag":
        done = _serve("--host", "0.0.0.0", "--token", token)
    else:
        done = _serve("--host", "0.0.0.0", env={"SWITCHYARD_GATEWAY_TOKEN": token})
    assert done.returncode == 2, done.stderr
    said = done.stderr
    assert "has 6 characters" in said and "16 or more" in said, said
    assert "secrets.token_urlsafe(32)" in said and token not in said
    assert "Traceback" not in said and said.count("\n") == 1


def test_no_token_off_loopback_says_how_to_make_one() -> None:
    done = _serve("--host", "0.0.0.0")
    assert done.returncode == 2
    assert "needs a token" in done.stderr and "secrets.token_urlsafe(32)" in done.stderr


def test_a_token_of_16_characters_is_enough_off_loopback() -> None:
    from app.cli.serve_cmd import check_remote_token
    from app.errors import UsageError

    check_remote_token("0.0.0.0", "k" * 16)
    with pytest.raises(UsageError, match="has 15 characters"):
        check_remote_token("192.168.1.5", "k" * 15)


def test_an_ipv6_address_is_printed_in_brackets(tmp_path: Path) -> None:
    """``--host ::1`` printed ``http://::1:45315/v1``, which no client can parse."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    unreachable = f"http://127.0.0.1:{closed_port()}"
    env = {
        **os.environ,
        "SWITCHYARD_POLICY": str(policy_pointing(tmp_path, openai=unreachable)),
        "SWITCHYARD_VLLM_URL": f"{unreachable}/v1",
        "SWITCHYARD_LLAMACPP_SERVER_URL": f"{unreachable}/v1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--host", "::1", "--port", "0"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        said = said_until_listening(proc)
        line = said[-1]
        assert line.startswith("switchyard serve: listening on http://[::1]:"), line
        # what its session cap covers, said at start (a long-life audit: a gateway left
        # running days spent it on the first and served locally after, unannounced)
        (session,) = [x for x in said if x.startswith("switchyard serve: session ")]
        covers = "its cap (session_usd $5.00) covers every request served until serve stops"
        assert covers in session
        url = line.split()[4]
        assert f"(OpenAI base URL {url}/v1; Anthropic base URL {url})" in line
        assert httpx.get(f"{url}/health", timeout=10).json() == {"status": "ok"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
