"""The team database's URL and its local_only check (GR-009, by resolved address)."""

from __future__ import annotations

import re

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


@pytest.mark.parametrize(
    ("text", "said"),
    [
        # asyncpg reads the last ?host= (or every one of a list) and would connect by TCP
        # to it, while the first made the URL pass for a unix socket under local_only
        ("postgresql://sy:pw@/team?host=/nonexistent&host=192.0.2.1", "name one host"),
        ("postgresql://sy:pw@/team?host=/nonexistent,192.0.2.1", "name one host"),
        ("postgresql://sy:pw@127.0.0.1/team?host=192.0.2.1", "the host is named twice"),
        ("postgresql://sy:pw@127.0.0.1/team?port=1&port=2", "name one port"),
        ("postgresql://sy:pw@127.0.0.1:5432/team?port=6543", "the port is named twice"),
        ("postgresql://sy:pw@/team?host=/run/pg&port=abc", "?port=abc is not a port"),
        ("postgresql://sy:pw@127.0.0.1/team?service=prod", "?service= is not taken"),
        # libpq's, not asyncpg's: sent to the server as a setting, it read "cannot reach"
        ("postgresql://sy:pw@127.0.0.1/team?connect_timeout=10", "?connect_timeout= is libpq's"),
        # asyncpg splits at the first @, this parser at the last: two different hosts
        ("postgresql://sy:s3cr@tPW@127.0.0.1/team", "write an '@' in the password as %40"),
    ],
)
def test_a_url_that_could_reach_another_server_than_the_one_checked_is_refused(
    text: str, said: str
) -> None:
    with pytest.raises(StoreUrlError, match=re.escape(said)) as caught:
        parse_database_url(text)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    "text",
    [
        "postgresql://sy@127.0.0.1:notaport/team?password=TOPSECRETQ",
        "postgresql://sy@127.0.0.1:5432?password=TOPSECRETQ",
        "mysql://sy@127.0.0.1/team?sslpassword=TOPSECRETQ",
        "postgresql://sy:TOPSECRETQ@127.0.0.1:notaport/team",
    ],
)
def test_a_password_is_never_in_the_message_about_a_bad_url(text: str) -> None:
    with pytest.raises(StoreUrlError) as caught:
        parse_database_url(text)
    assert "TOPSECRETQ" not in str(caught.value) and "***" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        # asyncpg takes the user part's user and the path's database and drops the
        # query's: these connected as "sy" to "team", unsaid
        ("postgresql://sy:pw@127.0.0.1/team?user=postgres", "the user is named twice"),
        ("postgresql://sy@127.0.0.1/team?user=a&user=b", "the user is named twice"),
        ("postgresql://sy:pw@127.0.0.1/team?dbname=sy2", "the database is named twice"),
        ("postgresql://sy:pw@127.0.0.1/team?database=sy2", "the database is named twice"),
        ("postgresql://sy:pw@127.0.0.1/?dbname=sy2", "?dbname= is not taken"),
        (
            "postgresql://sy:TOPSECRETQ@127.0.0.1/team?password=TOPSECRETZ",
            "password is given twice",
        ),
        ("postgresql://sy@127.0.0.1/team?password=TOPSECRETQ&password=TOPSECRETZ", "given twice"),
    ],
)
def test_a_user_database_or_password_in_the_query_too_is_refused_not_dropped(
    text: str, said: str
) -> None:
    with pytest.raises(StoreUrlError, match=re.escape(said)) as caught:
        parse_database_url(text)
    assert caught.value.exit_code == 2
    assert "TOPSECRET" not in str(caught.value)


def test_a_user_or_password_given_only_in_the_query_is_taken() -> None:
    url = parse_database_url("postgresql://127.0.0.1/team?user=bob&password=TOPSECRETQ")
    assert url.user == "bob" and url.display() == "postgresql://bob@127.0.0.1:5432/team"
    assert url.secrets() == ["TOPSECRETQ"]
    assert url.setting("search_path") is None
    url = parse_database_url("postgresql://sy@127.0.0.1/team?Search_Path=a&search_path=b,c")
    assert url.setting("search_path") == "b,c"  # (the server's names ignore case)


def test_a_socket_url_takes_its_port_from_the_query() -> None:
    url = parse_database_url("postgresql://sy@/team?host=/run/pg&port=6543")
    assert (url.host, url.socket_dir, url.port) == (None, "/run/pg", 6543)


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


def test_the_pools_own_retry_logs_never_reach_a_commands_stderr() -> None:
    """PostgreSQL stopped mid-command: asyncpg's pool printed three tracebacks through
    logging's last resort before the command's one line."""
    import subprocess
    import sys

    code = (
        "import logging, app.store.postgres;"
        "logging.getLogger('asyncpg.pool').error('Failed to restore the pool connection floor')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stderr == ""


@pytest.mark.parametrize(
    "url",
    [
        "postgres:/switchyard:PwLeak9x@127.0.0.1:55433/switchyard",
        "postgresql:switchyard:PwLeak9x@127.0.0.1/switchyard",
        "postgresql//switchyard:PwLeak9x@127.0.0.1/switchyard",
        "switchyard:PwLeak9x@127.0.0.1/switchyard",
        "mysql://switchyard:PwLeak9x@127.0.0.1/switchyard",
        # urlsplit's own message quoted the piece before the '/': 'PwLe'
        "postgresql://switchyard:PwLe/ak9x@127.0.0.1:55433/switchyard",
        "postgresql://switchyard:PwLe?ak9x@127.0.0.1:55433/switchyard",
        "postgresql://switchyard:PwLe#ak9x@127.0.0.1:55433/switchyard",
        # no database: read as host "switchyard", port 2024, database "PwLe/ak9x@…" (a review)
        "postgresql://switchyard:2024/PwLe/ak9x@db.lan",
        "postgresql://switchyard:2024/PwLeak9x@db.lan",
        # no '@host' at all: the password read as the port, quoted twice (a team audit)
        "postgresql://switchyard:PwLeak9x/switchyard",
        "postgresql://switchyard:PwLeak9x/switchyard?host=/run/postgresql",
    ],
)
def test_a_mistyped_url_never_shows_its_password(url: str) -> None:
    """docs/team.md: "the password never shown". A scheme typed wrong (or none) showed
    it whole, and a '/' in it had urlsplit's message quote its first part (an audit)."""
    with pytest.raises(StoreUrlError) as caught:
        parse_database_url(url)
    said = str(caught.value)
    assert "PwLe" not in said and "ak9x" not in said and "***" in said, said
    assert "switchyard:***@" in said or "switchyard:***" in said, said


def test_a_user_and_a_password_with_no_scheme_are_masked_whole() -> None:
    """Read as a scheme, "admin:" left "Pw" of "Pw:Secret9" shown (a review)."""
    with pytest.raises(StoreUrlError) as caught:
        parse_database_url("admin:Pw:Secret9@127.0.0.1/db")
    assert "Pw" not in str(caught.value) and "Secret9" not in str(caught.value)
    assert "admin:***@127.0.0.1/db" in str(caught.value)


def test_an_unknown_sslmode_is_a_usage_error_not_a_database_down() -> None:
    with pytest.raises(StoreUrlError) as caught:
        parse_database_url("postgresql://u:Secret9x@db/team?sslmode=bogus")
    assert caught.value.exit_code == 2 and "sslmode=bogus is not one of disable" in str(
        caught.value
    )
    assert "Secret9x" not in str(caught.value)
    assert parse_database_url("postgresql://u@db/team?sslmode=verify-full").database == "team"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://switchyard:Le/ak9x/team",  # no '@', a '/' in the password
        "postgresql://switchyard:Pw#ak9x/team",
        "postgresql://switchyard:123456789/team",  # all digits, no port
    ],
)
def test_a_url_with_no_at_hides_all_that_follows_its_colon(url: str) -> None:
    """A review: "…:***/Le/ak/team" showed the rest of a password holding a '/'."""
    with pytest.raises(StoreUrlError) as caught:
        parse_database_url(url)
    said = str(caught.value)
    assert "ak9x" not in said and "123456789" not in said and "switchyard:***" in said, said


def test_an_ipv6_host_is_shown_whole_in_a_message() -> None:
    """Masking a URL with no '@' took an IPv6 host's colons for a password's (a review)."""
    with pytest.raises(StoreUrlError) as caught:
        parse_database_url("postgresql://[fe80::1]:5432/db?sslmode=bogus")
    assert "'postgresql://[fe80::1]:5432/db?sslmode=bogus'" in str(caught.value)


def test_only_a_refusal_of_the_urls_parameters_is_a_usage_error() -> None:
    """A server that refused a setting or a value (classes 22, 42, 0A) is the URL's doing;
    a pooler's "cannot connect to server" (08P01), a server out of memory, disk or
    connections, or starting up is away for now, where database_fallback may serve (a
    review: every other error read as refused)."""
    import asyncpg.exceptions as pg

    from app.store.postgres import refused_as_configured

    refused = (pg.UndefinedObjectError, pg.InvalidParameterValueError, pg.FeatureNotSupportedError)
    away = (
        pg.ProtocolViolationError,
        pg.OutOfMemoryError,
        pg.DiskFullError,
        pg.CannotConnectNowError,
        pg.TooManyConnectionsError,
    )
    assert all(refused_as_configured(kind("m")) for kind in refused)
    assert not any(refused_as_configured(kind("m")) for kind in away)
    assert not refused_as_configured(FileNotFoundError(2, "No such file or directory"))
    assert not refused_as_configured(ConnectionRefusedError(111, "refused"))
