"""Template context for every page that extends ``base.html``."""

from __future__ import annotations

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from notify.inbox import store


def unread_count(request: HttpRequest) -> dict:
    """``unread_count`` for the header's badge; counted only if a page shows it
    (admin pages never do), with one indexed query."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    user_id = user.pk
    return {"unread_count": SimpleLazyObject(lambda: store.unread_count(user_id))}
