"""Boundary guards: spreadsheet-safe CSV cells and server-side image fetches that cannot be
turned against our own network (SSRF). The rules are in ``reliability.md`` §3.

The fetch guard, in order, for every hop (the first URL and each redirect target):

1. only ``http`` and ``https``, a host name, no user name or password in the URL;
2. every A and AAAA record of the host must be a public unicast address (:func:`address_refusal`
   names each refusal: private, loopback, link-local such as 169.254.169.254, shared, reserved,
   multicast, unspecified, and IPv6 forms that embed an IPv4 address);
3. connect to the address validated in step 2, never resolving again (no DNS rebinding); for
   https the certificate is still checked against the host name, which is also sent as SNI;
4. a 3xx is followed by hand, up to ``max_redirects`` hops, each validated from step 1 again;
5. the body is streamed under a byte cap, connect/read timeouts and an overall deadline.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter

# ---------------------------------------------------------------------------------------------
# CSV injection (CWE-1236, OWASP ASVS 5 1.2.10)

#: A cell starting with one of these is read as a formula by spreadsheet programs (tab, CR and
#: NUL because some programs strip them before looking at the next character).
CSV_DANGEROUS_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\0")


def csv_escape(value: Any) -> str:
    """The text of one CSV cell, with a leading ``'`` when a spreadsheet would run it.

    Quoting alone is not enough: a quoted ``"=HYPERLINK(...)"`` is still a formula once opened.
    Real numbers are written as they are (``-0.5`` is a number, not a formula); everything
    else is turned into text and escaped. ``None`` is the empty cell.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    text = str(value)
    # Text already starting with quotes before a dangerous character gets one more, so that
    # removing one leading quote from such a cell always gives the original back ("'=" is
    # written "''=", not confused with an escaped "=").
    if text.lstrip("'").startswith(CSV_DANGEROUS_PREFIXES):
        return "'" + text
    return text


# ---------------------------------------------------------------------------------------------
# SSRF-guarded fetch


class FetchError(Exception):
    """A fetch that did not produce an image's bytes. ``state`` is an ``Item.ImageState`` value."""

    state = "unreachable"

    def __init__(self, message: str, *, state: str | None = None) -> None:
        super().__init__(message)
        if state is not None:
            self.state = state


class UnsafeURLError(FetchError):
    """The URL, or an address its host resolves to, is one we never connect to."""

    state = "refused"


class TooLargeError(FetchError):
    state = "too_large"


@dataclass(frozen=True)
class FetchResult:
    data: bytes
    content_type: str
    url: str  # the URL the bytes finally came from, after redirects
    address: str  # the IP address we connected to
    redirects: int


ALLOWED_SCHEMES = frozenset({"http", "https"})
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
# The IANA special-purpose registries, spelled out so the verdict does not depend on which
# Python's ``is_global`` we run on (3.11 and 3.13 disagree about parts of 192.0.0.0/24).
_SPECIAL_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.31.196.0/24",
        "192.52.193.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "192.175.48.0/24",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "::ffff:0:0/96",
        "64:ff9b::/96",
        "64:ff9b:1::/48",
        "100::/64",
        "2001::/23",
        "2001:db8::/32",
        "2002::/16",
        "3fff::/20",
        "5f00::/16",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)


def address_refusal(address: str) -> str | None:
    """Why we never connect to ``address``, or ``None`` when it is a public unicast address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"not an IP address: {address!r}"
    if isinstance(ip, ipaddress.IPv6Address):
        # IPv6 spellings of an IPv4 address are refused outright: they are the classic way
        # past a check that only looks at the IPv4 ranges ([::ffff:127.0.0.1]).
        if ip.ipv4_mapped is not None:
            return "IPv4-mapped IPv6 address"
        if ip.sixtofour is not None:
            return "6to4 address (embeds an IPv4 address)"
        if ip.teredo is not None:
            return "Teredo address (embeds an IPv4 address)"
        if ip in _NAT64 or ip in _NAT64_LOCAL:
            return "NAT64 address (embeds an IPv4 address)"
    for name, flag in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("private", ip.is_private),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
    ):
        if flag:
            return f"{name} address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "site-local address"
    if isinstance(ip, ipaddress.IPv6Address) and int(ip) >> 32 == 0:
        return "IPv4-compatible IPv6 address"
    if not ip.is_global or any(ip in net for net in _SPECIAL_NETWORKS if net.version == ip.version):
        return "not a public address"
    return None


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"cannot resolve {host!r}: {exc}") from exc
    addresses: list[str] = []
    for family, _type, _proto, _name, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            raise UnsafeURLError(f"{host!r} resolves to a non-IP address")
        address = cast(str, sockaddr[0])  # an IPv4 or IPv6 socket address starts with its host
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise FetchError(f"{host!r} has no address")
    return addresses


@dataclass(frozen=True)
class SafeTarget:
    """A validated URL and the address we will connect to for it."""

    url: str
    scheme: str
    host: str
    port: int
    address: str

    @property
    def pinned_url(self) -> str:
        """The URL with the host replaced by the validated address (the Host header and TLS
        server name keep the original host)."""
        parts = urlsplit(self.url)
        literal = f"[{self.address}]" if ":" in self.address else self.address
        netloc = f"{literal}:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))

    @property
    def host_header(self) -> str:
        default = {"http": 80, "https": 443}[self.scheme]
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def url_check(url: str) -> SafeTarget:
    """Validate ``url`` and resolve its host: the target to connect to, or ``UnsafeURLError``.

    Nothing is opened here but the resolver; a refused URL never reaches a socket.
    """
    if not isinstance(url, str) or len(url) > 4096:
        raise UnsafeURLError("not a URL")
    if any(ch in url for ch in "\r\n\t\0 "):
        raise UnsafeURLError("control characters or spaces in the URL")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeURLError(f"malformed URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise UnsafeURLError(f"scheme {scheme or '(none)'!r} is not allowed")
    if parts.username is not None or parts.password is not None:
        raise UnsafeURLError("credentials in the URL are not allowed")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UnsafeURLError("no host in the URL")
    port = port or (443 if scheme == "https" else 80)
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    addresses = [str(literal)] if literal is not None else _resolve(host, port)
    for address in addresses:
        reason = address_refusal(address)
        if reason:
            raise UnsafeURLError(f"{host} resolves to {address}: {reason}")
    return SafeTarget(url=url, scheme=scheme, host=host, port=port, address=addresses[0])


class PinnedHostAdapter(HTTPAdapter):
    """Connects to an IP address while TLS sends and verifies the original host name."""

    def __init__(self, server_hostname: str, **kwargs: Any) -> None:
        self.server_hostname = server_hostname
        super().__init__(**kwargs)

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        if host_params.get("scheme") == "https":
            pool_kwargs["server_hostname"] = self.server_hostname
            pool_kwargs["assert_hostname"] = self.server_hostname
        return host_params, pool_kwargs


def _session(target: SafeTarget) -> requests.Session:
    session = requests.Session()
    # No proxies or .netrc from the environment: they would connect somewhere we did not check.
    session.trust_env = False
    adapter = PinnedHostAdapter(target.host, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def fetch_image(
    url: str,
    *,
    max_bytes: int,
    timeout: float,
    max_redirects: int = 3,
    user_agent: str = "crowdloop/1.0 (+image fetch)",
) -> FetchResult:
    """Download an image's bytes through the SSRF guard (see the module docstring).

    Args:
        url: an http(s) URL from untrusted data (a manifest, an API call).
        max_bytes: the body is refused (``TooLargeError``) past this many bytes, declared or not.
        timeout: seconds for connect, for each read, and for the whole fetch including redirects.
        max_redirects: hops followed by hand, each one validated again.

    Raises:
        UnsafeURLError: the URL or an address of its host is refused (``state="refused"``).
        TooLargeError: the body is larger than ``max_bytes`` (``state="too_large"``).
        FetchError: network errors, timeouts, HTTP errors, too many redirects.
    """
    deadline = time.monotonic() + timeout
    current = url
    for hop in range(max_redirects + 1):
        target = url_check(current)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError("timed out")
        with _session(target) as session:
            try:
                response = session.get(
                    target.pinned_url,
                    headers={
                        "Host": target.host_header,
                        "User-Agent": user_agent,
                        "Accept": "image/*",
                    },
                    allow_redirects=False,
                    stream=True,
                    timeout=(min(timeout, remaining), min(timeout, remaining)),
                )
            except requests.RequestException as exc:
                raise FetchError(f"{type(exc).__name__}: {exc}") from exc
            with response:
                if response.status_code in REDIRECT_CODES:
                    location = response.headers.get("Location", "")
                    if not location:
                        raise FetchError(f"HTTP {response.status_code} without a Location")
                    current = urljoin(current, location)
                    continue
                if response.status_code != 200:
                    raise FetchError(f"HTTP {response.status_code}")
                data = _read_capped(response, max_bytes=max_bytes, deadline=deadline)
                return FetchResult(
                    data=data,
                    content_type=response.headers.get("Content-Type", ""),
                    url=current,
                    address=target.address,
                    redirects=hop,
                )
    raise FetchError(f"more than {max_redirects} redirects")


def _read_capped(response: requests.Response, *, max_bytes: int, deadline: float) -> bytes:
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise TooLargeError(f"declared {declared} bytes, more than {max_bytes}")
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_content(chunk_size=64 * 1024):
            size += len(chunk)
            if size > max_bytes:
                raise TooLargeError(f"more than {max_bytes} bytes")
            if time.monotonic() > deadline:
                raise FetchError("timed out while reading")
            chunks.append(chunk)
    except requests.RequestException as exc:
        raise FetchError(f"{type(exc).__name__}: {exc}") from exc
    return b"".join(chunks)
