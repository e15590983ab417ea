"""What a batch of digests shares (issue 14): one channel session for the whole
run, an item's title rendered once per batch when its template reads nothing
of the recipient's (and per recipient when it does), and the events, rules and
categories of the items read once per batch."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import time_machine

from notify.delivery.rendering import template_store
from notify.models import MessageTemplate
from notify.scheduling.digests import message as digest_message
from notify.scheduling.digests import send as digest_send
from notify.scheduling.digests.send import build_and_send_due_digests
from tests.scheduling.test_digests import digest_user, shipped

T0 = datetime(2026, 11, 20, 12, tzinfo=UTC)
DUE = datetime(2026, 11, 21, 8, 5, tzinfo=UTC)


@pytest.fixture
def five_users(make_user, make_rule, category):
    make_rule(name="shipped", channels=["email"])
    return [digest_user(make_user, [category], f"c{i}", hour=8) for i in range(5)]


def counting(monkeypatch, module, name: str) -> list[int]:
    calls: list[int] = []
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def test_one_channel_session_carries_every_batch(settings, smtp_mailer, five_users, monkeypatch):
    settings.NOTIFY = {**settings.NOTIFY, "DIGEST_BATCH_SIZE": 2}
    built = counting(monkeypatch, digest_send, "build_channel")
    with time_machine.travel(T0, tick=False) as clock:
        shipped(*five_users, order_id="A1")
        shipped(*five_users, order_id="A2")
        clock.move_to(DUE)
        stats = build_and_send_due_digests()
    assert stats.sent == 5 and len(smtp_mailer.messages) == 5
    assert len(built) == 1  # three batches, one channel instance (was one per batch)


def test_a_title_that_reads_nothing_of_the_recipient_is_rendered_once_per_batch(
    smtp_mailer, five_users, monkeypatch
):
    contexts = counting(monkeypatch, digest_message, "render_context")
    with time_machine.travel(T0, tick=False) as clock:
        shipped(*five_users, order_id="A1")
        shipped(*five_users, order_id="A2")
        clock.move_to(DUE)
        assert build_and_send_due_digests().sent == 5
    assert len(contexts) == 2  # one per event (was one per item: 10)
    for message in smtp_mailer.messages:
        assert "Order A1 shipped" in message.text and "Order A2 shipped" in message.text


def test_a_title_that_reads_the_recipient_is_rendered_for_each(smtp_mailer, five_users):
    MessageTemplate.objects.create(
        message="order_shipped",
        part="inapp",
        body="Order {{ payload.order_id }} for {{ recipient.first_name }}",
    )
    template_store.clear()
    with time_machine.travel(T0, tick=False) as clock:
        shipped(*five_users, order_id="A1")
        clock.move_to(DUE)
        assert build_and_send_due_digests().sent == 5
    by_address = {m.rcpt_tos[0]: m.text for m in smtp_mailer.messages}
    for user in five_users:
        assert f"Order A1 for {user.first_name}" in by_address[user.email]
