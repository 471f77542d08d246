"""The database URL: ``postgresql://user:password@host:port/database?…``, checked before
anything connects, so a typo is a usage error (exit 2), never a silent SQLite."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, quote, unquote, urlsplit

from app.hosts import normal_host, valid_host
from app.store.errors import StoreUrlError

SCHEMES = ("postgresql", "postgres")
#: libpq's (and asyncpg's) sslmode values
#: how a password's URL characters are written (said where one was misread)
ESCAPES = "a '/', '?', '#' or '@' in the password is written %2F, %3F, %23, %40"
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
DEFAULT_PORT = 5432


@dataclass(frozen=True, slots=True)
class DatabaseUrl:
    raw: str
    #: the TCP host, or None when the server is reached on a unix socket (``socket_dir``)
    host: str | None
    port: int
    database: str
    user: str | None
    socket_dir: str | None = None

    def display(self) -> str:
        """The URL without its password (what messages and audit lines show)."""
        who = f"{quote(self.user)}@" if self.user else ""
        if self.host is None:
            return f"postgresql://{who}/{self.database}?host={self.socket_dir}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"postgresql://{who}{host}:{self.port}/{self.database}"

    def missing_files(self) -> tuple[str, str] | None:
        """The first of the URL's SSL files (``?sslrootcert=`` …) that is not there, as
        (parameter, path); None when each is (``system`` names the system's roots)."""
        query = parse_qs(urlsplit(self.raw).query, keep_blank_values=True)
        if query.get("sslmode", [""])[-1] == "disable":
            return None  # (asyncpg reads none of them then)
        for key in SSL_FILES:
            for value in query.get(key, []):
                if value and value != "system" and not Path(value).expanduser().exists():
                    return key, value
        return None

    def setting(self, name: str) -> str | None:
        """The server setting the URL's query sets ``name`` to (a key asyncpg does not
        read itself goes to the server as a setting, whose names ignore case; the last of
        a repeated key, as asyncpg takes it), or None."""
        found = None
        for key, value in parse_qsl(urlsplit(self.raw).query, keep_blank_values=True):
            if key.lower() == name:
                found = value
        return found

    def secrets(self) -> list[str]:
        """The password as written and as read (``%40`` and ``@``), from the user part and
        any ``?password=``: what a message about this URL must not quote."""
        parts = urlsplit(self.raw)
        found = [parts.password or ""]
        for key, values in parse_qs(parts.query, keep_blank_values=True).items():
            if key.lower() in ("password", "sslpassword"):
                found += values
        found += [unquote(v) for v in found]
        return sorted({f for f in found if f}, key=len, reverse=True)


#: the URL's parameters that name a file asyncpg reads
SSL_FILES = ("sslrootcert", "sslcert", "sslkey", "sslcrl")

#: libpq's connection parameters that asyncpg does not read (it would pass them to the
#: server as settings, which refuses them)
LIBPQ_ONLY = frozenset(
    {
        "connect_timeout",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "tcp_user_timeout",
        "options",
        "fallback_application_name",
        "gssencmode",
        "channel_binding",
        "requirepeer",
        "replication",
        "hostaddr",
        "load_balance_hosts",
    }
)


def parse_database_url(text: str) -> DatabaseUrl:
    """A checked URL, or :class:`StoreUrlError` saying what is wrong with it.

    The URL names one server, one way: asyncpg reads a repeated ``?host=`` by its last
    value, a comma list as failover hosts, ``?service=`` from a file, and splits the
    user part at the first ``@`` where this parser takes the last. Each of those could
    have it connect elsewhere than the host checked here (a ``?host=/socket`` first and
    a TCP host after it passed for a socket under local_only), so each is refused, and
    the pool connects to the host and port checked here, never to the DSN's own.
    """
    shown = _masked(text)
    try:
        parts = urlsplit(text.strip())
        port = parts.port
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        found = _password_part(text.strip())
        password = text.strip()[found[0] : found[1]] if found else ""
        if any(piece in str(exc) for piece in re.split(r"[/?#]", password) if piece):
            # urlsplit's text quotes the piece it could not read, a password's piece
            # when the password holds a '/', '?' or '#' ("…integer value as 'Secr'")
            why = f"not a URL that parses ({ESCAPES})"
            if "@" not in text:
                why = (
                    "the user and password end with '@' (user:password@host:port/database, "
                    "or user:password@/database?host=/socket/dir)"
                )
            raise StoreUrlError(f"database URL {shown}: {why}") from None
        raise StoreUrlError(f"database URL {shown}: {exc}") from None
    if parts.scheme not in SCHEMES:
        raise StoreUrlError(f"database URL {shown}: expected postgresql://user@host:port/database")
    if parts.netloc.count("@") > 1:
        raise StoreUrlError(f"database URL {shown}: write an '@' in the password as %40")
    for key in ("host", "port"):
        values = query.get(key, [])
        if len(values) > 1 or any("," in v for v in values):
            raise StoreUrlError(f"database URL {shown}: name one {key} (no failover list)")
    modes = query.get("sslmode", [])
    if any(m not in SSL_MODES for m in modes) or len(modes) > 1:
        # it was "cannot reach the team database" (exit 1), as if the server were down
        raise StoreUrlError(
            f"database URL {shown}: sslmode={','.join(modes)} is not one of {', '.join(SSL_MODES)}"
        )
    if "service" in query:
        raise StoreUrlError(f"database URL {shown}: ?service= is not taken: name the host")
    _one_user_and_password(parts.username, parts.password, query, shown)
    libpq = sorted(LIBPQ_ONLY & query.keys())
    if libpq:
        # asyncpg sends a key it does not know to the server as a setting: it read
        # "cannot reach the team database: unrecognized configuration parameter"
        raise StoreUrlError(
            f"database URL {shown}: ?{libpq[0]}= is libpq's and not taken here (Switchyard "
            "waits 5 s for a connection and 15 s for a statement, and keeps no other)"
        )
    socket_dir: str | None = (query.get("host") or [""])[0] or None
    host = parts.hostname
    if host is not None and "," in (parts.netloc.rsplit("@", 1)[-1]):
        raise StoreUrlError(f"database URL {shown}: name one host (no failover list)")
    if host is not None and socket_dir is not None:
        raise StoreUrlError(f"database URL {shown}: the host is named twice (@host and ?host=)")
    if host is None and not (socket_dir and socket_dir.startswith("/")):
        raise StoreUrlError(f"database URL {shown}: no host (and no ?host=/socket/dir)")
    if host is not None and not valid_host(host):
        raise StoreUrlError(f"database URL {shown}: {host!r} is not a host name or address")
    if "port" in query:
        if port is not None:
            raise StoreUrlError(f"database URL {shown}: the port is named twice (:port and ?port=)")
        given = query["port"][0]
        if not given.isdigit() or not 0 < int(given) < 65536:
            raise StoreUrlError(f"database URL {shown}: ?port={given} is not a port")
        port = int(given)
    database = parts.path.lstrip("/")
    if "@" in database:
        # "postgresql://user:2024/Spring@db.lan" (no database) read as host "user", port
        # 2024, database "Spring@db.lan", and its display showed the password whole
        raise StoreUrlError(f"database URL {shown}: {ESCAPES}")
    named = [key for key in ("dbname", "database") if key in query]
    if named:
        # asyncpg takes the path's and drops the query's: the connection went to /team
        # for a URL that said ?dbname=sy2 (a team-store audit)
        why = (
            f"the database is named twice (/database and ?{named[0]}=)"
            if database
            else f"?{named[0]}= is not taken"
        )
        raise StoreUrlError(f"database URL {shown}: {why}: name it in the path (…/switchyard)")
    if not database or "/" in database:
        raise StoreUrlError(f"database URL {shown}: name the database (…/switchyard)")
    return DatabaseUrl(
        raw=text.strip(),
        host=normal_host(host) if host is not None else None,
        port=port or DEFAULT_PORT,
        database=database,
        # (a ?user= alone is the user asyncpg connects as: _one_user_and_password)
        user=parts.username or next(iter(query.get("user", [])), None),
        socket_dir=socket_dir if host is None else None,
    )


def _one_user_and_password(
    user: str | None, password: str | None, query: dict[str, list[str]], shown: str
) -> None:
    """The user and the password, each given once: asyncpg takes the user part's and
    drops the query's (``?user=postgres`` connected as the URL's user, unsaid), and the
    last of a repeated key. Either alone in the query is taken (the password's is masked
    in every message, ``shown`` too)."""
    given = (("user", user, "named", "user@"), ("password", password, "given", ":password@"))
    for key, before, verb, spelled in given:
        values = query.get(key, [])
        if len(values) > 1:
            raise StoreUrlError(f"database URL {shown}: the {key} is {verb} twice (?{key}=)")
        if values and before:
            raise StoreUrlError(
                f"database URL {shown}: the {key} is {verb} twice ({spelled} and ?{key}=)"
            )


def _masked(text: str) -> str:
    """``text`` with any password cut out (``user:…@`` and ``?password=``), for an error
    about a URL that did not parse: however malformed its scheme (``postgres:/``,
    ``postgresql:``, none at all), and whatever the password holds ('/', '?', '#')."""
    text = text.strip()
    found = _password_part(text)
    if found is not None:
        start, end = found
        text = f"{text[:start]}***{text[end:]}"
    return repr(_QUERY_PASSWORD.sub(r"\1***", text)[:120])


def _password_part(text: str) -> tuple[int, int] | None:
    """Where the ``user:password`` part's password lies in ``text`` (start, end), or
    None: between the user's ':' and the last '@', after any scheme and slashes."""
    at = text.rfind("@")
    head = _SCHEME.match(text)
    if at < 0:
        # no '@': "postgresql://switchyard:Secret/team" (the host left out) read the
        # password as the host's port, and the error quoted it whole (a team-store audit):
        # whatever follows the first ':' of the netloc is hidden unless it is a port
        if head is None or text.startswith("[", head.end()):
            return None  # (an IPv6 host's colons are the host's: "[::1]:5432")
        end = next((i for i, c in enumerate(text) if i >= head.end() and c in "/?#"), len(text))
        colon = text.find(":", head.end(), end)
        if colon < 0:
            return None
        after = text[colon + 1 : end]
        if after.isdigit() and 0 < int(after) < 65536:
            return None  # a port
        # what follows may hold a '/', '?' or '#' of the password: hidden to the end (a
        # review found "…:***/Le/ak/team" showed the rest of "Le/ak")
        return (colon + 1, len(text))
    user_start = 0
    bare = head is not None and head.group(2) == ":"
    if head is not None and (not bare or head.group(1).lower() in SCHEMES):
        # a scheme ("postgres:/", "postgresql//", "mysql://"; bare, as "postgresql:", only
        # our own: "switchyard:pw@" and "admin:Pw:Secret9@" are a user and a password)
        user_start = head.end()
    colon = text.find(":", user_start, at)
    return (colon + 1, at) if colon >= 0 else None


#: a password given as a query parameter (asyncpg takes ``?password=``, any case)
_QUERY_PASSWORD = re.compile(r"(?i)([?&](?:ssl)?password=)[^&#]*")
#: what comes before the user: a scheme, however mistyped (``postgres:/``, ``postgresql``)
_SCHEME = re.compile(r"(?i)^([a-z][a-z0-9+.-]*)(:/*|//)")
