"""Throttles on the pages anyone can reach: the site and admin logins, contact
verification, one-click unsubscribe and test sends.

Settings (in ``NOTIFY``; rates written as channels write theirs, ``"10/15m"``;
``None`` turns that throttle off):

``LOGIN_FAILURES_PER_USERNAME`` (default ``"10/15m"``)
    Failed sign-ins for one username, from anywhere.
``LOGIN_FAILURES_PER_ADDRESS`` (default ``"30/15m"``)
    Failed sign-ins from one client address, whatever the usernames.
``PAGE_RATE_LIMIT_PER_ADDRESS`` (default ``"30/m"``)
    Requests per client address to each throttled page (verification, unsubscribe,
    test send), on top of those pages' own per-user limits.

Once over, a login answers 429 with ``Retry-After`` before the password is even
checked (so guessing stops, right or wrong), until the window ends. Counting
is ``notify.pages.ratelimit`` (fixed windows on Django's cache). Usernames are
hashed in cache keys. The address is ``REMOTE_ADDR`` (see
``NOTIFY["TRUSTED_PROXIES"]`` in ``notify.project.server``).
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse

from channels.ratelimit import Rate, parse_rate
from notify import conf
from notify.pages import ratelimit

View = Callable[..., HttpResponse]


def rate(name: str) -> Rate | None:
    """``NOTIFY[name]`` (or the default) as a rate; None when turned off."""
    text = conf.get(name)
    return parse_rate(text) if text else None


def too_many(message: str, seconds: int) -> HttpResponse:
    response = HttpResponse(
        f"{message} Try again in {ratelimit.wait_text(seconds)}.\n",
        status=429,
        content_type="text/plain; charset=utf-8",
    )
    response["Retry-After"] = str(seconds)
    return response


def _address(request: HttpRequest) -> str:
    return request.META.get("REMOTE_ADDR", "") or "unknown"


def _wait(limit: Rate, now: float) -> int:
    window = int(limit.period)
    return max(1, math.ceil((int(now // window) + 1) * window - now))


def throttled_login(view: View) -> View:
    """Wrap a login view (Django's ``LoginView`` or ``AdminSite.login``): failed
    sign-ins are counted per username and per address; over either limit the
    view answers 429 without checking the password. A failed sign-in is a POST
    answered with the form again (200); a success redirects."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method != "POST":
            return view(request, *args, **kwargs)
        username = request.POST.get("username", "").strip().lower()
        digest = hashlib.sha256(username.encode()).hexdigest()[:32]
        counters = []
        now = time.time()
        for name, who in (
            ("LOGIN_FAILURES_PER_USERNAME", f"user:{digest}"),
            ("LOGIN_FAILURES_PER_ADDRESS", f"addr:{_address(request)}"),
        ):
            limit = rate(name)
            if limit is None:
                continue
            key, window = f"login:{who}", int(limit.period)
            if ratelimit.remaining(key, limit=limit.limit, window=window, now=now) <= 0:
                return too_many(
                    f"Too many failed sign-ins (NOTIFY['{name}'] = {limit}).", _wait(limit, now)
                )
            counters.append((key, limit))
        response = view(request, *args, **kwargs)
        if response.status_code == 200:  # the form again: the sign-in failed
            for key, limit in counters:
                ratelimit.hit(key, limit=limit.limit, window=int(limit.period), now=now)
        return response

    return wrapper


def throttled_page(scope: str) -> Callable[[View], View]:
    """Limit a page to ``PAGE_RATE_LIMIT_PER_ADDRESS`` requests per client address."""

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            limit = rate("PAGE_RATE_LIMIT_PER_ADDRESS")
            if limit is not None:
                wait = ratelimit.hit(
                    f"page:{scope}:{_address(request)}",
                    limit=limit.limit,
                    window=int(limit.period),
                )
                if wait is not None:
                    return too_many(
                        f"Too many requests from this address "
                        f"(NOTIFY['PAGE_RATE_LIMIT_PER_ADDRESS'] = {limit}).",
                        wait,
                    )
            return view(request, *args, **kwargs)

        return wrapper

    return decorate
