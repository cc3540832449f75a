"""The sandbox's HTTP server: faults applied per request, loopback only."""

from __future__ import annotations

import socket
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .faults import FaultAction
from .panoptes import Sandbox
from .wire import Request, RequestLogEntry, Response, error_response

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class SandboxServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    @property
    def endpoint(self) -> str:
        host, port = self.server_address[:2]
        # Once bound this is the socket's getsockname(), whose IP host is text, never bytes.
        assert isinstance(host, str), f"an IP server's host is text, not {host!r}"
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}"

    def shutdown(self) -> None:
        # Wake hanging fault handlers so shutdown is not held up by a simulated hang, and stop
        # a live crowd that was started over HTTP with this server.
        self.sandbox.stopping.set()
        self.sandbox.live_crowd_stop()
        super().shutdown()

    def __enter__(self) -> SandboxServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: SandboxServer
    server_version = "crowdloop-panoptes-sandbox/1.0"
    # HTTP/1.0: one request per connection, so a cut or reset only ever affects one response.
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        # The sandbox keeps its own request log; stderr noise would bury test output.
        return

    def _dispatch(self, method: str) -> None:
        sandbox = self.server.sandbox
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        request = Request(
            method=method,
            path=split.path,
            query=query,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            base_url=f"http://{host}",
        )
        sandbox.base_url = request.base_url
        fault = None
        if not split.path.startswith("/_sandbox/"):
            fault = sandbox.faults.match(method, split.path, query)
        self._log(request, body, fault)
        if fault is not None and fault.kind == "reset":
            self._finish_log(0)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault is not None and fault.kind == "status":
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            message = fault.message or f"Sandbox fault: HTTP {fault.status}"
            self._send(error_response(fault.status, message, headers))
            return
        if fault is not None and fault.kind == "hang":
            sandbox.stopping.wait(fault.seconds)
        response = sandbox.handle(request, fault)
        if fault is not None and fault.kind == "after":
            # The work is done and stored; only the answer is lost (duplicate-create hazard).
            response = error_response(fault.status, fault.message or "Sandbox fault after commit")
        cut = fault.fraction if fault is not None and fault.kind == "cut" else None
        self._send(response, cut=cut)

    def _log(self, request: Request, body: bytes, fault: FaultAction | None) -> None:
        params = dict(request.query)
        if request.path == "/oauth/token":
            # Keep the grant type for tests; never keep secrets.
            form = request.form()
            params["grant_type"] = form.get("grant_type", "")
        self._entry = RequestLogEntry(
            request.method, request.path, params, 0, fault.kind if fault else None
        )
        with self.server.sandbox.lock:
            self.server.sandbox.request_log.append(self._entry)

    def _finish_log(self, status: int) -> None:
        self._entry.status = status

    def _send(self, response: Response, cut: float | None = None) -> None:
        self._finish_log(response.status)
        try:
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if cut is None:
                self.wfile.write(response.body)
            else:
                # Promise the whole body, deliver part of it, hang up: a download cut mid-body.
                self.wfile.write(response.body[: int(len(response.body) * cut)])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
        except (BrokenPipeError, ConnectionResetError, OSError):
            # The client gave up (read timeout during a hang fault); nothing left to do.
            self.close_connection = True


def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    sandbox: Sandbox | None = None,
    vocabulary: Sequence[str] | None = None,
    **sandbox_kwargs: Any,
) -> tuple[SandboxServer, threading.Thread]:
    """Start the sandbox on a loopback address in a daemon thread.

    Pass a ready ``sandbox`` or a ``vocabulary`` (plus any ``Sandbox`` keyword). ``port=0`` picks
    a free port; read it back from ``server.endpoint``. Stop with ``server.shutdown()`` and
    ``server.server_close()``.
    """
    if host not in LOOPBACK_HOSTS:
        # The sandbox accepts any credentials, so it must never listen beyond this machine.
        raise ValueError(
            f"the sandbox binds loopback only ({', '.join(LOOPBACK_HOSTS)}), not {host!r}"
        )
    if sandbox is None:
        if vocabulary is None:
            raise ValueError("pass sandbox= or vocabulary=")
        sandbox = Sandbox(vocabulary, **sandbox_kwargs)
    sandbox.stopping.clear()
    server = SandboxServer((host, port), sandbox)
    sandbox.base_url = server.endpoint
    # A short poll interval keeps shutdown() quick: tests start and stop one server each.
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name="panoptes-sandbox",
        daemon=True,
    )
    thread.start()
    return server, thread
