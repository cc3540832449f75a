"""The boundary guards: CSV cells a spreadsheet will not run (S10), and image fetches that never
reach our own network (S8, S9), with property tests of both."""

from __future__ import annotations

import csv
import io
import ipaddress
import socket

import pytest
import requests
from hypothesis import example, given, settings
from hypothesis import strategies as st

from annotate.security import (
    CSV_DANGEROUS_PREFIXES,
    FetchError,
    PinnedHostAdapter,
    TooLargeError,
    UnsafeURLError,
    csv_escape,
    fetch_image,
    url_check,
)

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


# --- CSV --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '=HYPERLINK("http://evil.example","x")',
        "+cmd|' /C calc'!A0",
        "-1+1",
        "@SUM(1)",
        "\t=1",
        "\r=1",
        "\0=1",
    ],
)
def test_a_cell_that_a_spreadsheet_would_run_starts_with_a_quote(text):
    assert csv_escape(text) == "'" + text


@pytest.mark.parametrize("text", ["painting", "Ölgemälde", "1+1", " =x", "", "a=b"])
def test_a_harmless_cell_is_left_alone(text):
    assert csv_escape(text) == text


def test_numbers_stay_numbers():
    assert csv_escape(-0.5) == "-0.5"
    assert csv_escape(3) == "3"
    assert csv_escape(None) == ""


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_no_escaped_cell_starts_with_a_dangerous_character(text):
    assert not csv_escape(text).startswith(CSV_DANGEROUS_PREFIXES)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(), min_size=1, max_size=6))
@example(["'="])  # a quote before a dangerous character, as hypothesis once found
def test_escaped_cells_round_trip_through_the_csv_module(cells):
    buffer = io.StringIO()
    csv.writer(buffer).writerow([csv_escape(c) for c in cells])
    [row] = list(csv.reader(io.StringIO(buffer.getvalue(), newline="")))
    unescaped = [
        c[1:] if c.startswith("'") and c.lstrip("'").startswith(CSV_DANGEROUS_PREFIXES) else c
        for c in row
    ]
    assert unescaped == cells


# --- URL guard --------------------------------------------------------------------------------


@pytest.fixture
def no_sockets(monkeypatch):
    """Fail the test if anything tries to open a connection."""

    def refuse(*args, **kwargs):
        raise AssertionError("a socket was opened")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def fake_dns(monkeypatch, answers: dict[str, list[str]] | None = None, calls=None):
    """Resolve names from ``answers``; each value may be a list of lists (one per call)."""

    def getaddrinfo(host, port, *args, **kwargs):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:  # an address resolves to itself, as the real resolver does
            return _infos([host], port)
        if calls is not None:
            calls.append(host)
        try:
            addresses = answers[host]
        except (KeyError, TypeError):
            raise socket.gaierror(socket.EAI_NONAME, "unknown host") from None
        if addresses and isinstance(addresses[0], list):
            addresses = addresses.pop(0) if len(addresses) > 1 else addresses[0]
        return _infos(addresses, port)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def _infos(addresses: list[str], port) -> list[tuple]:
    out = []
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sockaddr = (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)
        out.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
    return out


PRIVATE_NETWORKS = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::1/128",
    "::/128",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
]


@st.composite
def private_addresses(draw) -> str:
    network = ipaddress.ip_network(draw(st.sampled_from(PRIVATE_NETWORKS)))
    offset = draw(st.integers(0, network.num_addresses - 1))
    address = network[offset]
    if isinstance(address, ipaddress.IPv4Address) and draw(st.booleans()):
        # The same address in an IPv6 disguise.
        form = draw(st.sampled_from(["mapped", "compat", "6to4", "nat64"]))
        v4 = int(address)
        address = ipaddress.IPv6Address(
            {
                "mapped": (0xFFFF << 32) | v4,
                "compat": v4,
                "6to4": (0x2002 << 112) | (v4 << 80),
                "nat64": (0x64FF9B << 96) | v4,
            }[form]
        )
    return str(address)


def literal_url(address: str, port: int | None = None, scheme: str = "http") -> str:
    host = f"[{address}]" if ":" in address else address
    return f"{scheme}://{host}{f':{port}' if port else ''}/image.png"


@settings(max_examples=400, deadline=None)
@given(private_addresses(), st.sampled_from(["http", "https"]), st.none() | st.integers(1, 65535))
def test_every_private_or_special_address_is_refused_as_a_literal(address, scheme, port):
    with pytest.raises(UnsafeURLError):
        url_check(literal_url(address, port, scheme))


@settings(max_examples=200, deadline=None)
@given(st.lists(private_addresses(), min_size=1, max_size=3), st.booleans())
def test_a_host_with_any_private_address_is_refused(addresses, public_first):
    answers = (["93.184.216.34"] if public_first else []) + addresses
    with pytest.MonkeyPatch.context() as mp:
        fake_dns(mp, {"images.example.org": answers})
        with pytest.raises(UnsafeURLError):
            url_check("https://images.example.org/a.jpg")


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:6379/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]:80/",
        "http://10.0.0.5/a.png",
        "http://0.0.0.0/",
        "http://localhost/",
        "http://2130706433/",
        "http://0x7f.1/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/_INFO",
        "ftp://images.example.org/a.png",
        "http://user:pass@images.example.org/a.png",
        "//images.example.org/a.png",
        "http:///a.png",
        "http://images.example.org/a.png\r\nX-Injected: 1",
    ],
)
def test_s8_a_dangerous_url_is_refused_before_any_socket_opens(url, monkeypatch, no_sockets):
    fake_dns(monkeypatch, {"localhost": ["127.0.0.1"], "images.example.org": ["93.184.216.34"]})
    with pytest.raises(FetchError) as caught:
        fetch_image(url, max_bytes=1000, timeout=2)
    assert caught.value.state in {"refused", "unreachable"}


def test_a_public_address_passes_the_check(monkeypatch):
    fake_dns(monkeypatch, {"images.example.org": ["93.184.216.34", "2606:2800:220:1::1"]})
    target = url_check("https://images.example.org/a.jpg?x=1")
    assert target.address == "93.184.216.34"
    assert target.pinned_url == "https://93.184.216.34:443/a.jpg?x=1"
    assert target.host_header == "images.example.org"


def test_https_connections_send_and_verify_the_original_host_name():
    adapter = PinnedHostAdapter("images.example.org")
    request = requests.Request("GET", "https://93.184.216.34:443/a.jpg").prepare()
    _host, pool_kwargs = adapter.build_connection_pool_key_attributes(request, True)
    assert pool_kwargs["server_hostname"] == "images.example.org"
    assert pool_kwargs["assert_hostname"] == "images.example.org"


# --- Against a real server on 127.0.0.1 --------------------------------------------------------


def test_s8_a_server_on_loopback_is_never_contacted(server):
    state, port = server
    state.routes["/a.png"] = (200, {"Content-Type": "image/png"}, PNG)
    with pytest.raises(UnsafeURLError):
        fetch_image(f"http://127.0.0.1:{port}/a.png", max_bytes=10_000, timeout=2)
    with pytest.raises(UnsafeURLError):
        fetch_image(f"http://[::ffff:127.0.0.1]:{port}/a.png", max_bytes=10_000, timeout=2)
    assert state.hits == []


def test_the_connection_goes_to_the_checked_address_with_the_original_host(
    server, loopback_allowed, monkeypatch
):
    state, port = server
    state.routes["/a.png"] = (200, {"Content-Type": "image/png"}, PNG)
    calls: list[str] = []
    # DNS rebinding: the first answer passes, a second lookup would give a private address.
    fake_dns(monkeypatch, {"images.example.org": [["127.0.0.1"], ["10.0.0.5"]]}, calls)
    result = fetch_image(f"http://images.example.org:{port}/a.png", max_bytes=10_000, timeout=2)
    assert result.data == PNG
    assert result.address == "127.0.0.1"
    assert calls == ["images.example.org"]  # resolved once, then pinned
    assert state.hits == [("/a.png", f"images.example.org:{port}")]


def test_s9_a_redirect_to_loopback_is_refused(server, loopback_allowed, monkeypatch):
    """The first hop is 'public' (a stand-in), its redirect points at 10.0.0.5 and localhost."""
    state, port = server
    fake_dns(monkeypatch, {"images.example.org": ["127.0.0.1"], "localhost": ["::1"]})
    for target in ("http://10.0.0.5/", "http://localhost:6379/", "http://169.254.169.254/"):
        state.routes["/r"] = (302, {"Location": target}, b"")
        with pytest.raises(UnsafeURLError):
            fetch_image(f"http://images.example.org:{port}/r", max_bytes=10_000, timeout=2)


def test_s9_a_redirect_to_a_private_address_opens_no_connection_to_it(monkeypatch, server):
    """Without any relaxing: a public host (faked) answers with a redirect to our loopback
    server; the loopback server is never contacted."""
    state, port = server
    state.routes["/a.png"] = (200, {}, PNG)
    fake_dns(monkeypatch, {"images.example.org": ["93.184.216.34"]})
    sent: list[tuple[str, str]] = []

    def send(self, request, **kwargs):
        sent.append((request.url, request.headers["Host"]))
        response = requests.Response()
        response.status_code = 302
        response.headers["Location"] = f"http://127.0.0.1:{port}/a.png"
        response.raw = io.BytesIO(b"")
        response.url = request.url
        response.request = request
        return response

    monkeypatch.setattr(PinnedHostAdapter, "send", send)
    with pytest.raises(UnsafeURLError):
        fetch_image("https://images.example.org/a.png", max_bytes=10_000, timeout=2)
    assert sent == [("https://93.184.216.34:443/a.png", "images.example.org")]
    assert state.hits == []


def test_s9_dns_that_answers_public_then_private_is_refused(monkeypatch, no_sockets):
    fake_dns(monkeypatch, {"images.example.org": ["93.184.216.34", "127.0.0.1"]})
    with pytest.raises(UnsafeURLError):
        fetch_image("https://images.example.org/a.png", max_bytes=10_000, timeout=2)


def test_redirects_are_followed_by_hand_and_counted(server, loopback_allowed):
    state, port = server
    state.routes["/1"] = (301, {"Location": "/2"}, b"")
    state.routes["/2"] = (307, {"Location": f"http://127.0.0.1:{port}/a.png"}, b"")
    state.routes["/a.png"] = (200, {"Content-Type": "image/png"}, PNG)
    result = fetch_image(f"http://127.0.0.1:{port}/1", max_bytes=10_000, timeout=2)
    assert (result.data, result.redirects) == (PNG, 2)
    with pytest.raises(FetchError, match="redirects"):
        fetch_image(f"http://127.0.0.1:{port}/1", max_bytes=10_000, timeout=2, max_redirects=1)


def test_a_body_past_the_cap_is_refused_with_or_without_a_length(server, loopback_allowed):
    state, port = server
    state.routes["/big"] = (200, {}, b"x" * 5000)
    state.routes["/chunked"] = (200, {"Transfer-Encoding": "chunked"}, b"x" * 5000)
    for path in ("/big", "/chunked"):
        with pytest.raises(TooLargeError) as caught:
            fetch_image(f"http://127.0.0.1:{port}{path}", max_bytes=4096, timeout=2)
        assert caught.value.state == "too_large"


def test_an_http_error_is_a_fetch_error(server, loopback_allowed):
    _state, port = server
    with pytest.raises(FetchError, match="404"):
        fetch_image(f"http://127.0.0.1:{port}/missing", max_bytes=4096, timeout=2)


def test_a_server_that_never_answers_times_out(loopback_allowed):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    try:
        with pytest.raises(FetchError) as caught:
            fetch_image(
                f"http://127.0.0.1:{listener.getsockname()[1]}/", max_bytes=100, timeout=0.5
            )
        assert caught.value.state == "unreachable"
    finally:
        listener.close()
