"""A WSGI application served over ASGI on a fixed pool of threads, with as few
crossings between the event loop and the threads as a request allows.

``a2wsgi`` (used before) crosses for every step: the thread asks the loop for
the body, then hands it the status line, the body and the end of the body, and
waits for the loop each time (five round trips a request, each waking the other
side through the loop's self-pipe and a condition variable). Profiled on the
events API that was about a fifth of a request's CPU (BENCHMARKS.md, "The events
API under load"). Here:

* the body the server already has is read on the loop before the request goes
  to a thread; a body still arriving (over one ASGI message) is read from the
  thread as the application asks for it, chunk by chunk, as before;
* a response whose content is in memory (Django's ``HttpResponse``:
  ``streaming`` is False) comes back with the thread's result and the loop sends
  it: one hand-off in, one back;
* a streaming response (``StreamingHttpResponse``, ``FileResponse``) is sent
  chunk by chunk as the application produces it, each chunk handed to the loop.

The application's ``close()`` (Django's ``request_finished``: connections
given back) runs on the thread, before the response is sent.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from a2wsgi.wsgi import build_environ


class Body:
    """``wsgi.input``: what the loop had read, then more from the loop on demand."""

    def __init__(self, first: bytes, more: bool, loop: asyncio.AbstractEventLoop, receive) -> None:
        self.buffer = bytearray(first)
        self.more = more
        self.loop = loop
        self.receive = receive

    def _fetch(self) -> None:
        message = asyncio.run_coroutine_threadsafe(self.receive(), self.loop).result()
        if message["type"] == "http.disconnect":
            self.more = False
            return
        self.buffer.extend(message.get("body", b""))
        self.more = message.get("more_body", False)

    def read(self, size: int = -1) -> bytes:
        while self.more and (size < 0 or len(self.buffer) < size):
            self._fetch()
        if size < 0 or size >= len(self.buffer):
            data = bytes(self.buffer)
            self.buffer.clear()
            return data
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def readline(self, limit: int = -1) -> bytes:
        while True:
            end = self.buffer.find(b"\n", 0, limit if limit > -1 else None)
            if end != -1:
                return self.read(end + 1)
            if limit > -1 and len(self.buffer) >= limit:
                return self.read(limit)
            if not self.more:
                return self.read()
            self._fetch()

    def readlines(self, hint: int = -1) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self):
        return iter(self.readline, b"")


class Response:
    """What ``start_response`` was told, and whether the start went out already."""

    __slots__ = ("headers", "started", "status")

    def __init__(self) -> None:
        self.status = 500
        self.headers: list[tuple[bytes, bytes]] = []
        self.started = False


WSGIApp = Callable[..., Iterable[bytes]]


class WSGIBridge:
    """ASGI application running the WSGI application ``app`` on ``threads`` threads;
    a request whose (method, PATH_INFO) is in ``routes`` runs that application
    instead (``notify.project.lean``)."""

    def __init__(
        self,
        app: WSGIApp,
        threads: int,
        routes: dict[tuple[str, str], WSGIApp] | None = None,
    ) -> None:
        self.app = app
        self.routes = routes or {}
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="WSGI")

    async def __call__(self, scope, receive, send) -> None:
        loop = asyncio.get_running_loop()
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body = Body(message.get("body", b""), message.get("more_body", False), loop, receive)
        environ = build_environ(scope, body)  # type: ignore[arg-type]
        context = contextvars.copy_context()
        app = self.routes.get((environ["REQUEST_METHOD"], environ["PATH_INFO"]), self.app)

        def send_from_thread(event: dict[str, Any]) -> None:
            asyncio.run_coroutine_threadsafe(send(event), loop).result()

        result = await loop.run_in_executor(
            self.executor, context.run, self.respond, app, environ, send_from_thread
        )
        if result is not None:  # in memory: the loop sends it
            status, headers, content = result
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": content})

    def respond(self, app: WSGIApp, environ: dict[str, Any], send_from_thread) -> tuple | None:
        """On a thread: run the application; return (status, headers, body) when
        the response is in memory, else stream it from here and return None."""
        response = Response()

        def start_response(status: str, headers, exc_info=None):
            if exc_info is not None and response.started:
                raise exc_info[1].with_traceback(exc_info[2])
            response.status = int(status.split(" ", 1)[0])
            response.headers = [
                (name.strip().lower().encode("latin1"), value.strip().encode("latin1"))
                for name, value in headers
            ]
            return write

        def start() -> None:
            if not response.started:
                response.started = True
                send_from_thread(
                    {
                        "type": "http.response.start",
                        "status": response.status,
                        "headers": response.headers,
                    }
                )

        def write(chunk: bytes) -> None:  # WSGI's legacy write(): streams
            start()
            send_from_thread({"type": "http.response.body", "body": chunk, "more_body": True})

        environ["wsgi.errors"] = sys.stderr
        iterable = app(environ, start_response)
        try:
            in_memory = isinstance(iterable, list | tuple) or (
                getattr(iterable, "streaming", None) is False
            )
            if in_memory and not response.started:
                return response.status, response.headers, b"".join(iterable)
            for chunk in iterable:
                if chunk:
                    write(chunk)
            start()
            send_from_thread({"type": "http.response.body", "body": b""})
            return None
        finally:
            close = getattr(iterable, "close", None)
            if close is not None:
                close()
