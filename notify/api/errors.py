"""Every API answer that is not a success goes through here, so that every
error body has the same shape: ``{"error": code, "message": text}`` plus, for
bad input, ``"errors": [{"field": ..., "message": ...}]`` naming each field.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.csrf import csrf_failure as django_csrf_failure
from pydantic import ValidationError as PydanticValidationError

log = logging.getLogger("notify.api")

View = Callable[..., HttpResponse]


def error_response(
    status: int,
    error: str,
    message: str,
    *,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JsonResponse:
    body: dict[str, Any] = {"error": error, "message": message}
    if errors is not None:
        body["errors"] = errors
    return JsonResponse(body, status=status, headers=headers)


class ApiError(Exception):
    """Raised anywhere below a view; ``api_view`` turns it into its response."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        *,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.errors = errors
        self.headers = headers

    def response(self) -> JsonResponse:
        return error_response(
            self.status, self.error, self.message, errors=self.errors, headers=self.headers
        )


def invalid(errors: list[dict[str, str]], message: str | None = None) -> ApiError:
    """A 400 that names the offending fields (the first one in the message)."""
    if message is None:
        first = errors[0]
        message = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more)"
    return ApiError(400, "invalid_request", message, errors=errors)


def field_error(field: str, message: str) -> ApiError:
    return invalid([{"field": field, "message": message}])


def field_path(loc: Iterable[int | str], prefix: str = "") -> str:
    """``("payload", "x", 0)`` -> ``"payload.x[0]"``."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def from_pydantic(exc: PydanticValidationError, prefix: str = "") -> ApiError:
    return invalid(
        [
            {"field": field_path(e["loc"], prefix), "message": e["msg"]}
            for e in exc.errors(include_url=False)
        ]
    )


def api_view(*methods: str) -> Callable[[View], View]:
    """Allow only ``methods`` (405 JSON otherwise) and answer every failure in JSON.

    An unexpected exception is logged and becomes a bare 500 JSON body, so a
    client never has to parse an HTML error page.
    """
    allowed = ", ".join(methods)

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                return error_response(
                    405,
                    "method_not_allowed",
                    f"{request.method} is not allowed here; use {allowed}.",
                    headers={"Allow": allowed},
                )
            try:
                return view(request, *args, **kwargs)
            except ApiError as exc:
                return exc.response()
            except Exception:
                log.exception("API view %s failed", view.__name__)
                return error_response(500, "server_error", "Something went wrong on our side.")

        return wrapper

    return decorate


def not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Catch-all under ``api/v1/``: unknown URLs get JSON, not the HTML 404 page."""
    return error_response(404, "not_found", f"No API endpoint at {request.path}.")


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """``CSRF_FAILURE_VIEW`` for the project: JSON under the API, Django's page elsewhere."""
    if request.path_info.startswith("/api/"):
        return error_response(403, "csrf_failed", f"CSRF check failed: {reason}")
    return django_csrf_failure(request, reason=reason)
