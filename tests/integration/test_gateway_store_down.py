"""The gateway on the team store when PostgreSQL goes away: every request fails closed
in its protocol's own error shape (503, which clients retry), with no traceback on the
server's stderr, and is served again once the database is back. It answered a bare
``500 Internal Server Error`` (text/plain) with a traceback, local roles included."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.test_gateway import Gateway, _gateway, fakes  # noqa: F401
from tests.pg import PgServer, _admin, run_sync


@pytest.fixture
def team_gw(
    tmp_path: Path,
    fakes: tuple[Any, Any, Any],  # noqa: F811
    pg_url: str,
) -> Iterator[tuple[Gateway, str]]:
    env = {"SWITCHYARD_DATABASE_URL": pg_url}
    for gw in _gateway(tmp_path, fakes, "--approve", "deny", env=env):
        yield gw, pg_url.rsplit("/", 1)[1]


def _connections(server: PgServer, database: str, allowed: bool) -> None:
    """The database refuses new connections and drops the open ones (or takes them again)."""
    run_sync(_admin(server, f"ALTER DATABASE {database} ALLOW_CONNECTIONS {str(allowed).lower()}"))
    if not allowed:
        run_sync(
            _admin(
                server,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                f" WHERE datname = '{database}' AND pid <> pg_backend_pid()",
            )
        )


def test_a_database_gone_away_is_a_503_in_each_protocols_shape(
    team_gw: tuple[Gateway, str], pg_server: PgServer
) -> None:
    gw, database = team_gw
    chat = {"model": "implementer", "messages": [{"role": "user", "content": "why?"}]}
    messages = {**chat, "max_tokens": 64}
    with httpx.Client(base_url=gw.url, timeout=60) as http:
        assert http.post("/v1/chat/completions", json=chat).status_code == 200
        _connections(pg_server, database, allowed=False)
        try:
            down = http.post("/v1/chat/completions", json=chat)
            down_stream = http.post("/v1/chat/completions", json={**chat, "stream": True})
            down_messages = http.post("/v1/messages", json=messages)
        finally:
            _connections(pg_server, database, allowed=True)
        back = http.post("/v1/chat/completions", json=chat)
    for answer in (down, down_stream):
        assert answer.status_code == 503, answer.text
        error = answer.json()["error"]
        assert error["type"] == "server_error" and error["code"] == "unavailable"
        assert "cannot be recorded" in error["message"]
    assert down_messages.status_code == 503, down_messages.text
    assert down_messages.json()["error"]["type"] == "overloaded_error"
    assert back.status_code == 200 and back.json()["choices"][0]["message"]["content"]
    gw.proc.terminate()
    try:
        _, err = gw.proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        gw.proc.kill()
        _, err = gw.proc.communicate()
    assert "Traceback" not in err and "Exception in ASGI application" not in err, err
    assert "password" not in json.dumps(down.json())
