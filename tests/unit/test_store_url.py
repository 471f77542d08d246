"""The team database's URL and its local_only check (GR-009, by resolved address)."""

from __future__ import annotations

import pytest

from app.store.errors import StorePrivacyError, StoreUrlError
from app.store.postgres import checked_host
from app.store.url import parse_database_url

NAMED = frozenset({("db-box.lan", 5432)})


def test_a_url_is_parsed_and_shown_without_its_password() -> None:
    url = parse_database_url("postgresql://sy:s3cret@db-box.lan:6543/team")
    assert (url.host, url.port, url.database, url.user) == ("db-box.lan", 6543, "team", "sy")
    assert url.display() == "postgresql://sy@db-box.lan:6543/team"
    sock = parse_database_url("postgresql:///team?host=/var/run/postgresql")
    assert sock.host is None and sock.socket_dir == "/var/run/postgresql"


@pytest.mark.parametrize(
    "text",
    ["", "db-box:5432", "http://db-box/team", "postgresql://a,b/team", "postgresql://h:x/t"],
)
def test_malformed_urls_are_usage_errors(text: str) -> None:
    with pytest.raises(StoreUrlError) as caught:
        parse_database_url(text)
    assert caught.value.exit_code == 2


def _resolver(addresses: list[str]):  # type: ignore[no-untyped-def]
    return lambda host, port: addresses


def test_under_local_only_loopback_and_a_named_private_host_pass() -> None:
    local = parse_database_url("postgresql://u@localhost:5432/t")
    assert checked_host(local, local_only=True, named=NAMED, resolver=_resolver(["127.0.0.1"]))
    lan = parse_database_url("postgresql://u@db-box.lan:5432/t")
    assert (
        checked_host(lan, local_only=True, named=NAMED, resolver=_resolver(["192.168.1.20"]))
        == "192.168.1.20"  # the connection goes to the address that was checked
    )
    sock = parse_database_url("postgresql:///t?host=/run/postgresql")
    assert checked_host(sock, local_only=True, named=frozenset()) is None
    assert checked_host(lan, local_only=False, named=frozenset()) is None  # not checked


@pytest.mark.parametrize(
    ("text", "addresses", "why"),
    [
        ("postgresql://u@db-box.lan:5432/t", ["203.0.113.7"], "not a loopback or private"),
        ("postgresql://u@db-box.lan:5432/t", ["169.254.169.254"], "not a loopback or private"),
        ("postgresql://u@other.lan:5432/t", ["192.168.1.9"], "not a local host the policy names"),
        ("postgresql://u@db-box.lan:5433/t", ["192.168.1.9"], "not a local host the policy names"),
        ("postgresql://u@db-box.lan:5432/t", [], "does not resolve"),
    ],
)
def test_under_local_only_anything_else_refuses_the_session(
    text: str, addresses: list[str], why: str
) -> None:
    with pytest.raises(StorePrivacyError, match=why) as caught:
        checked_host(
            parse_database_url(text), local_only=True, named=NAMED, resolver=_resolver(addresses)
        )
    assert caught.value.exit_code == 2 and "local_only is on" in str(caught.value)
