"""Contact points: add, verify, make primary, remove. Plain functions, no views.

An address is used only once it is verified (``notify.preferences.decide.decide``
skips unverified ones), and each kind is verified by proving it receives what
is sent to it:

* an **email address** by a signed link (``TimestampSigner``, salted, holding
  the contact point's id, its address and when the link was sent, so a newer
  link replaces an older one; it expires after 24 hours). The link opens a
  confirmation page; only its POST verifies, so a mail scanner that follows
  links verifies nothing. It is sent through Django's mailers.
* **every other kind** (a phone number, a Slack member id, a webhook URL) by a
  6-digit code sent through the channel that uses that kind of address (a
  phone through ``"sms"``). Only an HMAC of the code is stored; a code lives
  10 minutes and allows 5 tries, then a new one is needed.

Sending is limited twice: one code or link per contact point per minute, and
``SENDS_PER_HOUR`` per user in all (codes cost money and could pester a
stranger's phone).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone

from channels.base import ChannelConfigurationError, ChannelError, OutgoingMessage
from notify import conf
from notify.models import ContactPoint
from notify.pages import ratelimit
from notify.pages.addresses import LABELS, addable_kinds, channel_for, display, normalise
from notify.registry import build_channel

log = logging.getLogger("notify.pages")

Kind = ContactPoint.Kind

LINK_SALT = "notify.contact-points.verify-email"
LINK_MAX_AGE = timedelta(hours=24)
CODE_TTL = timedelta(minutes=10)
CODE_ATTEMPTS = 5
RESEND_INTERVAL = timedelta(seconds=60)
SENDS_PER_HOUR = 10
MAX_CONTACT_POINTS = 20
CODE = re.compile(r"^\d{6}$")


class ContactError(Exception):
    """An action on a contact point was refused; ``field`` is the form field to
    show the message next to (``kind``, ``address`` or ``code``)."""

    def __init__(self, message: str, field: str = "address"):
        super().__init__(message)
        self.message = message
        self.field = field


class BadLink(Exception):
    """An email verification link that cannot be used; the message says why."""


# -- add, make primary, remove -------------------------------------------------------


def add(user: Any, kind: Any, raw: Any) -> ContactPoint:
    kinds = addable_kinds()
    if kind not in kinds:
        raise ContactError(
            f"choose one of: {', '.join(LABELS[k].lower() for k in kinds)}", field="kind"
        )
    try:
        address = normalise(kind, raw)
    except ValidationError as exc:
        raise ContactError(exc.messages[0]) from None
    if ContactPoint.objects.filter(user_id=user.pk).count() >= MAX_CONTACT_POINTS:
        raise ContactError(f"you have {MAX_CONTACT_POINTS} contact points; remove one first")
    duplicate = ContactPoint.objects.filter(user_id=user.pk, kind=kind, address=address)
    if duplicate.exists():
        raise ContactError(f"you already added {address}")
    try:
        with transaction.atomic():
            return ContactPoint.objects.create(user_id=user.pk, kind=kind, address=address)
    except IntegrityError:  # the same address added at the same moment
        raise ContactError(f"you already added {address}") from None


def make_primary(point: ContactPoint) -> None:
    if not point.verified:
        raise ContactError("verify this address before making it primary", field="primary")
    with transaction.atomic():
        ContactPoint.objects.filter(user_id=point.user_id, kind=point.kind).exclude(
            pk=point.pk
        ).update(is_primary=False)
        ContactPoint.objects.filter(pk=point.pk).update(is_primary=True)


def remove(point: ContactPoint) -> None:
    """Delete it; if it was primary, the oldest verified one of its kind takes over."""
    with transaction.atomic():
        point.delete()
        if point.is_primary:
            _ensure_primary(point.user_id, point.kind)


def _ensure_primary(user_id: int, kind: str) -> None:
    same_kind = ContactPoint.objects.filter(user_id=user_id, kind=kind)
    if same_kind.filter(is_primary=True).exists():
        return
    successor = same_kind.filter(verified_at__isnull=False).order_by("verified_at", "pk").first()
    if successor is not None:
        same_kind.filter(pk=successor.pk).update(is_primary=True)


# -- sending codes and links ---------------------------------------------------------


def verification_method(point: ContactPoint) -> str:
    return "link" if point.kind == Kind.EMAIL else "code"


def code_hash(point: ContactPoint, code: str) -> str:
    """HMAC of the code, bound to this contact point and address."""
    message = f"notify.contact-code:{point.pk}:{point.address}:{code}".encode()
    return hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).hexdigest()


def resend_wait(point: ContactPoint, now: datetime) -> int:
    """Seconds until another code or link may be sent (0: now)."""
    if point.verification_sent_at is None:
        return 0
    left = point.verification_sent_at + RESEND_INTERVAL - now
    return max(0, int(left.total_seconds() + 0.999))


def code_state(point: ContactPoint, now: datetime) -> str:
    """``waiting`` (a code can be entered), ``expired``, ``used_up`` or ``none``."""
    if not point.verification_hash or point.verification_sent_at is None:
        return "none"
    if point.verification_attempts >= CODE_ATTEMPTS:
        return "used_up"
    if now - point.verification_sent_at > CODE_TTL:
        return "expired"
    return "waiting"


def send_verification(point: ContactPoint, *, now: datetime | None = None) -> str:
    """Send a new code or link; returns a sentence saying what was sent."""
    now = now or timezone.now()
    if point.verified:
        raise ContactError(f"{point.address} is already verified", field="code")
    wait = resend_wait(point, now)
    if wait:
        raise ContactError(
            f"we sent one moments ago; you can ask for another in {ratelimit.wait_text(wait)}",
            field="code",
        )
    over = ratelimit.hit(f"verify:{point.user_id}", limit=SENDS_PER_HOUR, window=3600)
    if over:
        raise ContactError(
            f"you have asked for {SENDS_PER_HOUR} codes and links this hour; "
            f"try again in {ratelimit.wait_text(over)}",
            field="code",
        )
    code = f"{secrets.randbelow(1_000_000):06d}"
    new_hash = "" if point.kind == Kind.EMAIL else code_hash(point, code)
    # Claim the send: a parallel request finds the minute taken and stops here.
    previous = point.verification_sent_at
    claimed = (
        ContactPoint.objects.filter(pk=point.pk, verified_at__isnull=True)
        .filter(
            Q(verification_sent_at__isnull=True)
            | Q(verification_sent_at__lte=now - RESEND_INTERVAL)
        )
        .update(verification_sent_at=now, verification_hash=new_hash, verification_attempts=0)
    )
    if not claimed:
        raise ContactError("we sent one moments ago; try again in a minute", field="code")
    point.verification_sent_at, point.verification_hash = now, new_hash
    point.verification_attempts = 0
    try:
        if point.kind == Kind.EMAIL:
            _send_link(point)
            return f"We sent a link to {point.address}. It works for 24 hours."
        _send_code(point, code)
        return f"We sent a 6-digit code to {display(point)}. It works for 10 minutes."
    except ContactError:
        # Nothing went out: forget the code and let the user try again at once.
        ContactPoint.objects.filter(pk=point.pk, verification_sent_at=now).update(
            verification_sent_at=previous, verification_hash=""
        )
        point.verification_sent_at, point.verification_hash = previous, ""
        raise


def _send_code(point: ContactPoint, code: str) -> None:
    alias = channel_for(point.kind)
    if alias is None:
        raise ContactError("no channel can send to this kind of address now", field="code")
    text = f"Your notify code is {code}"
    message = OutgoingMessage(
        delivery_id=0, channel=alias, to=point.address, subject="Your notify code", text=text
    )
    try:
        with build_channel(alias) as channel:
            channel.send(message)
    except ChannelError as exc:
        log.warning("verification code to contact point %s failed: %s", point.pk, exc)
        raise ContactError(f"we could not send the code: {exc.message}", field="code") from None
    except ChannelConfigurationError:
        log.exception("channel %r cannot send verification codes", alias)
        raise ContactError(
            "sending codes does not work right now; please try again later", field="code"
        ) from None


def email_token(point: ContactPoint) -> str:
    sent = point.verification_sent_at
    stamp = int(sent.timestamp()) if sent else 0
    return signing.TimestampSigner(salt=LINK_SALT).sign_object(
        {"id": point.pk, "address": point.address, "sent": stamp}, compress=True
    )


def _email_mailer() -> str:
    options = (conf.get("CHANNELS").get("email") or {}).get("OPTIONS") or {}
    return options.get("MAILER", "default")


def _send_link(point: ContactPoint) -> None:
    site = conf.get("SITE_URL").rstrip("/")
    link = site + reverse("notify-settings:verify-email", args=[email_token(point)])
    body = (
        "Hello,\n\n"
        f"Someone, probably you, asked to receive notifications at {point.address}.\n"
        "To confirm, open this link and press Confirm:\n\n"
        f"{link}\n\n"
        "The link works once, for 24 hours. If you did not ask for this, ignore this email: "
        "nothing will be sent to you.\n"
    )
    email = EmailMessage("Confirm your email address for notifications", body, to=[point.address])
    try:
        email.send(using=_email_mailer())
    except Exception as exc:  # any mailer: SMTP, an ESP, the sandbox
        log.warning("verification link to contact point %s failed: %s", point.pk, exc)
        raise ContactError(
            "we could not send the email just now; please try again in a minute", field="code"
        ) from None


# -- checking codes and links --------------------------------------------------------


def check_code(point: ContactPoint, code: Any, *, now: datetime | None = None) -> None:
    """Verify the contact point if ``code`` is right; raise ``ContactError`` if not."""
    now = now or timezone.now()
    if point.verified:
        raise ContactError(f"{point.address} is already verified", field="code")
    code = re.sub(r"[\s-]", "", code) if isinstance(code, str) else ""
    if not CODE.match(code):
        raise ContactError("enter the 6 digits of the code we sent", field="code")
    state = code_state(point, now)
    if state == "none":
        raise ContactError("no code is waiting; send a new code", field="code")
    if state == "used_up":
        raise ContactError("too many wrong tries; send a new code", field="code")
    if state == "expired":
        raise ContactError("this code has expired (codes work 10 minutes); send a new one", "code")
    # Count the try before comparing, in one conditional update, so parallel
    # guesses cannot go past the limit.
    counted = ContactPoint.objects.filter(
        pk=point.pk,
        verification_hash=point.verification_hash,
        verification_attempts__lt=CODE_ATTEMPTS,
    ).update(verification_attempts=F("verification_attempts") + 1)
    if not counted:
        raise ContactError("too many wrong tries; send a new code", field="code")
    point.verification_attempts += 1
    if not hmac.compare_digest(point.verification_hash, code_hash(point, code)):
        left = CODE_ATTEMPTS - point.verification_attempts
        if left <= 0:
            raise ContactError(
                "that code is not right and that was the last try; send a new code", "code"
            )
        tries = "1 try" if left == 1 else f"{left} tries"
        raise ContactError(f"that code is not right; {tries} left", field="code")
    _mark_verified(point, now, verification_hash=point.verification_hash)


def _mark_verified(point: ContactPoint, now: datetime, **still: Any) -> bool:
    with transaction.atomic():
        done = ContactPoint.objects.filter(pk=point.pk, verified_at__isnull=True, **still).update(
            verified_at=now, verification_hash="", verification_attempts=0
        )
        if done:
            point.verified_at = now
            _ensure_primary(point.user_id, point.kind)
    return bool(done)


def contact_for_link(token: str, user: Any) -> ContactPoint:
    """The user's email contact point a link verifies, or ``BadLink`` saying why not."""
    try:
        data = signing.TimestampSigner(salt=LINK_SALT).unsign_object(token, max_age=LINK_MAX_AGE)
    except signing.SignatureExpired:
        raise BadLink(
            "This link has expired: links work for 24 hours. Send a new one from your settings."
        ) from None
    except (signing.BadSignature, ValueError):
        raise BadLink(
            "This link is not valid. Check that you opened the whole link, or send a new one."
        ) from None
    if not isinstance(data, dict):
        raise BadLink("This link is not valid. Send a new one from your settings.")
    point = ContactPoint.objects.filter(
        pk=data.get("id"), user_id=user.pk, kind=Kind.EMAIL, address=data.get("address")
    ).first()
    if point is None:  # removed, or another account's: say the same either way
        raise BadLink(
            "This link is not for an address on your account. Sign in as the account "
            "that added the address, or add it again."
        )
    if point.verified:
        raise BadLink(f"This link was already used: {point.address} is verified.")
    sent = point.verification_sent_at
    if sent is None or int(sent.timestamp()) != data.get("sent"):
        raise BadLink("A newer link was sent for this address: use the latest email.")
    return point


def confirm_link(token: str, user: Any, *, now: datetime | None = None) -> ContactPoint:
    """Verify the email address a link is for (once)."""
    point = contact_for_link(token, user)
    if not _mark_verified(
        point, now or timezone.now(), verification_sent_at=point.verification_sent_at
    ):
        raise BadLink(f"This link was already used: {point.address} is verified.")
    return point
