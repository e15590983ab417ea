"""Who is calling: API keys (``Authorization: Bearer nfy_<prefix>_<secret>``) for
services, the Django session for the inbox of the logged-in user.

A web process keeps each API key it looked up for ``NOTIFY["API_KEY_CACHE_SECONDS"]``
(5 s by default) instead of reading it on every request (a query whose
compilation was a tenth of a request's time: BENCHMARKS.md). The secret is
still checked on every request, against the cached hash. Revocation is
honoured within that delay: at once in the process that revokes (the admin
action, ``notify key revoke`` and saving the key call ``forget_api_keys()``),
within ``API_KEY_CACHE_SECONDS`` in every other process. 0 turns the cache off.
"""

from __future__ import annotations

import functools
import hmac
import threading
import time
from datetime import timedelta
from typing import Any

from django.db.models import Q
from django.db.models.signals import post_delete, post_save
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from notify import conf
from notify.api.errors import ApiError, View
from notify.models import ApiKey

TOKEN_PREFIX = "nfy_"  # noqa: S105 (a format marker, not a secret)
# Writing last_used_at on every request would turn each read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# Compared against when the prefix is unknown, so both failures take as long.
_DUMMY_HASH = ApiKey.hash_secret("not-a-secret")


def unauthorized(message: str, *, invalid_token: bool = False) -> ApiError:
    challenge = 'Bearer realm="notify"'
    if invalid_token:
        challenge += ', error="invalid_token"'
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": challenge})


def parse_token(header: str) -> tuple[str, str] | None:
    """``"Bearer nfy_<prefix>_<secret>"`` -> ``(prefix, secret)``, else None."""
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith(TOKEN_PREFIX):
        return None
    prefix, _, secret = token.removeprefix(TOKEN_PREFIX).partition("_")
    if not prefix or not secret:
        return None
    return prefix, secret


def authenticate_api_key(request: HttpRequest) -> ApiKey:
    """The active key the request carries; raises a 401 ``ApiError`` otherwise."""
    header = request.headers.get("Authorization", "")
    if not header:
        raise unauthorized("Send an API key: 'Authorization: Bearer nfy_...'.")
    parsed = parse_token(header)
    if parsed is None:
        raise unauthorized(
            "The Authorization header must be 'Bearer nfy_<prefix>_<secret>'.",
            invalid_token=True,
        )
    prefix, secret = parsed
    key = cached_key(prefix)
    expected = key.secret_hash if key is not None else _DUMMY_HASH
    matches = hmac.compare_digest(expected, ApiKey.hash_secret(secret))
    if key is None or not matches:
        raise unauthorized("The API key is not valid.", invalid_token=True)
    if not key.is_active:
        raise unauthorized("The API key has been revoked.", invalid_token=True)
    touch(key)
    return key


# prefix -> (the key, when it was read: time.monotonic()). Entries of keys
# that no longer exist are not kept: unknown prefixes are read every time.
_KEYS: dict[str, tuple[ApiKey, float]] = {}
_KEYS_LOCK = threading.Lock()
_KEYS_MAX = 10_000  # a bound on memory; dropped whole when reached (rare: one per key)


def cached_key(prefix: str) -> ApiKey | None:
    """The key with ``prefix``, read at most ``API_KEY_CACHE_SECONDS`` ago."""
    ttl = float(conf.get("API_KEY_CACHE_SECONDS") or 0)
    now = time.monotonic()
    entry = _KEYS.get(prefix)
    if entry is not None and 0 <= now - entry[1] < ttl:
        return entry[0]
    # The prefix is unique: a slice, not .first(), whose ORDER BY costs more to
    # compile than the query takes to run.
    key = next(iter(ApiKey.objects.filter(prefix=prefix)[:1]), None)
    if key is not None and ttl > 0:
        with _KEYS_LOCK:
            if len(_KEYS) >= _KEYS_MAX:
                _KEYS.clear()
            _KEYS[prefix] = (key, now)
    return key


def forget_api_keys() -> None:
    """Drop this process's cached keys (after a revocation here: effective at once)."""
    with _KEYS_LOCK:
        _KEYS.clear()


def _forget_on_change(sender: type, **kwargs: Any) -> None:
    forget_api_keys()


post_save.connect(_forget_on_change, sender=ApiKey, dispatch_uid="notify.api.auth.forget")
post_delete.connect(_forget_on_change, sender=ApiKey, dispatch_uid="notify.api.auth.forget")


def touch(key: ApiKey) -> None:
    """Record use, at most once per ``LAST_USED_RESOLUTION`` (a conditional update,
    so concurrent requests write once)."""
    now = timezone.now()
    stale = now - LAST_USED_RESOLUTION
    if key.last_used_at is not None and key.last_used_at > stale:
        return
    ApiKey.objects.filter(pk=key.pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lte=stale)
    ).update(last_used_at=now)
    key.last_used_at = now


def api_key_required(view: View) -> View:
    """Bearer auth; the key is passed to the view as ``request.api_key``."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        request.api_key = authenticate_api_key(request)
        return view(request, *args, **kwargs)

    return wrapper


def login_required_json(view: View) -> View:
    """Session auth for the inbox: a 401 JSON answer instead of a login redirect."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            raise ApiError(401, "unauthorized", "Log in to read your inbox.")
        return view(request, *args, **kwargs)

    return wrapper
