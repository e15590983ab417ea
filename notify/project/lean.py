"""A lean WSGI handler for the hot API endpoint (``POST /api/v1/events``).

Django's handler runs every request through all of ``settings.MIDDLEWARE`` and
resolves its URL. For the events API most of that does nothing: the view is
CSRF-exempt, authenticates by API key (never the session or ``request.user``),
sends no messages and serves no static file, yet sessions, CSRF, auth,
messages, WhiteNoise and the URL resolver were about a fifth of the CPU of an
accepted event (BENCHMARKS.md, "The events API: a lean path and group
commit").

``LeanHandler`` is Django's own ``WSGIHandler`` (the same request object,
``request_started`` / ``request_finished``, error logging, script prefix)
with two differences: the view is fixed instead of resolved, and the
middleware chain keeps only the middleware listed in ``KEPT`` (in
``settings.MIDDLEWARE``'s order): ``SecurityMiddleware`` (HTTPS redirect,
security headers), ``CommonMiddleware`` (``ALLOWED_HOSTS``, refused user
agents, ``Content-Length``) and ``XFrameOptionsMiddleware``, so the answers,
their headers and the refusals are the full stack's. A middleware that is in
neither ``KEPT`` nor ``SKIPPED`` (a project's own) turns the lean path off:
nothing it would have done is skipped silently.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.core.handlers.exception import convert_exception_to_response
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, resolve
from django.utils.module_loading import import_string

# Middleware whose work an API-key view needs: run as in the full stack.
KEPT = frozenset(
    {
        "django.middleware.security.SecurityMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
    }
)
# Middleware that does nothing for a CSRF-exempt view that reads neither the
# session, the user nor messages, at a path that is not a static file.
SKIPPED = frozenset(
    {
        "whitenoise.middleware.WhiteNoiseMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
    }
)
# The paths served lean, by method: the view is whatever the URLconf maps them to.
LEAN_ROUTES = {("POST", "/api/v1/events")}


def lean_middleware(middleware: list[str]) -> list[str] | None:
    """The middleware a lean request runs through, in order; None when
    ``middleware`` holds one this module does not know (no lean path)."""
    if any(path not in KEPT and path not in SKIPPED for path in middleware):
        return None
    return [path for path in middleware if path in KEPT]


class LeanHandler(WSGIHandler):
    """Django's WSGI handler for one view, behind ``middleware`` only."""

    def __init__(self, view: Callable[..., HttpResponse], middleware: list[str]) -> None:
        self.view = view
        self.middleware = middleware
        super().__init__()  # calls load_middleware()

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        handler = convert_exception_to_response(self.call_view)
        for path in reversed(self.middleware):
            # The kept middleware have no view, template or exception hooks.
            handler = convert_exception_to_response(import_string(path)(handler))
        self._middleware_chain = handler

    def call_view(self, request: HttpRequest) -> HttpResponse:
        return self.view(request)


def lean_handlers() -> dict[tuple[str, str], LeanHandler]:
    """(method, path) -> its lean handler, for the routes that can have one
    under the current settings (none when a middleware is unknown here)."""
    middleware = lean_middleware(list(settings.MIDDLEWARE))
    if middleware is None:
        return {}
    handlers = {}
    for method, path in LEAN_ROUTES:
        try:
            match = resolve(path)
        except Resolver404:
            continue
        if match.args or match.kwargs:
            continue
        handlers[(method, path)] = LeanHandler(match.func, middleware)
    return handlers
