"""Restarts are harmless: a fresh worker's threads never see a half-loaded template store.

A message that exists only as admin overrides is sent by a fresh worker pool
of 4 threads, 20 times over, at the default ``CONFIG_CHECK_INTERVAL``: no
delivery may fail with "message … has no 'email.subject' part" (a thread that
read the store while another was still loading the overrides), and every email
the SMTP peer receives carries the override's subject.
"""

from __future__ import annotations

import threading
import time

import pytest
from django.utils import timezone

from notify import conf, trigger
from notify.delivery.rendering import TemplateStore, template_store
from notify.fanout.pipeline import process_event
from notify.models import Delivery, MessageTemplate
from notify.models.status import Status
from notify.runtime.worker import WorkerPool
from tests.scaleout import seed_group, wait_until

RESTARTS = 20
THREADS = 4
USERS = 200  # four batches at the default WORKER_BATCH_SIZE: every thread takes one


@pytest.fixture
def default_check_interval(settings):
    """The suite checks revisions on every read (interval 0, which hides the race);
    a real worker checks once a second."""
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CONFIG_CHECK_INTERVAL": conf.SETTINGS["CONFIG_CHECK_INTERVAL"].default,
    }


@pytest.mark.django_db(transaction=True)
def test_fresh_pool_renders_admin_only_message(
    settings, smtp_mailer, make_rule, default_check_interval
):
    MessageTemplate.objects.create(
        message="launch_notice", part="email.subject", body="Launch {{ payload.n }}"
    )
    MessageTemplate.objects.create(
        message="launch_notice", part="email.txt", body="Hello {{ recipient.username }}."
    )
    seed_group("crew", USERS)
    make_rule(recipients=["group:crew"], channels=["email"], message="launch_notice")

    failures: list[str] = []
    for n in range(RESTARTS):
        event = trigger("order.shipped", {"n": n})
        assert process_event(event.pk) is not None
        Delivery.objects.filter(status=Status.PENDING).update(next_attempt_at=timezone.now())
        template_store.clear()  # what a restarted process starts with
        pool = WorkerPool(threads=THREADS, poll_interval=0.05)
        pool.start()
        try:
            assert wait_until(
                lambda ev=event: (
                    not Delivery.objects.filter(notification__event=ev)
                    .exclude(status__in=Status.FINAL)
                    .exists()
                ),
                timeout=60,
            ), f"restart {n}: deliveries left"
        finally:
            pool.stop()
        failures += list(
            Delivery.objects.filter(notification__event=event)
            .exclude(status=Status.SENT)
            .values_list("status", "error_message")
        )

    assert failures == []
    received = smtp_mailer.messages
    assert len(received) == RESTARTS * USERS
    assert {m.subject for m in received} == {f"Launch {n}" for n in range(RESTARTS)}


@pytest.mark.django_db(transaction=True)
def test_readers_wait_for_the_first_load(monkeypatch, default_check_interval):
    """A reader that arrives while another thread loads waits for the load
    instead of reading an empty store and caching "missing"."""
    MessageTemplate.objects.create(message="admin_only", part="sms", body="Hi")
    store = TemplateStore()
    loading = threading.Event()
    real_load = store._load

    def slow_load(revision):
        loading.set()
        time.sleep(0.3)
        return real_load(revision)

    monkeypatch.setattr(store, "_load", slow_load)
    first = threading.Thread(target=store.refresh)
    first.start()
    assert loading.wait(5)
    assert store.get("admin_only", "sms", "") is not None  # waited for the load
    first.join()
    assert store.get("admin_only", "sms", "") is not None
