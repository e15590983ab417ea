"""``/unsubscribe/<token>/``: one-click unsubscribe without signing in.

* ``POST`` with the body ``List-Unsubscribe=One-Click`` (RFC 8058; what Gmail,
  Yahoo and Apple Mail send from their "Unsubscribe" button) turns the
  category off on that channel at once. Mail clients send no cookie and no CSRF
  token, so this request is exempt from CSRF: the signed token is the
  credential.
* ``GET`` — a person following the link, or a mail scanner prefetching it —
  changes nothing: it shows what the link would turn off, a button, and a link
  to the settings page.
* The page's button is a form ``POST`` with a CSRF token, checked here (the
  view as a whole has to be exempt for the one-click request).
* A used link (the cell is off already) says "you are unsubscribed" on ``GET``
  and offers a "Resubscribe" button: a form ``POST`` (``action=resubscribe``,
  CSRF checked) that turns the cell back on.
* A tampered, foreign, expired token, or one naming a critical category, is a
  400 page that says so and points to the settings page.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from notify import conf
from notify.preferences import one_click as links
from notify.registry import describe

SETTINGS_URL = "/settings/notifications/"


def channel_label(alias: str) -> str:
    """ "email" -> "email"; other aliases as their channel calls itself."""
    try:
        address_kind = describe(alias)[0]
    except Exception:  # an alias no longer configured still reads fine
        address_kind = None
    return {"phone": "text message", "email": "email"}.get(address_kind or "", alias)


def csrf_rejection(request: HttpRequest) -> HttpResponse | None:
    """Run the CSRF check this exempt view skipped; None when it passes."""
    return CsrfViewMiddleware(lambda r: HttpResponse()).process_view(request, None, (), {})


def invalid(request: HttpRequest, error: links.InvalidToken) -> HttpResponse:
    return render(
        request,
        "unsubscribe_invalid.html",
        {"error": error, "settings_url": SETTINGS_URL},
        status=400,
    )


@csrf_exempt
@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    try:
        scope = links.read_token(token)
        category = links.resolve(scope)
    except links.InvalidToken as error:
        return invalid(request, error)
    context = {
        "category": category,
        "channel": channel_label(scope.channel),
        "settings_url": SETTINGS_URL,
        "site_url": conf.get("SITE_URL"),
    }
    if request.method == "POST":
        one_click = request.POST.get("List-Unsubscribe") == "One-Click"
        if not one_click and (rejection := csrf_rejection(request)) is not None:
            return rejection
        if not one_click and request.POST.get("action") == "resubscribe":
            links.resubscribe(scope, category)
            return render(request, "unsubscribe_done.html", {**context, "resubscribed": True})
        links.unsubscribe(scope, category)
        return render(request, "unsubscribe_done.html", context)
    if links.is_unsubscribed(scope, category):
        return render(request, "unsubscribe_done.html", context)
    return render(request, "unsubscribe.html", context)
