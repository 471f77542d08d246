"""Which hosts a request may reach while ``local_only`` is on (GR-009), decided purely
(a leaf: the policy loader, the HTTP transport and the stores' URL checks all use it).

Loopback always. Besides it, exactly the local runtime endpoints the policy names
(``[runtimes.*] base_url`` on another host, and ``[privacy] local_hosts``): the GPU box
on the LAN that the seed assumes. A name is only a claim: a named host passes only when
every address it resolves to, at connect time, is loopback or private (RFC 1918, IPv6
unique-local). A cloud VM that happens to be called ``gpu-box`` resolves to a public
address and is refused; link-local (169.254.0.0/16, where cloud metadata services live)
is not private here. The transport then connects to the address it checked, so the name
cannot resolve elsewhere between the check and the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from urllib.parse import urlsplit

#: (host, port) pairs, hosts lower-cased without brackets
HostPort = tuple[str, int]
#: host, port → the addresses it resolves to now
Resolver = Callable[[str, int], Awaitable[list[str]]]
SyncResolver = Callable[[str, int], list[str]]

_PRIVATE_V4 = tuple(
    ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)
_ULA = ipaddress.IPv6Network("fc00::/7")
#: hosts no local endpoint may name: the cloud providers Switchyard knows (by suffix)
PROVIDER_DOMAINS = (
    "openai.com",
    "anthropic.com",
    "deepseek.com",
    "moonshot.ai",
    "moonshot.cn",
    "googleapis.com",
    "google.com",
    "azure.com",
    "amazonaws.com",
)


def normal_host(host: str) -> str:
    h = host.strip().lower().rstrip(".")
    return h[1:-1] if h.startswith("[") and h.endswith("]") else h


def default_port(scheme: str) -> int:
    return 443 if scheme.lower() == "https" else 80


_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)


def is_address(host: str) -> bool:
    """An IP address, not a name (``[::1]`` and ``127.0.0.1`` are; ``localhost`` is not)."""
    try:
        ipaddress.ip_address(normal_host(host))
    except ValueError:
        return False
    return True


_NUMERIC_V4 = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$")


def is_numeric_ipv4(host: str) -> bool:
    """An IPv4 address in a form the OS reads and Python's ``ipaddress`` does not:
    ``127.1``, ``0x7f000001``, ``2130706433`` (curl sends ``Host: 127.1``). No DNS name
    is all digits, so no such text is a name someone could point elsewhere. Checked by
    its shape first: ``inet_aton`` also takes ``"1.2.3.4 anything"``."""
    h = normal_host(host)
    if not _NUMERIC_V4.match(h):
        return False
    try:
        socket.inet_aton(h)
    except OSError:
        return False
    return True


def valid_host(host: str) -> bool:
    """A DNS name (letters, digits, hyphens, dots) or an IP address."""
    return is_address(host) or bool(_HOSTNAME.match(normal_host(host)))


def host_port(url: str) -> HostPort | None:
    """``http://gpu-box.lan:8000/v1`` → ("gpu-box.lan", 8000); None when there is no
    valid host (or port)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or not valid_host(parts.hostname):
        return None
    return normal_host(parts.hostname), port or default_port(parts.scheme)


def parse_host_port(text: str) -> HostPort | None:
    """``gpu-box.lan:8000`` or ``[fd00::5]:8000`` → a pair; None when malformed."""
    return host_port(text if "://" in text else f"http://{text}")


def is_loopback_address(address: str) -> bool:
    try:
        addr = ipaddress.ip_address(normal_host(address))
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


def is_private_address(address: str) -> bool:
    """Loopback, RFC 1918 or IPv6 unique-local; never link-local, never public."""
    try:
        addr = ipaddress.ip_address(normal_host(address))
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return is_private_address(str(addr.ipv4_mapped))
        return addr.is_loopback or addr in _ULA
    return addr.is_loopback or any(addr in net for net in _PRIVATE_V4)


def public_address(host: str) -> bool:
    """``host`` is an address (no name: names are looked at when called) routed on the
    public internet: nothing of this machine or its networks serves there. Only the
    globally routable are (a tailnet's 100.64/10, link-local, a lab's reserved ranges
    are someone's own network, not the internet)."""
    try:
        addr = ipaddress.ip_address(normal_host(host))
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_global


#: why a local runtime may not be at a public address
PUBLIC_RUNTIME = (
    "is a public address: a local runtime serves on this machine or its private network "
    "(its prompts go unmasked and unapproved: a user audit); tunnel it to loopback "
    "(ssh -L 8000:localhost:8000 HOST), use its private address, or, when it is your own "
    "machine (a LAN of public addresses), list HOST:PORT in [privacy] local_hosts"
)


def public_runtime(hp: HostPort, local_hosts: Iterable[str]) -> bool:
    """A runtime endpoint at a public address the policy's ``[privacy] local_hosts`` does
    not name as the user's own: refused (:data:`PUBLIC_RUNTIME`)."""
    listed = named_local_hosts((), local_hosts)
    return public_address(hp[0]) and (normal_host(hp[0]), hp[1]) not in listed


def is_provider_host(host: str, extra: Iterable[str] = ()) -> bool:
    """True when ``host`` is, or is under, a known cloud provider's domain."""
    h = normal_host(host)
    return any(h == d or h.endswith("." + d) for d in (*PROVIDER_DOMAINS, *extra))


def named_host_refusal(
    host: str, port: int, named: frozenset[HostPort], addresses: Sequence[str]
) -> str | None:
    """Why a request to a non-loopback ``host:port`` is refused under local_only, or None
    when it may go (it is named, and every address it resolves to is private)."""
    key = (normal_host(host), port)
    if key not in named:
        return "not a local host the policy names"
    if not addresses:
        return f"{host} does not resolve"
    public = [a for a in addresses if not is_private_address(a)]
    if public:
        return f"{host} resolves to {public[0]}, which is not a loopback or private address"
    return None


def named_local_hosts(runtime_urls: Iterable[str], listed: Iterable[str]) -> frozenset[HostPort]:
    """The non-loopback endpoints a policy names as local: its runtimes' URLs and its
    ``[privacy] local_hosts`` entries (malformed entries are the loader's to report)."""
    pairs = [host_port(u) for u in runtime_urls] + [parse_host_port(h) for h in listed]
    return frozenset(p for p in pairs if p is not None and not is_loopback_name(p[0]))


def is_loopback_name(host: str) -> bool:
    """Loopback by its text alone (no DNS): 127.0.0.0/8, ::1, ``localhost``."""
    h = normal_host(host)
    return h == "localhost" or is_loopback_address(h)


async def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to now (an empty list when it does not)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def resolve_sync(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def http_url(host: str, port: int) -> str:
    """``http://host:port``; an IPv6 literal in brackets (RFC 3986), its zone's ``%``
    escaped (RFC 6874): ``http://[::1]:4000``, ``http://[fe80::1%25eth0]:4000``."""
    if ":" in host:
        return f"http://[{host.replace('%', '%25')}]:{port}"
    return f"http://{host}:{port}"


def bind_error(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on now (as uvicorn would bind), or None."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        return str(exc)
    for family, kind, proto, _, address in infos:
        with contextlib.closing(socket.socket(family, kind, proto)) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                return exc.strerror or str(exc)
    return None
