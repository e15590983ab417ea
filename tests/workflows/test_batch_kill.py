"""Batching survives the scheduler being killed mid-window (PostgreSQL, real
processes): 25 comment events from 25 people, a real ``manage.py notify
scheduler`` kill -9'd after the first 12 were fanned out, the other 13 stored
while nothing runs, a new scheduler started: one notification per recipient,
"Alice and 24 others", every event in it (0 lost)."""

from __future__ import annotations

from datetime import timedelta

import pytest

import notify
from notify.models import Category, Notification, WorkflowBatchItem, WorkflowRun
from rules.models import Rule, WorkflowStep
from tests.scaleout import process_env, scheduler, wait_until
from tests.workflows.test_batching import NAMES

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

# Long enough for a kill and a restart on a loaded machine; the rule's own value.
WINDOW = timedelta(seconds=40)


def trigger(actor, watchers, number):
    notify.trigger(
        "comment.posted",
        {
            "document_id": "doc-9",
            "title": "Spec",
            "comment": f"comment {number}",
            "watchers": [w.pk for w in watchers],
        },
        actor=actor,
    )


def test_no_event_is_lost_when_the_scheduler_is_killed_mid_window(postgres, tmp_path, make_user):
    category = Category.objects.create(key="comments", name="Comments")
    rule = Rule.objects.create(
        name="comment digest",
        event_type="comment.posted",
        category=category,
        recipients=["payload:watchers"],
        channels=["inapp"],
        message="comment_batch",
    )
    WorkflowStep.objects.create(
        rule=rule, position=0, kind="batch", batch_window=WINDOW, batch_key="payload.document_id"
    )
    WorkflowStep.objects.create(rule=rule, position=1, kind="channel", channels=["inapp"])
    actors = [make_user(name.lower(), first_name=name) for name in NAMES]
    watchers = [make_user("wendy"), make_user("walt")]
    env = process_env(tmp_path, overrides={"POLL_INTERVAL": 0.2})
    first = scheduler("scheduler-1", env, tmp_path, tick=0.5).start()
    try:
        first.wait_ready(90)
        for number, actor in enumerate(actors[:12], 1):
            trigger(actor, watchers, number)
        assert wait_until(lambda: WorkflowBatchItem.objects.count() == 24, 60), first.text()[-3000:]
        first.kill()  # mid-window: nothing sent yet
        assert not Notification.objects.exists()
        for number, actor in enumerate(actors[12:], 13):
            trigger(actor, watchers, number)
        second = scheduler("scheduler-2", env, tmp_path, tick=0.5).start()
        try:
            second.wait_ready(90)
            done = wait_until(
                lambda: Notification.objects.filter(inbox_at__isnull=False).count() == 2,
                WINDOW.total_seconds() + 90,
            )
            assert done, second.text()[-3000:]
        finally:
            second.stop()
    finally:
        first.stop()
    assert WorkflowBatchItem.objects.count() == 50  # 25 events x 2 watchers: 0 lost
    assert set(WorkflowRun.objects.values_list("state", flat=True)) == {"done"}
    assert WorkflowRun.objects.count() == 2
    titles = sorted(Notification.objects.values_list("user_id", "title"))
    assert titles == sorted((w.pk, "Alice and 24 others commented on Spec") for w in watchers)
