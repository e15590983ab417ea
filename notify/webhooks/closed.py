"""Provider webhooks are authenticated or closed: never open by default.

Anymail's views accept anything when ``ANYMAIL["WEBHOOK_SECRET"]`` is not set
(they only warn). :class:`ClosedWithoutSecret` turns that into a refusal: with
no credentials configured every request is a 403 whose text names the setting
to set, and nothing reaches the tracking receiver (``notify.webhooks.anymail``),
so a forged bounce cannot suppress an address. With credentials, anymail's
basic-auth check runs as before (a wrong or missing credential is a 400).
"""

from __future__ import annotations

from typing import Any

from anymail.webhooks.postmark import PostmarkTrackingWebhookView
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden

ANYMAIL_CLOSED = (
    "This webhook is closed: no credentials are configured. Set "
    "NOTIFY_WEBHOOK_BASIC_AUTH='user:password' (ANYMAIL['WEBHOOK_SECRET']) and give the "
    "provider the webhook URL with those credentials: https://user:password@<host>{path}"
)


class ClosedWithoutSecret:
    """Mixin for anymail webhook views: refuse everything without a secret."""

    warn_if_no_basic_auth = False  # refused below instead of a warning at each request

    basic_auth: list[str] | None

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not self.basic_auth:
            return HttpResponseForbidden(
                ANYMAIL_CLOSED.format(path=request.path), content_type="text/plain"
            )
        return super().dispatch(request, *args, **kwargs)  # type: ignore[misc]


class PostmarkTrackingView(ClosedWithoutSecret, PostmarkTrackingWebhookView):
    """Postmark's delivery, bounce and spam-complaint webhooks."""
