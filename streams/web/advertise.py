"""The URL other workers reach this one at (Faust's ``canonical_url``).

Every worker tells the consumer group its URL, and a worker forwards a request about an agent to
the URL of the worker that owns the agent's partition. Faust builds that URL from the address the
server binds to, so a worker bound to ``0.0.0.0`` (as in a container) would tell everyone to call
``http://0.0.0.0:6066``: itself. Hence:

- ``TRUST_WEB_ADVERTISED_URL``, when set, is the URL (``http://scorer-2.internal:6066``); a URL
  whose host is an unspecified address (``0.0.0.0``, ``::``) is refused at start;
- unset, and bound to one address: that address;
- unset, and bound to every address: the address of this host's interface towards the first
  Kafka broker (the network the workers share with the brokers), found by routing a UDP socket
  (no packet is sent); failing that, the host's name.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

#: Hosts that mean "every interface" when bound, and nothing when called.
_UNSPECIFIED_NAMES = {"", "*", "0.0.0.0", "::", "[::]"}


def is_unspecified(host: str) -> bool:
    if host in _UNSPECIFIED_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False  # a name


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server to this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    """A host as it goes in a URL (IPv6 addresses in brackets)."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host
    return f"[{address}]" if address.version == 6 else str(address)


def check_advertised_url(url: str) -> str:
    """``url`` without a trailing slash, or ValueError saying what is wrong with it ("" passes:
    the default is used)."""
    url = url.strip()
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"web_advertised_url {url!r} is not an http(s) URL such as http://scorer-1:6066"
        )
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise ValueError(f"web_advertised_url {url!r} must be a scheme, host and port only")
    try:
        parts.port  # noqa: B018 (raises on a port that is not a number in range)
    except ValueError as exc:
        raise ValueError(f"web_advertised_url {url!r}: {exc}") from exc
    if is_unspecified(parts.hostname or ""):
        raise ValueError(
            f"web_advertised_url {url!r} names no host other workers can call (an unspecified "
            "address means 'every interface' only when binding): advertise this worker's host "
            "name or IP address"
        )
    return url.rstrip("/")


def _first_broker(bootstrap_servers: str) -> tuple[str, int]:
    first = bootstrap_servers.split(",")[0].strip()
    first = first.split("://", 1)[-1]  # a listener name, if any
    host, _, port = first.rpartition(":")
    return host.strip("[]") or first, int(port) if port.isdigit() else 9092


def route_address(bootstrap_servers: str) -> str | None:
    """This host's address on the route to the first broker (no packet is sent), or None."""
    host, port = _first_broker(bootstrap_servers)
    with contextlib.suppress(OSError, UnicodeError, ValueError):
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(address)
            own = str(probe.getsockname()[0])
            return None if is_unspecified(own) else own
    return None


def default_advertised_url(
    web_host: str,
    web_port: int,
    bootstrap_servers: str,
    *,
    route: Callable[[str], str | None] = route_address,
    hostname: Callable[[], str] = socket.gethostname,
) -> str:
    """The URL to advertise when none is configured (see the module's docstring)."""
    host = web_host
    if is_unspecified(web_host):
        host = route(bootstrap_servers) or hostname()
    return f"http://{_url_host(host)}:{web_port}"


def advertised_url(configured: str, web_host: str, web_port: int, bootstrap_servers: str) -> str:
    """The configured URL (checked again), else the default."""
    return check_advertised_url(configured) or default_advertised_url(
        web_host, web_port, bootstrap_servers
    )
