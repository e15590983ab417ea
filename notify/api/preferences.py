"""``GET/PUT /api/v1/preferences``: the logged-in user's notification preferences.

The same data and the same validation as the settings page
(``notify.pages.prefs``): a PUT is checked whole and either saved whole or
answered 400 with every bad field named, changing nothing. Session auth; a PUT
needs the CSRF token (``X-CSRFToken``, from the ``csrftoken`` cookie that the
GET sets).
"""

from __future__ import annotations

import functools
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import ensure_csrf_cookie

from notify.api.errors import ApiError, View, api_view, invalid
from notify.api.schemas import read_json_body
from notify.pages import prefs


def session_required(view: View) -> View:
    """A 401 JSON answer, not a login redirect, for a caller without a session."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            raise ApiError(401, "unauthorized", "Log in to read or change your preferences.")
        return view(request, *args, **kwargs)

    return wrapper


def document(current: prefs.Preferences) -> dict[str, Any]:
    return {**prefs.as_data(current), "catalog": prefs.catalog(current)}


@ensure_csrf_cookie
@api_view("GET", "PUT")
@session_required
def preferences(request: HttpRequest) -> JsonResponse:
    if request.method == "GET":
        return JsonResponse(document(prefs.read(request.user)))
    body = read_json_body(request)
    current = prefs.read(request.user)
    changes, errors = prefs.validate(body, request.user, current=current)
    if errors:
        raise invalid(errors)
    prefs.save(request.user, changes)
    return JsonResponse(document(prefs.read(request.user)))
