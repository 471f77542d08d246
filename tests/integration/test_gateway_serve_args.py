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
