"""A small real HTTP/1.1 server on 127.0.0.1 that the HTTP peers build on.

It keeps connections alive (so a test can count how many a client opened),
records every request with its raw body, and can misbehave the way providers
do: canned failures for the next requests, a hang (for time-outs), and going
down and coming back on the same port. A subclass answers requests by
overriding :meth:`HttpPeer.answer`.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Request:
    """One request as the peer saw it."""

    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: bytes = field(repr=False)
    connection: int  # which connection (1-based) carried it

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(self.body.decode()).items()}


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes | str | dict | list = b""
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> tuple[bytes, str]:
        if isinstance(self.body, (dict, list)):
            return json.dumps(self.body).encode(), "application/json; charset=utf-8"
        if isinstance(self.body, str):
            return self.body.encode(), "text/plain; charset=utf-8"
        return self.body, "application/octet-stream"


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (time-out) or a peer that went down: not news


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real providers
    server: _Server
    peer: HttpPeer  # set on the subclass made per peer

    def setup(self) -> None:
        super().setup()
        self.connection_number = self.peer._connected(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.peer._disconnected(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests assert on records
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        request = Request(
            method=self.command,
            path=split.path,
            query=parse_qs(split.query),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            connection=self.connection_number,
        )
        reply = self.peer._handle(request)
        if reply is None:  # the peer went down while this request hung
            self.close_connection = True
            return
        payload, content_type = reply.encoded()
        self.send_response(reply.status)
        headers = {"Content-Type": content_type, **reply.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_POST = do_GET = do_PUT = do_DELETE = _serve


class HttpPeer:
    """A local HTTP server with a memory, a switch and a few bad habits."""

    def __init__(self, host: str = HOST, port: int | None = None):
        self.host = host
        self.port = port or free_port(host)
        self._lock = threading.Lock()
        self._requests: list[Request] = []
        self._canned: list[Reply] = []
        self._hangs: list[float] = []
        self._released = threading.Event()
        self._connections = 0
        self._open_sockets: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        # Seconds every answer takes (a provider's ordinary latency).
        self.latency = 0.0

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        """Listen on ``self.port`` (the same port after a ``stop``)."""
        if self._server is not None:
            return
        handler = type("Handler", (_Handler,), {"peer": self})
        self._released.clear()
        self._server = _Server((self.host, self.port), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and drop every open connection (kept-alive ones too)."""
        if self._server is None:
            return
        self._released.set()  # let hung handlers go
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            sockets = list(self._open_sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # -- misbehaviour -------------------------------------------------------------

    def fail_next(
        self,
        count: int = 1,
        status: int = 500,
        body: bytes | str | dict | list = "Internal Server Error",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next ``count`` requests with this reply instead of the real one."""
        with self._lock:
            self._canned.extend([Reply(status, body, dict(headers or {}))] * count)

    def hang_next(self, count: int = 1, seconds: float = 5.0) -> None:
        """Hold the next ``count`` requests for ``seconds`` (or until ``stop``) and
        then answer them as usual."""
        with self._lock:
            self._hangs.extend([seconds] * count)

    # -- what the server saw --------------------------------------------------------

    @property
    def requests(self) -> list[Request]:
        """Every request that reached the peer, answered well or not."""
        with self._lock:
            return list(self._requests)

    @property
    def connections(self) -> int:
        with self._lock:
            return self._connections

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._canned.clear()
            self._hangs.clear()
            self._connections = 0

    # -- the part a subclass writes ---------------------------------------------------

    def answer(self, request: Request) -> Reply:
        """The reply to a request that no canned failure took."""
        return Reply(200, "ok")

    # -- called from handler threads ----------------------------------------------------

    def _handle(self, request: Request) -> Reply | None:
        with self._lock:
            self._requests.append(request)
            hang = self._hangs.pop(0) if self._hangs else None
        if hang is not None:
            self._released.wait(hang)
            if self._server is None:
                return None
        if self.latency:
            self._released.wait(self.latency)
        with self._lock:
            canned = self._canned.pop(0) if self._canned else None
        return canned if canned is not None else self.answer(request)

    def _connected(self, sock: socket.socket) -> int:
        with self._lock:
            self._connections += 1
            self._open_sockets.add(sock)
            return self._connections

    def _disconnected(self, sock: socket.socket) -> None:
        with self._lock:
            self._open_sockets.discard(sock)


def running(peer_factory: Callable[[], HttpPeer]):
    """Start a peer, yield it, stop it: the body of the peer fixtures."""
    peer = peer_factory()
    peer.start()
    try:
        yield peer
    finally:
        peer.stop()
