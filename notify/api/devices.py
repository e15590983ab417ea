"""``/api/v1/devices``: the logged-in user's push devices (session auth, CSRF on
POST and DELETE, like the inbox and preferences).

* ``GET`` lists them, with the Web Push ``applicationServerKey`` a page passes
  to ``pushManager.subscribe`` (``null`` when no Web Push channel is configured).
* ``POST {"kind": "fcm"|"apns", "token": "…"}`` or ``{"kind": "webpush",
  "subscription": {endpoint, keys: {p256dh, auth}}}`` registers a device: 201
  when new, 200 when it was known (it then becomes the newest). A device is
  verified by registering: only the device knows its token.
* ``DELETE`` with the same body forgets it: 204, or 404 when it is not yours.

Tokens the provider says are gone are deleted by the send step
(``notify.delivery.outcomes``); the app registers the new one.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import ensure_csrf_cookie

from channels.base import ChannelConfigurationError, InvalidRecipient
from channels.webpush import WebPushChannel, vapid_public_key
from notify.api.errors import ApiError, api_view, field_error
from notify.api.preferences import session_required
from notify.api.schemas import read_json_body
from notify.models import ContactPoint
from notify.preferences.devices import (
    DEVICE_KINDS,
    describe_device,
    forget_device,
    normalise_device,
    register_device,
)
from notify.registry import build_channel, channel_aliases, describe


def device_json(point: ContactPoint) -> dict[str, Any]:
    return {
        "id": point.pk,
        "kind": point.kind,
        "label": describe_device(point.kind, point.address),
        "primary": point.is_primary,
        "created_at": point.created_at,
    }


def webpush_channel() -> WebPushChannel | None:
    """The first configured Web Push channel (unopened), or None."""
    for alias in channel_aliases():
        try:
            if describe(alias)[0] != ContactPoint.Kind.WEBPUSH:
                continue
            channel = build_channel(alias)
        except ChannelConfigurationError:
            continue
        if isinstance(channel, WebPushChannel):
            return channel
    return None


def webpush_application_server_key() -> str | None:
    """The VAPID public key pages subscribe with, or None without a Web Push channel."""
    channel = webpush_channel()
    if channel is None or not channel.private_key:
        return None
    try:
        return vapid_public_key(channel.private_key)
    except Exception:  # a bad key is reported by the system check
        return None


def check_endpoint(address: str) -> None:
    """A subscription is accepted only where the Web Push channel may send:
    the push services' hosts by default (its ALLOWED_HOSTS option)."""
    channel = webpush_channel()
    if channel is None:
        raise field_error("kind", "no Web Push channel is configured")
    endpoint = json.loads(address)["endpoint"]
    try:
        channel.url_policy.check(endpoint, channel.provider_name)
    except InvalidRecipient as exc:
        raise field_error("subscription", f"endpoint refused: {exc.message}") from None


def read_device(request: HttpRequest) -> tuple[str, str]:
    """(kind, normalised address) from the body, or a 400 naming the field."""
    body = read_json_body(request)
    kind = body.get("kind")
    if kind not in DEVICE_KINDS:
        raise field_error("kind", f"must be one of {', '.join(DEVICE_KINDS)}")
    field = "subscription" if kind == ContactPoint.Kind.WEBPUSH else "token"
    raw = body.get(field, body.get("token"))
    try:
        address = normalise_device(kind, raw)
    except ValidationError as exc:
        raise field_error(field, " ".join(exc.messages)) from None
    if kind == ContactPoint.Kind.WEBPUSH:
        check_endpoint(address)
    return kind, address


@ensure_csrf_cookie
@api_view("GET", "POST", "DELETE")
@session_required
def devices(request: HttpRequest) -> HttpResponse:
    user = request.user
    if request.method == "GET":
        points = ContactPoint.objects.filter(user=user, kind__in=DEVICE_KINDS).order_by("-pk")
        return JsonResponse(
            {
                "devices": [device_json(p) for p in points],
                "webpush": {"application_server_key": webpush_application_server_key()},
            }
        )
    kind, address = read_device(request)
    if request.method == "DELETE":
        if not forget_device(user, kind, address):
            raise ApiError(404, "not_found", "No such device among yours.")
        return HttpResponse(status=204)
    point, created = register_device(user, kind, address)
    return JsonResponse(device_json(point), status=201 if created else 200)
