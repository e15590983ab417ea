"""A local HTTP server speaking Postmark's send API, and the pytest fixtures around it.

django-anymail's Postmark backend (``anymail.backends.postmark.EmailBackend``)
is pointed at it through its ``api_url`` option, so the real backend builds the
real request and parses the real answers. The peer serves ``POST /email`` the
way Postmark documents it:

* the ``X-Postmark-Server-Token`` header is checked (``401``, ErrorCode 10);
* the body must be JSON sent as ``application/json`` (``422``, ErrorCodes 409 / 402);
* success is ``200`` with ``{"To", "SubmittedAt", "MessageID", "ErrorCode": 0,
  "Message": "OK"}`` and a new MessageID;
* an invalid recipient is ``422`` ``{"ErrorCode": 300, "Message": "Invalid 'To'
  address: '…'."}``; an inactive one (an earlier hard bounce or spam
  complaint) is ``422`` with ErrorCode 406 and Postmark's "Found inactive
  addresses: …" text.

A test can make it misbehave: ``fail_next`` (``500`` with a plain-text body, or
``503`` maintenance), ``throttle_next`` (``429``, optionally with
``Retry-After``), ``hang_next`` (no answer at all until the client gives up),
``reject`` an address, ``down()`` / ``up()`` on the same port. It speaks
HTTP/1.1 with keep-alive and counts TCP connections, so a test can check that a
batch of sends shared one pooled connection.

Fixtures: ``esp_peer`` (a running peer, stopped after the test) and
``esp_mailer`` (``settings.MAILERS["postmark"]`` pointed at the peer; returns
the peer).
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import getaddresses
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

HOST = "127.0.0.1"
MAILER = "postmark"  # the MAILERS alias the ``esp_mailer`` fixture configures
TOKEN = "server-token-for-tests"

MISSING_TOKEN = (
    "No Account or Server API tokens were supplied in the HTTP headers. Please add a "
    "header for either X-Postmark-Server-Token or X-Postmark-Account-Token."
)
BAD_TOKEN = (
    "The Server Token you provided in the X-Postmark-Server-Token request header was "
    "invalid. Please verify that you are using a valid token."
)
INACTIVE = (
    "You tried to send to a recipient that has been marked as inactive.\n"
    "Found inactive addresses: {addresses}.\n"
    "Inactive recipients are ones that have generated a hard bounce or a spam complaint."
)


@dataclass(frozen=True)
class PostmarkRequest:
    """One authenticated ``POST /email`` as the peer saw it (accepted or not)."""

    path: str
    token: str
    data: dict[str, Any]
    status: int  # what the peer answered (0: it never answered)

    @property
    def to(self) -> str:
        return str(self.data.get("To", ""))


@dataclass(frozen=True)
class PostmarkMessage:
    """One message the peer accepted."""

    message_id: str
    to: str
    from_: str
    subject: str
    text: str
    html: str
    headers: dict[str, str]
    data: dict[str, Any] = field(repr=False)

    @property
    def recipients(self) -> list[str]:
        return [addr for _name, addr in getaddresses([self.to]) if addr]


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    hang: float = 0.0  # > 0: say nothing for this long, then drop the connection


def _json(status: int, payload: dict[str, Any], **headers: str) -> _Answer:
    return _Answer(
        status,
        json.dumps(payload).encode(),
        (("Content-Type", "application/json; charset=utf-8"), *headers.items()),
    )


def _text(status: int, text: str) -> _Answer:
    return _Answer(status, text.encode(), (("Content-Type", "text/plain; charset=utf-8"),))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one pooled connection serves a batch
    server_version = "PostmarkPeer/1.0"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.peer._connection_opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.peer._connection_closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        answer = self.server.peer._answer(self.path, self.headers, body)
        if answer.hang:
            self.server.peer._hang(answer.hang)
            self.close_connection = True
            return
        self.send_response(answer.status)
        for name, value in answer.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    def do_GET(self) -> None:
        body = b"Not Found"
        self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True
    block_on_close = False

    def __init__(self, peer: PostmarkPeer):
        self.peer = peer
        super().__init__((peer.host, peer.port), _Handler)


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class PostmarkPeer:
    """A local Postmark send API with a memory, a switch and a few bad habits."""

    def __init__(self, host: str = HOST, port: int | None = None, token: str = TOKEN):
        self.host = host
        self.port = port or free_port(host)
        self.token = token
        self._lock = threading.Lock()
        self._requests: list[PostmarkRequest] = []
        self._messages: list[PostmarkMessage] = []
        self._next: list[_Answer] = []
        self._invalid: set[str] = set()
        self._inactive: set[str] = set()
        self._connections = 0
        self._open_sockets: set[socket.socket] = set()
        self._release = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        # Seconds every answer takes (Postmark's ordinary latency), and a hook
        # called with each accepted message before the API answers (its
        # webhooks can reach us before the send is recorded).
        self.latency = 0.0
        self.on_accept: Callable[[PostmarkMessage], None] | None = None

    # -- lifecycle ------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        """Listen on ``self.port`` (the same port after a ``stop``)."""
        if self._server is not None:
            return
        self._release.clear()
        server = _Server(self)
        thread = threading.Thread(target=server.serve_forever, name="postmark-peer", daemon=True)
        thread.start()
        self._server, self._thread = server, thread

    def stop(self) -> None:
        """Stop listening and drop every open connection (kept-alive ones too)."""
        if self._server is None:
            return
        self._release.set()  # wake hanging handlers
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            sockets = list(self._open_sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    down = stop
    up = start

    # -- what the server does ---------------------------------------------------------

    def fail_next(self, count: int = 1, status: int = 500) -> None:
        """Answer the next ``count`` sends with a server error (500 or 503)."""
        answer = (
            _json(503, {"ErrorCode": 100, "Message": "Maintenance"})
            if status == 503
            else _text(status, "Internal Server Error")
        )
        with self._lock:
            self._next.extend([answer] * count)

    def throttle_next(self, count: int = 1, retry_after: int | None = None) -> None:
        """Answer the next ``count`` sends with ``429`` (Postmark's rate limit)."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        answer = _json(429, {"ErrorCode": 429, "Message": "Rate limit exceeded."}, **headers)
        with self._lock:
            self._next.extend([answer] * count)

    def hang_next(self, count: int = 1, seconds: float = 10.0) -> None:
        """Say nothing to the next ``count`` sends (for ``seconds``, or until ``stop``)."""
        with self._lock:
            self._next.extend([_Answer(0, b"", hang=seconds)] * count)

    def reject(self, address: str, kind: str = "invalid") -> None:
        """``invalid``: ErrorCode 300; ``inactive``: ErrorCode 406 (bounced or complained)."""
        if kind not in ("invalid", "inactive"):
            raise ValueError(kind)
        with self._lock:
            (self._invalid if kind == "invalid" else self._inactive).add(address.lower())

    def accept(self, address: str) -> None:
        with self._lock:
            self._invalid.discard(address.lower())
            self._inactive.discard(address.lower())

    def mailer(self, timeout: float = 5.0, token: str | None = None) -> dict[str, Any]:
        """A ``MAILERS`` entry: anymail's Postmark backend, sending to this peer."""
        return {
            "BACKEND": "anymail.backends.postmark.EmailBackend",
            "OPTIONS": {
                "server_token": self.token if token is None else token,
                "api_url": self.url,
                "timeout": timeout,
            },
        }

    # -- what the server saw ------------------------------------------------------------

    @property
    def requests(self) -> list[PostmarkRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def messages(self) -> list[PostmarkMessage]:
        with self._lock:
            return list(self._messages)

    @property
    def connections(self) -> int:
        with self._lock:
            return self._connections

    def messages_to(self, address: str) -> list[PostmarkMessage]:
        address = address.lower()
        return [m for m in self.messages if address in (r.lower() for r in m.recipients)]

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._messages.clear()
            self._next.clear()
            self._invalid.clear()
            self._inactive.clear()
            self._connections = 0

    # -- called from the handler threads ---------------------------------------------------

    def _connection_opened(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections += 1
            self._open_sockets.add(sock)

    def _connection_closed(self, sock: socket.socket) -> None:
        with self._lock:
            self._open_sockets.discard(sock)

    def _hang(self, seconds: float) -> None:
        self._release.wait(seconds)

    def _answer(self, path: str, headers: Any, body: bytes) -> _Answer:
        if path.rstrip("/") != "/email":
            return _text(404, "Not Found")
        token = headers.get("X-Postmark-Server-Token")
        if not token:
            return _json(401, {"ErrorCode": 10, "Message": MISSING_TOKEN})
        if token != self.token:
            return _json(401, {"ErrorCode": 10, "Message": BAD_TOKEN})
        content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return _json(422, {"ErrorCode": 409, "Message": "JSON request required."})
        try:
            data = json.loads(body)
            if not isinstance(data, dict):
                raise ValueError("not an object")
        except ValueError:
            return _json(422, {"ErrorCode": 402, "Message": "Received invalid JSON input."})
        if self.latency:
            self._release.wait(self.latency)
        with self._lock:
            canned = bool(self._next)
            answer = self._next.pop(0) if canned else self._decide(data)
            self._requests.append(PostmarkRequest(path, token, data, answer.status))
            accepted = self._messages[-1] if not canned and answer.status == 200 else None
        if accepted is not None and self.on_accept is not None:
            self.on_accept(accepted)
        return answer

    def _decide(self, data: dict[str, Any]) -> _Answer:
        """The answer to a well-formed send (called with the lock held)."""
        to = str(data.get("To") or "")
        recipients = [addr for _name, addr in getaddresses([to]) if addr]
        if not recipients:
            return _json(422, {"ErrorCode": 300, "Message": "Zero recipients specified"})
        for address in recipients:
            if "@" not in address or address.lower() in self._invalid:
                return _json(
                    422, {"ErrorCode": 300, "Message": f"Invalid 'To' address: '{address}'."}
                )
        inactive = [a.lower() for a in recipients if a.lower() in self._inactive]
        if inactive and len(inactive) == len(recipients):
            return _json(
                422,
                {"ErrorCode": 406, "Message": INACTIVE.format(addresses=", ".join(inactive))},
            )
        message_id = str(uuid.uuid4())
        self._messages.append(
            PostmarkMessage(
                message_id=message_id,
                to=to,
                from_=str(data.get("From", "")),
                subject=str(data.get("Subject", "")),
                text=str(data.get("TextBody", "")),
                html=str(data.get("HtmlBody", "")),
                headers={h["Name"]: str(h["Value"]) for h in data.get("Headers") or []},
                data=data,
            )
        )
        return _json(
            200,
            {
                "To": to,
                "SubmittedAt": datetime.now(UTC).isoformat(),
                "MessageID": message_id,
                "ErrorCode": 0,
                "Message": "OK",
            },
        )


@pytest.fixture
def esp_peer() -> Iterator[PostmarkPeer]:
    """A running Postmark peer on a free port; stopped after the test."""
    peer = PostmarkPeer()
    peer.start()
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture
def esp_mailer(settings, esp_peer: PostmarkPeer) -> PostmarkPeer:
    """Point ``MAILERS["postmark"]`` at the peer through anymail's Postmark backend."""
    settings.MAILERS = {**settings.MAILERS, MAILER: esp_peer.mailer()}
    return esp_peer
