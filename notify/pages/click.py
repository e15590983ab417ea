"""The signed click redirect (``/r/<token>``): links in messages go through it,
so a click is recorded and marks the notification read in every channel
(``notify.outbox.engagement``). No login: the signature is the proof; the
target is the one signed into the link, never a parameter (no open redirect)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseRedirect
from django.views.decorators.http import require_GET

from notify.outbox.engagement import CLICKED, BadClickLink, read_click_token, record


@require_GET
def click(request: HttpRequest, token: str) -> HttpResponse:
    try:
        notification_id, url = read_click_token(token)
    except BadClickLink as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain")
    record([notification_id], CLICKED)
    return HttpResponseRedirect(url)
