"""The ASGI application uvicorn serves (``notify run``, and
``uvicorn notify.project.asgi:application --workers N`` when scaled out).

Django's own ASGI handler runs the synchronous parts of each request in a
thread made for that request and hops between the event loop and that thread
for every middleware (about 30 hops a request); a new thread also means a new
database connection, opened and closed per request. Measured on the events
API that was most of a request's time (BENCHMARKS.md, "The events API under
load"). So only async views (the live inbox's event stream) go through it;
every other request runs through Django's WSGI handler, whole, on one of a
fixed pool of ``NOTIFY["WEB_THREADS"]`` threads (``notify.project.bridge``: one
hand-off to a thread and one back for a request whose body and answer fit in
memory), which keep their database connections from one request to the next. The
hot endpoint, ``POST /api/v1/events``, runs through Django's WSGI handler for
its one view behind only the middleware it needs (``notify.project.lean``).

The async path also runs its synchronous calls on long-lived threads of its
own, and closes what they opened when its request ends, so no request leaves a
connection behind on a thread that is gone.
"""

from __future__ import annotations

import functools
import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from inspect import iscoroutinefunction

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core.asgi import get_asgi_application
from django.core.handlers.asgi import ASGIHandler
from django.core.wsgi import get_wsgi_application
from django.db import connections
from django.urls import Resolver404, get_resolver

from notify.project.bridge import WSGIBridge
from notify.project.lean import lean_handlers

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "notify.project.settings")

# Async views are few: the live inbox keeps at most this many of their
# synchronous calls running at once (each a short database read).
ASYNC_VIEW_THREADS = 2


@functools.lru_cache(maxsize=4096)
def is_async_view(path: str) -> bool:
    """Whether ``path`` resolves to a coroutine view (cached: paths repeat)."""
    try:
        match = get_resolver().resolve(path)
    except Resolver404:
        return False
    return iscoroutinefunction(match.func)


class PooledASGIHandler(ASGIHandler):
    """Django's ASGI handler with its thread-sensitive calls on a few long-lived
    threads (round robin) instead of one new thread per request."""

    def __init__(self, threads: int = ASYNC_VIEW_THREADS) -> None:
        super().__init__()
        # One thread each: asgiref runs a context's calls one at a time, in order.
        self.executors = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"notify-async-{n}")
            for n in range(threads)
        ]
        self.next_executor = itertools.cycle(self.executors)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        async with ThreadSensitiveContext(executor=next(self.next_executor)):
            try:
                await self.handle(scope, receive, send)
            finally:
                # A stream may hold its thread's connection for minutes; give it
                # back now rather than keep one per long-gone stream.
                await sync_to_async(connections.close_all)()


class Application:
    """Async views to ``PooledASGIHandler``, everything else to the WSGI handler
    on ``threads`` long-lived threads."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.async_views = PooledASGIHandler()
        self.sync_views = WSGIBridge(
            get_wsgi_application(), threads=threads, routes=lean_handlers()
        )

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not is_async_view(scope["path"]):
            await self.sync_views(scope, receive, send)
        else:
            await self.async_views(scope, receive, send)


def build() -> Application:
    get_asgi_application()  # django.setup(), as Django's own entry point does
    from notify import conf  # after setup: it reads the settings

    return Application(threads=conf.get("WEB_THREADS"))


application = build()
