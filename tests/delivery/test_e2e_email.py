"""End to end: a model save becomes an email at a real SMTP server and an inbox item.

Nothing is mocked: a ``User`` save bound with ``notify.emit_on`` stores the
event in the save's transaction, the worker fans it out through a rule with a
condition, applies each recipient's preferences, renders the templates and
sends through Django's SMTP backend to the aiosmtpd peer.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from notify import emit_on, trigger
from notify.delivery.rendering import template_store
from notify.delivery.retry import RetryPolicy
from notify.inbox.store import inbox
from notify.models import (
    Category,
    CategoryPreference,
    ChannelPreference,
    ContactPoint,
    Delivery,
    DeliveryAttempt,
    DeliveryMode,
    Event,
    Notification,
)
from notify.models.status import Status
from notify.runtime.worker import run_until_idle
from rules.models import Rule

User = get_user_model()

TEMPLATES = {
    "email.subject": "Account {{ payload.object.username }} was deactivated\n",
    "email.txt": (
        "Hi {{ recipient.first_name or recipient.name }},\n\n"
        "The account {{ payload.object.username }} ({{ payload.object.first_name }}) was deactivated.\n"
    ),
    "email.html": (
        "<p>Hi {{ recipient.first_name or recipient.name }},</p>\n"
        "<p>The account <strong>{{ payload.object.username }}</strong> "
        "({{ payload.object.first_name }}) was deactivated.</p>\n"
    ),
    "inapp": (
        "Account {{ payload.object.username }} deactivated\n"
        "{{ payload.object.first_name }} can no longer sign in."
    ),
}


def write_message(directory: Path, name: str, parts: dict[str, str]) -> None:
    folder = directory / name
    folder.mkdir(parents=True, exist_ok=True)
    for part, source in parts.items():
        (folder / part).write_text(source, encoding="utf-8")


@pytest.fixture
def message_templates(db, settings, tmp_path):
    """A template folder of our own in front of the shipped ones."""
    directory = tmp_path / "templates"
    write_message(directory, "account_deactivated", TEMPLATES)
    settings.NOTIFY = {
        **settings.NOTIFY,
        "TEMPLATE_DIRS": [str(directory), *settings.NOTIFY["TEMPLATE_DIRS"]],
    }
    template_store.refresh(force=True)
    yield directory
    template_store.refresh(force=True)


@pytest.fixture
def deactivation_emits():
    """Bind ``User`` saves to ``user.updated`` events for the security team."""
    disconnect = emit_on(
        User,
        updated="user.updated",
        fields=["username", "first_name", "is_active"],
        recipients=lambda user: User.objects.filter(groups__name="Security").order_by("pk"),
    )
    yield
    disconnect()


@pytest.fixture
def security_team(make_user):
    """Alice (verified contact point), Bob (opts out, per variant), Carol (no address)."""
    security = Category.objects.create(key="security", name="Security")
    Rule.objects.create(
        name="account deactivated",
        event_type="user.updated",
        condition="not payload.object.is_active",
        category=security,
        recipients=["explicit"],
        channels=["email", "inapp"],
        message="account_deactivated",
    )
    alice = make_user("alice", first_name="Alice", email="alice@old.example")
    ContactPoint.objects.create(
        user=alice,
        kind=ContactPoint.Kind.EMAIL,
        address="alice@mail.example",
        verified_at=timezone.now(),
        is_primary=True,
    )
    bob = make_user("bob", first_name="Bob")
    carol = make_user("carol", first_name="Carol", email="")
    group = Group.objects.create(name="Security")
    group.user_set.add(alice, bob, carol)
    mallory = make_user("mallory", first_name="Mallory")
    return security, alice, bob, carol, mallory


def deliveries_of(event: Event) -> dict[tuple[str, str], Delivery]:
    return {
        (d.notification.user.username, d.channel): d
        for d in Delivery.objects.filter(notification__event=event).select_related(
            "notification__user"
        )
    }


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("bob_opts_out", ["email_channel_off", "category_off"])
def test_model_save_to_smtp_and_inbox(
    bob_opts_out,
    smtp_mailer,
    message_templates,
    deactivation_emits,
    security_team,
):
    security, alice, bob, carol, mallory = security_team
    if bob_opts_out == "email_channel_off":
        ChannelPreference.objects.create(
            user=bob, category=security, channel="email", enabled=False
        )
    else:
        CategoryPreference.objects.create(user=bob, category=security, mode=DeliveryMode.OFF)

    # A rolled-back save stores no event and sends nothing.
    with pytest.raises(RuntimeError), transaction.atomic():
        mallory.is_active = False
        mallory.save()
        assert Event.objects.count() == 1  # stored in the save's transaction...
        raise RuntimeError("the surrounding change fails")
    assert Event.objects.count() == 0  # ...and gone with it
    assert run_until_idle() == 0
    mallory.refresh_from_db()
    assert mallory.is_active

    # A committed save whose payload fails the condition: an event, no notification.
    mallory.first_name = "Mallory <b>"
    mallory.save()
    run_until_idle()
    [quiet] = Event.objects.all()
    assert quiet.status == Event.State.PROCESSED
    assert not Notification.objects.exists()

    # The save that matters.
    mallory.is_active = False
    mallory.save()
    run_until_idle()

    event = Event.objects.exclude(pk=quiet.pk).get()
    assert event.type == "user.updated"
    assert event.source == Event.Source.SIGNAL
    assert event.object_ref == f"auth.user:{mallory.pk}"
    assert event.payload == {
        "model": "auth.user",
        "pk": mallory.pk,
        "object": {"username": "mallory", "first_name": "Mallory <b>", "is_active": False},
        "changed": ["is_active"],
        "changes": {"is_active": {"old": True, "new": False}},
    }
    assert event.status == Event.State.PROCESSED

    # Alice: one email at the SMTP server, rendered, to her verified contact point.
    [email] = smtp_mailer.messages
    assert email.rcpt_tos == ("alice@mail.example",)
    assert email.subject == "Account mallory was deactivated"
    # Rendered into the email layout (notify.delivery.layouts): its footer, CSS inlined.
    assert email.text.startswith(
        "Hi Alice,\n\nThe account mallory (Mallory <b>) was deactivated.\n\n--\n"
    )
    assert (
        "Manage your notifications: http://127.0.0.1:8000/settings/notifications/\n" in email.text
    )
    assert '<p style="margin: 0 0 16px 0;">Hi Alice,</p>' in email.html
    assert "<strong>mallory</strong> (Mallory &lt;b&gt;) was deactivated.</p>" in email.html
    rows = deliveries_of(event)
    alice_email = rows[("alice", "email")]
    assert alice_email.status == Status.SENT
    assert alice_email.attempts == 1
    assert alice_email.provider == "smtp"
    assert alice_email.provider_message_id == email.message_id
    assert email.headers["X-Notify-Delivery"] == str(alice_email.pk)
    [attempt] = alice_email.attempt_log.all()
    assert attempt.outcome == DeliveryAttempt.Outcome.SENT
    assert attempt.sent["to"] == "alice@mail.example"
    assert attempt.sent["subject"] == email.subject
    [item] = inbox(alice.pk)
    assert item.title == "Account mallory deactivated"
    assert item.body == "Mallory <b> can no longer sign in."
    assert rows[("alice", "inapp")].status == Status.SENT

    # Bob opted out: no email; a skip with the reason, never a failure.
    assert smtp_mailer.messages_to(bob.email) == []
    assert rows[("bob", "email")].status == Status.SKIPPED
    assert rows[("bob", "email")].skip_reason == "opted_out"
    if bob_opts_out == "email_channel_off":
        assert rows[("bob", "inapp")].status == Status.SENT
        assert inbox(bob.pk).count() == 1
    else:
        assert rows[("bob", "inapp")].status == Status.SKIPPED
        assert rows[("bob", "inapp")].skip_reason == "opted_out"
        assert inbox(bob.pk).count() == 0

    # Carol has no address: the email is skipped (not failed); the inbox still works.
    assert rows[("carol", "email")].status == Status.SKIPPED
    assert rows[("carol", "email")].skip_reason == "no_address"
    assert rows[("carol", "email")].error_message == ""
    assert rows[("carol", "inapp")].status == Status.SENT
    assert inbox(carol.pk).count() == 1

    assert set(rows) == {(u, c) for u in ("alice", "bob", "carol") for c in ("email", "inapp")}
    assert not Delivery.objects.filter(status__in=[Status.FAILED, Status.DEAD]).exists()

    # Running the worker again changes nothing.
    assert run_until_idle() == 0
    assert len(smtp_mailer.messages) == 1


# -- the SMTP server misbehaves ---------------------------------------------------------


@pytest.fixture
def shipped_email(make_user, make_rule, smtp_mailer):
    """One email delivery for Alice, fanned out and waiting for a worker."""
    alice = make_user("alice", first_name="Alice")
    make_rule(channels=["email"])

    def send() -> Event:
        return trigger("order.shipped", {"order_id": "A1"}, recipients=[alice])

    return alice, send


def make_due(delivery: Delivery) -> None:
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())


def test_smtp_down_then_up_sends_exactly_once(smtp_mailer, shipped_email):
    _alice, send = shipped_email
    smtp_mailer.stop()
    policy = RetryPolicy.from_settings()
    low, high = policy.bounds(1)

    before = timezone.now()
    send()
    run_until_idle()
    after = timezone.now()

    delivery = Delivery.objects.get()
    assert delivery.status == Status.PENDING
    assert delivery.attempts == 1
    assert delivery.claimed_until is None
    assert before + timedelta(seconds=low) <= delivery.next_attempt_at
    assert delivery.next_attempt_at <= after + timedelta(seconds=high)
    [attempt] = delivery.attempt_log.all()
    assert attempt.outcome == DeliveryAttempt.Outcome.TRANSIENT
    assert attempt.retry_at == delivery.next_attempt_at
    assert "cannot reach the mail server" in attempt.error_message
    assert run_until_idle() == 0  # not due yet

    smtp_mailer.start()
    make_due(delivery)
    run_until_idle()

    delivery.refresh_from_db()
    assert delivery.status == Status.SENT
    assert delivery.attempts == 2
    assert [a.outcome for a in delivery.attempt_log.all()] == ["transient", "sent"]
    [email] = smtp_mailer.messages
    assert email.rcpt_tos == ("alice@example.com",)
    assert email.subject == "Your order A1 has shipped"
    assert delivery.provider_message_id == email.message_id

    make_due(delivery)
    assert run_until_idle() == 0
    assert len(smtp_mailer.messages) == 1


def test_smtp_550_fails_with_the_reason_and_is_not_retried(smtp_mailer, shipped_email):
    alice, send = shipped_email
    smtp_mailer.reject(alice.email, 550)
    send()
    run_until_idle()

    delivery = Delivery.objects.get()
    assert delivery.status == Status.FAILED
    assert delivery.attempts == 1
    assert delivery.error_code == "550"
    assert "550" in delivery.error_message
    assert "User unknown" in delivery.error_message
    [attempt] = delivery.attempt_log.all()
    assert attempt.outcome == DeliveryAttempt.Outcome.PERMANENT
    assert attempt.retry_at is None

    smtp_mailer.accept(alice.email)
    make_due(delivery)
    assert run_until_idle() == 0
    assert smtp_mailer.messages == []
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (Status.FAILED, 1)


def test_smtp_451_is_retried_then_sent(smtp_mailer, shipped_email):
    _alice, send = shipped_email
    smtp_mailer.defer_next(1, 451)
    send()
    run_until_idle()

    delivery = Delivery.objects.get()
    assert delivery.status == Status.PENDING
    assert delivery.attempts == 1
    assert delivery.error_code == "451"
    assert delivery.next_attempt_at > timezone.now()
    assert smtp_mailer.messages == []

    make_due(delivery)
    run_until_idle()
    delivery.refresh_from_db()
    assert delivery.status == Status.SENT
    assert delivery.attempts == 2
    assert [a.outcome for a in delivery.attempt_log.all()] == ["transient", "sent"]
    assert len(smtp_mailer.messages) == 1
