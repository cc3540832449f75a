"""The client's address: ``REMOTE_ADDR``, or what a trusted proxy says it is.

Every throttle and lockout keys on the client's address (the API's DRF throttles, the failed token
counter of ``annotate.api.authentication``, django-axes on the admin login), and each of them reads
``request.META["REMOTE_ADDR"]`` only. ``X-Forwarded-For`` is written by whoever sends the request,
so it is believed only as far as the deployment vouches for it: with ``TRUSTED_PROXIES`` empty (the
default) it is ignored entirely. When the immediate peer is a trusted proxy, the header is read from
the right, each entry having been appended by the hop to its right, past every trusted proxy; the
first address that is not one is the client. Entries left of it are whatever the client wrote and
are never read. A malformed entry ends the walk at the last trusted hop, which is then the address
counted: a proxy we trust would not write garbage, so the garbage came from beyond it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@lru_cache(maxsize=8)
def trusted_networks(proxies: tuple[str, ...]) -> tuple[Network, ...]:
    """``TRUSTED_PROXIES`` entries (addresses or CIDR ranges) as networks; a bad one is refused."""
    networks = []
    for entry in proxies:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ImproperlyConfigured(
                f"TRUSTED_PROXIES must list IP addresses or CIDR ranges, not {entry!r}."
            ) from None
    return tuple(networks)


def _parse(entry: str) -> Address | None:
    """One ``X-Forwarded-For`` entry, with or without a port; None when it is no address."""
    entry = entry.strip()
    if entry.startswith("[") and "]" in entry:  # [2001:db8::1]:443
        entry = entry[1 : entry.index("]")]
    elif entry.count(":") == 1:  # 203.0.113.9:5123
        entry = entry.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(entry)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _trusted(address: Address, networks: Iterable[Network]) -> bool:
    return any(address in network for network in networks)


def client_address(meta: Mapping[str, str], networks: tuple[Network, ...]) -> str:
    """The client's address for a request's ``META``, believing only trusted proxies."""
    remote = meta.get("REMOTE_ADDR", "")
    peer = _parse(remote)
    if not networks or peer is None or not _trusted(peer, networks):
        return remote
    client = peer
    for entry in reversed(meta.get("HTTP_X_FORWARDED_FOR", "").split(",")):
        hop = _parse(entry)
        if hop is None:
            break
        client = hop
        if not _trusted(hop, networks):
            break
    return str(client)


def request_client_address(request: HttpRequest) -> str:
    """The address the throttles count (``REMOTE_ADDR``, set by the middleware below)."""
    return request.META.get("REMOTE_ADDR", "")


class ClientAddressMiddleware:
    """Set ``REMOTE_ADDR`` to the client's address, so every later reader of it is right.

    First in ``MIDDLEWARE``: the admin login lockout (django-axes) and the API throttles read the
    address after it.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        trusted_networks(tuple(settings.TRUSTED_PROXIES))  # refuse a bad setting at start

    def __call__(self, request: HttpRequest) -> HttpResponse:
        networks = trusted_networks(tuple(settings.TRUSTED_PROXIES))
        if networks:
            request.META["REMOTE_ADDR"] = client_address(request.META, networks)
        return self.get_response(request)
