"""A local stand-in for download.pytorch.org: an http.server on 127.0.0.1 serving given bytes."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class WeightsServer:
    """Serves ``files[name]`` at ``/models/<name>``; ``requests`` lists every path asked for.

    ``short[name] = n`` announces the whole length but sends only the first ``n`` bytes and
    closes: a download cut short.
    """

    port: int = 0
    files: dict[str, bytes] = field(default_factory=dict)
    short: dict[str, int] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/models"

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"


@contextmanager
def weights_server() -> Iterator[WeightsServer]:
    state = WeightsServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            state.requests.append(self.path)
            name = self.path.removeprefix("/models/")
            body = state.files.get(name)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: state.short.get(name, len(body))])
            self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (connections are refused: "offline")."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
