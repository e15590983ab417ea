"""Who may call the bell's feed API, and from which origins.

Two ways in, tried in this order:

1. a signed per-user token (``notify.inbox.tokens``) in ``Authorization:
   Bearer <token>`` — what ``<notify-inbox>`` sends from another origin. No
   cookie is involved, so there is nothing to forge and no CSRF check;
2. the Django session of this site, with Django's CSRF check on POSTs (the
   component sends the ``csrftoken`` cookie back as ``X-CSRFToken``).

CORS. A browser lets a page of another origin read an answer only if it
names that origin in ``Access-Control-Allow-Origin``. Only the origins in
``NOTIFY["BELL_ALLOWED_ORIGINS"]`` get it (exact match, scheme and port
included), and never ``Access-Control-Allow-Credentials``: cross-origin
callers authenticate with the token alone, so a session cookie is never
usable from another site.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware

from notify import conf
from notify.api.errors import ApiError, View, error_response
from notify.inbox import tokens

ALLOW_METHODS = "GET, POST, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, Last-Event-ID"
PREFLIGHT_MAX_AGE = "600"


def allowed_origin(request: HttpRequest) -> str | None:
    """The request's ``Origin`` if the settings allow it, else None."""
    origin = request.headers.get("Origin", "")
    return origin if origin and origin in conf.get("BELL_ALLOWED_ORIGINS") else None


def add_cors_headers(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    response.headers["Vary"] = ", ".join(v for v in (response.headers.get("Vary"), "Origin") if v)
    origin = allowed_origin(request)
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
    return response


def preflight(request: HttpRequest) -> HttpResponse:
    """The answer to a CORS preflight: 204 naming what is allowed, or a 403
    naming the origin and the setting that would allow it."""
    origin = allowed_origin(request)
    if origin is None:
        response: HttpResponse = error_response(
            403,
            "origin_not_allowed",
            f"The origin {request.headers.get('Origin', '(none)')!r} is not in "
            "NOTIFY['BELL_ALLOWED_ORIGINS'].",
        )
    else:
        response = HttpResponse(status=204)
        response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
        response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
        response.headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
    return add_cors_headers(request, response)


def cors(view: View) -> View:
    """Outermost: answer preflights, put the CORS headers on every answer."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method == "OPTIONS":
            return preflight(request)
        return add_cors_headers(request, view(request, *args, **kwargs))

    wrapper.csrf_exempt = True  # type: ignore[attr-defined]  # session POSTs are checked in bell_user
    return wrapper


def bearer(request: HttpRequest) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def unauthorized(message: str, *, invalid_token: bool = False) -> ApiError:
    challenge = 'Bearer realm="notify-bell"' + (', error="invalid_token"' if invalid_token else "")
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": challenge})


def user_from_token(token: str) -> int:
    try:
        return tokens.user_for_token(token)
    except tokens.BadToken as exc:
        raise unauthorized(f"token: {exc}.", invalid_token=True) from None


def csrf_rejection(request: HttpRequest) -> HttpResponse | None:
    """Django's own CSRF check (the view is exempt from the middleware's)."""
    return CsrfViewMiddleware(lambda r: HttpResponse()).process_view(request, None, (), {})


def bell_user(view: Callable[..., HttpResponse]) -> View:
    """Token or session; the user's id reaches the view as ``request.bell_user_id``."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        token = bearer(request)
        if token is not None:
            request.bell_user_id = user_from_token(token)  # type: ignore[attr-defined]
            return view(request, *args, **kwargs)
        if not request.user.is_authenticated:
            raise unauthorized(
                "Sign in, or send a bell token: 'Authorization: Bearer <token>' "
                "(notify.inbox.tokens.issue_token)."
            )
        if request.method == "POST" and (rejected := csrf_rejection(request)) is not None:
            return rejected
        request.bell_user_id = request.user.pk  # type: ignore[attr-defined]
        return view(request, *args, **kwargs)

    return wrapper
