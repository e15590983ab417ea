"""``/``: where to go next, for a visitor, a user and staff."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from notify import conf


def home(request: HttpRequest) -> HttpResponse:
    """What notify is and the links that matter to whoever is looking: log in
    and the API reference for a visitor (and the sandbox outbox when it is on),
    the inbox and settings for a user, admin and the dashboard for staff."""
    return render(
        request,
        "home.html",
        {"active": "home", "sandbox": conf.get("SANDBOX")},
    )
