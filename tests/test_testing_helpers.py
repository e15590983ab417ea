"""The test helpers for applications (``notify.testing``, ``notify_outbox``),
used the way an application would: end to end, from a model save to what each
channel would have sent, with preferences, addresses and templates deciding.
"""

from __future__ import annotations

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

import notify
from notify.inbox.store import inbox
from notify.models import (
    ChannelPreference,
    ContactPoint,
    Delivery,
    Event,
)
from notify.testing import CapturingChannel, NotifyOutbox, capture_notifications

pytest_plugins = ["notify.pytest_plugin"]  # a no-op when the entry point loaded it

User = get_user_model()


@pytest.fixture
def group_saves_notify_members(make_rule, category):
    """``Group`` saves become ``group.updated`` events for the group's members."""
    make_rule(
        event_type="group.updated",
        message="order_shipped",
        recipients=["explicit"],
        channels=["email", "inapp", "sms"],
    )
    disconnect = notify.emit_on(
        Group,
        updated="group.updated",
        payload=lambda group: {"order_id": group.name, "carrier": "DHL"},
        recipients=lambda group: list(group.user_set.order_by("pk")),
    )
    yield
    disconnect()


@pytest.mark.django_db(transaction=True)
def test_a_model_save_end_to_end(make_user, category, group_saves_notify_members, notify_outbox):
    alice = make_user("alice", first_name="Alice")
    ContactPoint.objects.create(
        user=alice, kind="phone", address="+15551234567", verified_at=timezone.now()
    )
    bob = make_user("bob")
    ChannelPreference.objects.create(user=bob, category=category, channel="email", enabled=False)
    carol = make_user("carol", email="")
    group = Group.objects.create(name="G-42")
    group.user_set.add(alice, bob, carol)

    # A rolled-back save sends nothing...
    with pytest.raises(RuntimeError), transaction.atomic():
        group.save()
        raise RuntimeError("rolled back")
    notify_outbox.assert_nothing_sent()

    # ...a committed one is processed at the commit, in this thread.
    group.save()
    assert Event.objects.get().status == Event.State.PROCESSED
    assert len(notify_outbox.messages) == 5  # already there, before any flush

    [email, _inapp, sms] = notify_outbox.assert_notified(
        alice, "group.updated", channels=["email", "inapp", "sms"], count=1
    )
    assert (email.to, email.subject, email.category) == (
        "alice@example.com",
        "Your order G-42 has shipped",
        "orders",
    )
    assert "Hi Alice," in email.text and email.headers["List-Unsubscribe"].startswith("<http")
    assert (sms.to, sms.text) == ("+15551234567", "Order G-42 shipped (DHL).")
    assert [item.title for item in inbox(alice.pk)] == ["Order G-42 shipped"]  # in-app is real

    notify_outbox.assert_notified(bob, "group.updated", channels=["inapp"])
    notify_outbox.assert_not_notified(bob, channels=["email", "sms"])
    notify_outbox.assert_notified(carol, "group.updated", channels=["inapp"])
    notify_outbox.assert_not_notified(carol, "group.updated", channels=["email"])
    assert {m.channel for m in notify_outbox.for_channel("email")} == {"email"}
    assert [m.user_id for m in notify_outbox.for_channel("email")] == [alice.pk]
    assert len(notify_outbox.of_type("group.updated")) == 5
    # The deliveries are on the record as sent, by the capturing provider.
    assert set(Delivery.objects.filter(status="sent").values_list("provider", flat=True)) == {
        "capture"
    }


@pytest.mark.django_db
def test_in_a_test_transaction_the_outbox_runs_what_is_due(make_user, make_rule, notify_outbox):
    ann = make_user("ann")
    make_rule()
    notify.trigger("order.shipped", {"order_id": "A-1"}, recipients=[ann])
    assert notify_outbox.messages == []  # nothing committed, nothing processed yet
    [message] = notify_outbox.for_channel("email")  # reading runs what is due
    assert message.subject == "Your order A-1 has shipped"
    assert message.payload == {"order_id": "A-1"}
    notify_outbox.clear()
    notify_outbox.assert_nothing_sent()


@pytest.mark.django_db
def test_a_failed_assertion_says_what_happened_instead(make_user, make_rule, notify_outbox):
    carol = make_user("carol", email="")
    make_rule()
    notify.trigger("order.shipped", {"order_id": "A-2"}, recipients=[carol])
    with pytest.raises(AssertionError) as failure:
        notify_outbox.assert_notified(carol, "order.shipped", channels=["email", "inapp"])
    message = str(failure.value)
    assert "carol (user" in message and "nothing on email" in message
    assert "email: skipped (no_address)" in message
    assert "inapp: sent" in message

    with pytest.raises(AssertionError, match="was notified, and should not have been"):
        notify_outbox.assert_not_notified(carol)
    with pytest.raises(AssertionError, match=r"1 message\(s\) were sent"):
        notify_outbox.assert_nothing_sent()
    with pytest.raises(AssertionError, match=r"No delivery of 'order\.cancelled'"):
        notify_outbox.assert_notified(carol, "order.cancelled")
    with pytest.raises(AssertionError, match=r"1 message\(s\) on inapp, not 2"):
        notify_outbox.assert_notified(carol, "order.shipped", channels=["inapp"], count=2)


@pytest.mark.django_db
def test_capturing_swaps_every_channel_and_restores_them(settings, make_user, make_rule):
    before = settings.NOTIFY["CHANNELS"]
    with capture_notifications() as outbox:
        channels = django_settings.NOTIFY["CHANNELS"]
        assert set(channels) == set(before)
        assert {c["BACKEND"] for c in channels.values()} == {"notify.testing.CapturingChannel"}
        assert channels["email"]["OPTIONS"]["ADDRESS_KIND"] == "email"
        assert channels["inapp"]["OPTIONS"]["WRAPPED"] == before["inapp"]
        assert channels["email"]["OPTIONS"]["WRAPPED"] is None
        assert django_settings.NOTIFY["EAGER"] is True
        make_rule()
        notify.trigger("order.shipped", {"order_id": "A-3"}, recipients=[make_user("dan")])
        assert len(outbox) == 2
    assert django_settings.NOTIFY["CHANNELS"] == before
    assert django_settings.NOTIFY["EAGER"] is False


@pytest.mark.django_db
def test_nothing_reaches_the_sandbox_or_a_provider(settings, make_user, make_rule, notify_outbox):
    from channels import sandbox

    make_rule(channels=["email", "sms", "chat"])
    notify.trigger("order.shipped", {"order_id": "A-4"}, recipients=[make_user("eve")])
    assert len(notify_outbox) == 1  # email; no phone or chat address: skipped
    assert sandbox.read(directory=settings.NOTIFY["SANDBOX_DIR"]) == []


def test_the_capturing_channel_describes_itself_like_the_original():
    channel = CapturingChannel("sms", ADDRESS_KIND="phone", FORMAT="sms")
    assert (channel.address_kind, channel.message_format, channel.inner) == ("phone", "sms", None)


# -- the block: everything inside is processed by the time it exits -----------------------


@pytest.mark.django_db
def test_after_the_block_the_outbox_is_complete(make_user, make_rule, smtp_mailer):
    """In a test transaction that never commits: nothing is read inside the
    block, and after it the message is captured, not sent by the real SMTP
    provider the settings point at."""
    ann = make_user("ann")
    make_rule()
    with capture_notifications() as outbox:
        notify.trigger("order.shipped", {"order_id": "A-5"}, recipients=[ann])
        assert outbox.messages == []  # nothing committed, nothing read yet
    [email, _inapp] = outbox.assert_notified(ann, "order.shipped", channels=["email", "inapp"])
    assert (email.to, email.subject) == ("ann@example.com", "Your order A-5 has shipped")
    assert set(Delivery.objects.values_list("status", "provider")) == {("sent", "capture")}
    assert Event.objects.get().status == Event.State.PROCESSED
    assert smtp_mailer.messages == []
    assert [item.title for item in inbox(ann.pk)] == ["Order A-5 shipped"]

    # After the block the outbox is a record: reading it runs nothing, so an
    # event triggered now is left for the real workers, not captured.
    later = notify.trigger("order.shipped", {"order_id": "A-6"}, recipients=[ann])
    assert len(outbox) == 2 and outbox.flush() == 0
    assert Event.objects.get(pk=later.pk).status == Event.State.RECEIVED
    assert smtp_mailer.messages == []


@pytest.mark.django_db(transaction=True)
def test_an_event_committed_after_the_block_never_reaches_the_provider(
    make_user, make_rule, smtp_mailer
):
    """The block inside an atomic block: the commit (and its hand-off) comes
    after the block, with the real channels configured again; the event was
    processed and captured as the block exited, so there is nothing left."""
    bea = make_user("bea")
    make_rule(channels=["email"])
    with transaction.atomic():
        with capture_notifications() as outbox:
            notify.trigger("order.shipped", {"order_id": "A-7"}, recipients=[bea])
        assert [m.subject for m in outbox.messages] == ["Your order A-7 has shipped"]
    assert Event.objects.get().status == Event.State.PROCESSED
    assert Delivery.objects.get().provider == "capture"
    assert smtp_mailer.messages == []


@pytest.mark.django_db
def test_an_error_in_the_block_still_leaves_nothing_for_the_real_channels(
    make_user, make_rule, smtp_mailer
):
    cy = make_user("cy")
    make_rule(channels=["email"])
    with pytest.raises(ZeroDivisionError), capture_notifications() as outbox:
        notify.trigger("order.shipped", {"order_id": "A-8"}, recipients=[cy])
        raise ZeroDivisionError
    assert [m.to for m in outbox.messages] == ["cy@example.com"]
    assert smtp_mailer.messages == []


@pytest.mark.django_db
def test_the_fixture_is_the_same_block_around_the_test(notify_outbox):
    assert isinstance(notify_outbox, NotifyOutbox) and notify_outbox.capturing
    backends = {c["BACKEND"] for c in django_settings.NOTIFY["CHANNELS"].values()}
    assert backends == {"notify.testing.CapturingChannel"}
