"""A plain web server on 127.0.0.1 that tests script route by route (``server``), and a switch
that lets the fetch machinery reach it (``loopback_allowed``); fixtures of tests/annotate/."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from annotate import security


class Server:
    def __init__(self) -> None:
        self.hits: list[tuple[str, str]] = []  # (path, Host header)
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}


@pytest.fixture
def server() -> Iterator[tuple[Server, int]]:
    state = Server()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            state.hits.append((self.path, self.headers.get("Host", "")))
            status, headers, body = state.routes.get(self.path, (404, {}, b""))
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            if "Transfer-Encoding" in headers:
                self.end_headers()
                for i in range(0, len(body), 1000):
                    part = body[i : i + 1000]
                    self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
                return
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state, httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def loopback_allowed(monkeypatch):
    """Pretend 127.0.0.1 is public, so the fetch machinery can be tested against a local server;
    every other address keeps its real verdict."""
    real = security.address_refusal
    monkeypatch.setattr(
        security, "address_refusal", lambda a: None if a == "127.0.0.1" else real(a)
    )
