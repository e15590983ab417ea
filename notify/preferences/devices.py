"""Devices as contact points: push tokens and browser push subscriptions.

A device registers itself (``POST /api/v1/devices``, or the settings page's
"turn on browser notifications" for Web Push) and is a verified contact point
at once: only the device can know its token. A user may have several of each
kind; a push goes to every one (``notify.delivery.devices``), the newest
(primary) first. A provider's "this token is gone"
(``InvalidRecipient(gone=True)``) deletes it (:func:`forget_gone`).

Kinds: ``fcm`` (an FCM registration token), ``apns`` (an APNs device token,
hex) and ``webpush`` (the ``PushSubscription`` JSON, stored compact with
sorted keys so the same subscription is always the same address).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import IntegrityError, transaction
from django.utils import timezone

from notify.models import ContactPoint

Kind = ContactPoint.Kind
DEVICE_KINDS = (Kind.FCM, Kind.APNS, Kind.WEBPUSH)
FCM_TOKEN = re.compile(r"^[A-Za-z0-9_:.\-]{20,900}$")
APNS_TOKEN = re.compile(r"^[0-9a-f]{64,200}$")
MAX_ADDRESS = ContactPoint._meta.get_field("address").max_length or 1000


def normalise_device(kind: str, raw: Any) -> str:
    """The address a device is stored under, or ``ValidationError`` saying why not."""
    if kind == Kind.WEBPUSH:
        address = subscription_address(raw)
    elif not isinstance(raw, str) or not raw.strip():
        raise ValidationError("enter the device token")
    elif kind == Kind.FCM:
        address = raw.strip()
        if not FCM_TOKEN.match(address):
            raise ValidationError("is not an FCM registration token")
    elif kind == Kind.APNS:
        address = raw.strip().replace(" ", "").lower()
        if not APNS_TOKEN.match(address):
            raise ValidationError("is not an APNs device token (64 or more hex digits)")
    else:
        raise ValidationError(f"'{kind}' is not a kind of device ({', '.join(DEVICE_KINDS)})")
    if len(address) > MAX_ADDRESS:
        raise ValidationError(f"is too long ({MAX_ADDRESS} characters at most)")
    return address


def subscription_address(raw: Any) -> str:
    """A ``PushSubscription`` (its JSON text or the parsed object) as stored."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise ValidationError("is not a push subscription (JSON)") from None
    if not isinstance(raw, dict):
        raise ValidationError("must be a push subscription: {endpoint, keys: {p256dh, auth}}")
    endpoint, keys = raw.get("endpoint"), raw.get("keys")
    if not isinstance(endpoint, str):
        raise ValidationError("the subscription has no endpoint")
    try:  # which hosts it may name is the Web Push channel's policy (channels.http)
        URLValidator(schemes=["https", "http"])(endpoint)
    except ValidationError:
        raise ValidationError("the subscription's endpoint must be an https:// URL") from None
    if not isinstance(keys, dict) or not all(
        isinstance(keys.get(k), str) and keys[k] for k in ("p256dh", "auth")
    ):
        raise ValidationError("the subscription lacks keys.p256dh and keys.auth")
    data = {"endpoint": endpoint, "keys": {"auth": keys["auth"], "p256dh": keys["p256dh"]}}
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def describe_device(kind: str, address: str) -> str:
    """A device as people read it: a browser by its push service, a token by its start."""
    if kind == Kind.WEBPUSH:
        try:
            host = urlsplit(json.loads(address)["endpoint"]).hostname
        except (ValueError, KeyError, TypeError):
            host = None
        return f"browser ({host or 'unknown push service'})"
    return f"device {address[:12]}…"


def register_device(user: Any, kind: str, address: str) -> tuple[ContactPoint, bool]:
    """Add (or refresh) a device of ``user``, verified; returns (point, created).
    The newest registration becomes the primary one of its kind."""
    now = timezone.now()
    try:
        with transaction.atomic():
            point, created = ContactPoint.objects.get_or_create(
                user=user, kind=kind, address=address, defaults={"verified_at": now}
            )
    except IntegrityError:  # a concurrent registration of the same device won
        point, created = ContactPoint.objects.get(user=user, kind=kind, address=address), False
    ContactPoint.objects.filter(user=user, kind=kind).exclude(pk=point.pk).update(is_primary=False)
    ContactPoint.objects.filter(pk=point.pk).update(is_primary=True, verified_at=now)
    point.refresh_from_db()
    return point, created


def forget_device(user: Any, kind: str, address: str) -> int:
    """Remove one of ``user``'s devices (signed out, notifications turned off)."""
    deleted, _ = ContactPoint.objects.filter(user=user, kind=kind, address=address).delete()
    return deleted


def forget_gone(kind: str | None, address: str) -> int:
    """The provider says this device token is gone: delete it, whoever had it."""
    if kind not in DEVICE_KINDS or not address:
        return 0
    deleted, _ = ContactPoint.objects.filter(kind=kind, address=address).delete()
    return deleted
