"""A small real HTTP/2 server on 127.0.0.1 (cleartext, prior knowledge: "h2c"),
built on the ``h2`` protocol library, for peers of HTTP/2-only providers (APNs).

Same habits as :class:`tests.peers.http.HttpPeer`: it counts connections,
records every request, answers canned failures first, and goes down and comes
back on the same port. A subclass answers by overriding :meth:`H2Peer.answer`.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import ConnectionTerminated, DataReceived, RequestReceived, StreamEnded

from tests.peers.http import HOST, Reply, Request, free_port


class H2Peer:
    def __init__(self, host: str = HOST, port: int | None = None):
        self.host = host
        self.port = port or free_port(host)
        self._lock = threading.Lock()
        self._requests: list[Request] = []
        self._canned: list[Reply] = []
        self._connections = 0
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        if self._listener is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(16)
        listener.settimeout(0.05)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is None:
            return
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # -- misbehaviour and memory ----------------------------------------------------------

    def fail_next(
        self,
        count: int = 1,
        status: int = 500,
        body: bytes | str | dict | list = "Internal Server Error",
        headers: dict[str, str] | None = None,
    ) -> None:
        with self._lock:
            self._canned.extend([Reply(status, body, dict(headers or {}))] * count)

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    @property
    def connections(self) -> int:
        with self._lock:
            return self._connections

    def answer(self, request: Request) -> Reply:
        return Reply(200, "ok")

    # -- the server ---------------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            with self._lock:
                self._connections += 1
                number = self._connections
                self._sockets.add(sock)
            threading.Thread(target=self._serve, args=(sock, number), daemon=True).start()

    def _serve(self, sock: socket.socket, number: int) -> None:
        conn = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        try:
            sock.sendall(conn.data_to_send())
            while True:
                data = sock.recv(65535)
                if not data:
                    return
                for event in conn.receive_data(data):
                    if isinstance(event, RequestReceived):
                        streams[event.stream_id] = (dict(event.headers), bytearray())
                    elif isinstance(event, DataReceived):
                        streams[event.stream_id][1].extend(event.data)
                        conn.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                    elif isinstance(event, StreamEnded):
                        headers, body = streams.pop(event.stream_id)
                        self._respond(conn, event.stream_id, headers, bytes(body), number)
                    elif isinstance(event, ConnectionTerminated):
                        sock.sendall(conn.data_to_send())
                        return
                sock.sendall(conn.data_to_send())
        except Exception:  # the client went away or the peer went down
            return
        finally:
            with self._lock:
                self._sockets.discard(sock)
            sock.close()

    def _respond(
        self, conn: H2Connection, stream_id: int, headers: dict[str, Any], body: bytes, number: int
    ) -> None:
        path = headers.get(":path", "/")
        request = Request(
            method=headers.get(":method", ""),
            path=path.partition("?")[0],
            query={},
            headers={k.lower(): v for k, v in headers.items()},
            body=body,
            connection=number,
        )
        with self._lock:
            self._requests.append(request)
            canned = self._canned.pop(0) if self._canned else None
        reply = canned if canned is not None else self.answer(request)
        payload, content_type = reply.encoded()
        response_headers = [
            (":status", str(reply.status)),
            ("content-type", content_type),
            ("content-length", str(len(payload))),
            *((k.lower(), v) for k, v in reply.headers.items()),
        ]
        conn.send_headers(stream_id, response_headers, end_stream=not payload)
        if payload:
            conn.send_data(stream_id, payload, end_stream=True)


def running_h2(peer: H2Peer):
    peer.start()
    try:
        yield peer
    finally:
        peer.stop()
