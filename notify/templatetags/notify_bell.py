"""``{% notify_bell %}``: the inbox bell on any page of the host application.

    {% load notify_bell %}
    {% notify_bell %}                                   same origin, the session
    {% notify_bell api_url="https://notify.example.com" %}   notify on another origin
    {% notify_bell label="Alerts" page_size=10 inbox_url="/inbox/" %}

It renders the ``<notify-inbox>`` element and its script (``notify/notify-inbox.js``,
a static file: no build step, no CDN) for the signed-in user, and nothing for
anyone else. With ``api_url`` (the notify service's origin) or ``token=True``
the element carries a signed per-user token (``notify.inbox.tokens``), which
is how a page reaches notify from another origin; that origin must then be in
``NOTIFY["BELL_ALLOWED_ORIGINS"]``. ``{% notify_bell_token %}`` is the token
alone, for a hand-written element.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urljoin

from django import template
from django.templatetags.static import static
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from notify.inbox.tokens import issue_token

register = template.Library()

SCRIPT = "notify/notify-inbox.js"


def signed_in_user(context: template.Context) -> Any:
    request = context.get("request")
    user = getattr(request, "user", None) or context.get("user")
    return user if user is not None and user.is_authenticated else None


@register.simple_tag(takes_context=True)
def notify_bell(
    context: template.Context,
    api_url: str = "",
    token: bool = False,
    label: str = "Notifications",
    page_size: int = 20,
    inbox_url: str | None = None,
) -> SafeString:
    user = signed_in_user(context)
    if user is None:
        return mark_safe("")
    api_path = reverse("api:feed").removesuffix("/inbox/feed")
    base = api_url.rstrip("/")
    script = static(SCRIPT)
    if base and not script.startswith(("http://", "https://", "//")):
        script = urljoin(base + "/", script.lstrip("/"))
    bell_token = issue_token(user) if (token or base) else ""
    inbox = base + reverse("inbox") if inbox_url is None else inbox_url
    return format_html(
        '<script src="{}" defer></script>'
        '<notify-inbox api="{}" label="{}" page-size="{}"{}{}></notify-inbox>',
        script,
        base + api_path,
        label,
        int(page_size),
        format_html(' token="{}"', bell_token) if bell_token else "",
        format_html(' inbox-url="{}"', inbox) if inbox else "",
    )


@register.simple_tag(takes_context=True)
def notify_bell_token(context: template.Context) -> str:
    """A bell token for the signed-in user ("" for anyone else)."""
    user = signed_in_user(context)
    return issue_token(user) if user is not None else ""
