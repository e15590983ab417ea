"""A provider's permanent refusal of an address suppresses it, and the rule's
fallback then uses the other channel (issue 12).

Real sends: worker → EmailChannel → Django's SMTP backend → aiosmtpd peer
(``550 5.1.1``), or → anymail's Postmark backend → the Postmark peer (406
inactive recipient, 300 invalid 'To').
"""

from __future__ import annotations

import pytest
from django.utils import timezone

from notify import trigger
from notify.models import ContactPoint, Delivery, Suppression
from notify.models.status import Status
from notify.preferences.suppressions import is_suppressed
from notify.runtime.worker import run_until_idle

pytestmark = pytest.mark.django_db
PHONE = "+14155552671"


@pytest.fixture
def alice(make_user, make_rule, twilio_sms):
    """The email rule falls back to SMS, sent through Twilio (the local peer)."""
    make_rule(channels=["email", "sms"], fallback={"sms": "email"})
    user = make_user("alice")
    ContactPoint.objects.create(user=user, kind="phone", address=PHONE, verified_at=timezone.now())
    return user


def shipped(user, order_id: str) -> dict[str, Delivery]:
    event = trigger("order.shipped", {"order_id": order_id}, recipients=[user])
    run_until_idle()
    return {d.channel: d for d in Delivery.objects.filter(notification__event=event)}


def assert_refused_then_fallback(user, received_by_peer, texts, reason: str) -> None:
    first = shipped(user, "A1")
    email = first["email"]
    assert (email.status, email.attempts) == (Status.FAILED, 1)
    assert email.attempt_log.count() == 1
    assert first["sms"].status == Status.SKIPPED  # the email was usable at fan-out
    assert received_by_peer() == 0
    assert texts() == 0
    assert is_suppressed("email", user.email)
    assert Suppression.objects.get(address=user.email).reason == reason

    second = shipped(user, "A2")
    assert second["email"].status == Status.SKIPPED
    assert second["email"].skip_reason == "suppressed"
    assert second["sms"].status == Status.SENT  # the fallback channel took over
    assert texts() == 1  # counted at the Twilio peer
    assert received_by_peer() == 0  # nothing more was tried on the refused address


def test_smtp_550_5_1_1_suppresses_and_the_fallback_is_used_next(smtp_mailer, twilio_sms, alice):
    smtp_mailer.reject(alice.email, 550, "5.1.1 <alice@example.com>: Recipient address rejected")
    texts = lambda: len(twilio_sms.messages_to(PHONE))  # noqa: E731
    assert_refused_then_fallback(alice, lambda: len(smtp_mailer.messages), texts, "hard_bounce")
    assert smtp_mailer.refused == 1  # one RCPT TO for the first event only


def test_smtp_5_1_10_null_mx_suppresses(smtp_mailer, alice):
    smtp_mailer.reject(alice.email, 556, "5.1.10 Recipient address has null MX")
    shipped(alice, "A1")
    assert is_suppressed("email", alice.email)


def test_a_bare_550_without_an_address_status_does_not_suppress(smtp_mailer, alice):
    """ "550 Mailbox unavailable" may be policy or a full disk: fail, do not suppress."""
    smtp_mailer.reject(alice.email, 550, "Requested action not taken: mailbox unavailable")
    first = shipped(alice, "A1")
    assert first["email"].status == Status.FAILED
    assert not is_suppressed("email", alice.email)


@pytest.mark.parametrize(("kind", "reason"), [("inactive", "hard_bounce"), ("invalid", "invalid")])
def test_postmark_inactive_or_invalid_recipient_suppresses(
    settings, esp_mailer, twilio_sms, alice, kind, reason
):
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {
            **settings.NOTIFY["CHANNELS"],
            "email": {"BACKEND": "channels.email.EmailChannel", "OPTIONS": {"MAILER": "postmark"}},
        },
    }
    esp_mailer.reject(alice.email, kind)
    texts = lambda: len(twilio_sms.messages_to(PHONE))  # noqa: E731
    assert_refused_then_fallback(alice, lambda: len(esp_mailer.messages), texts, reason)
    assert len(esp_mailer.requests) == 1
