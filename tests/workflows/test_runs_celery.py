"""Workflow runs on the scaled-out path: PostgreSQL, a real ``celery -A notify
worker`` over RabbitMQ or Redis and a real ``manage.py notify scheduler``
(its tick publishes ``notify.advance_runs`` for the due runs). A run with an
in-app step, a delay and an email "if not read" goes to its end through
Celery, each step taken once: one in-app item, one email at the SMTP peer,
one history row per step, and nothing more after it is done."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from django.db import connection

import notify
from notify.models import Category, Delivery, DeliveryAttempt, WorkflowRun, WorkflowStepLog
from notify.models.status import Status
from rules.models import Rule, WorkflowStep
from tests.runtime import test_celery
from tests.scaleout import (
    celery_worker,
    drop_broker_queue,
    our_books,
    process_env,
    scheduler,
    unique_queue,
    wait_until,
)

# The Celery tests' fixtures: RabbitMQ or Redis, the machine to ourselves, the provider.
broker_url = test_celery.broker_url
machine = test_celery.machine
provider = test_celery.provider

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

# Long enough to see the run wait; short enough for a test.
DELAY = timedelta(seconds=4)


@pytest.fixture
def postgres():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (the scaled-out store)")


def test_a_run_with_a_delay_escalates_to_email_through_celery_exactly_once(
    postgres, machine, settings, tmp_path, provider, broker_url, smtp_peer, make_user
):
    category = Category.objects.create(key="incidents", name="Incidents")
    rule = Rule.objects.create(
        name="escalate",
        event_type="order.shipped",
        category=category,
        channels=[],
        message="order_shipped",
    )
    for position, fields in enumerate(
        (
            {"kind": "channel", "channels": ["inapp"]},
            {"kind": "delay", "delay": DELAY},
            {"kind": "channel", "channels": ["email"], "condition": "not read"},
        )
    ):
        WorkflowStep.objects.create(rule=rule, position=position, **fields)
    alice = make_user("alice", first_name="Alice")
    queue = unique_queue()
    test_celery.use_broker(settings, provider, broker_url, queue)
    env = process_env(
        tmp_path / "var", provider_url=provider.url, broker_url=broker_url, queue=queue
    )
    env["NOTIFY_EMAIL_BACKEND"] = "django.core.mail.backends.smtp.EmailBackend"
    env["NOTIFY_EMAIL_OPTIONS"] = json.dumps(smtp_peer.mailer_options())
    env["NOTIFY_SANDBOX"] = "0"
    worker = celery_worker("w0", env, tmp_path)
    leader = scheduler("scheduler", env, tmp_path)
    try:
        worker.start()
        leader.start()
        worker.wait_ready(90)
        leader.wait_ready(90)
        notify.trigger("order.shipped", {"order_id": "C1"}, recipients=[alice])

        def done() -> bool:
            return WorkflowRun.objects.filter(user=alice, state=WorkflowRun.State.DONE).exists()

        assert wait_until(done, 90), (our_books(), worker.text()[-3000:], leader.text()[-2000:])
        assert wait_until(lambda: len(smtp_peer.messages) >= 1, 30), worker.text()[-3000:]
        time.sleep(3)  # a few more ticks: nothing more happens
    finally:
        leader.stop()
        worker.stop()
        drop_broker_queue(broker_url, queue)
    run = WorkflowRun.objects.get(user=alice)
    history = list(
        WorkflowStepLog.objects.filter(run=run)
        .order_by("at", "id")
        .values_list("position", "kind", "decision")
    )
    assert history == [(0, "channel", "sent"), (1, "delay", "waited"), (2, "channel", "sent")]
    [message] = smtp_peer.messages
    assert message.to == "alice@example.com" and "C1" in message.subject
    sent = Delivery.objects.filter(notification=run.notification, status=Status.SENT)
    assert sorted(sent.values_list("channel", flat=True)) == ["email", "inapp"]
    assert DeliveryAttempt.objects.filter(outcome=DeliveryAttempt.Outcome.SENT).count() == 2
    assert our_books()["sent_twice"] == []
    email = sent.get(channel="email")
    assert email.sent_at - run.created_at >= DELAY  # after the delay, not before
