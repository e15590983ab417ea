"""Batching with a controlled clock: 25 comments from 25 people in 10 minutes
become one notification per recipient ("Alice and 24 others"); the size cap
splits a batch; a retried fan-out adds nothing twice."""

from __future__ import annotations

from datetime import timedelta

import pytest

import notify
from notify.delivery.batch import and_others
from notify.fanout.pipeline import process_event
from notify.models import Category, Notification, WorkflowBatchItem, WorkflowRun
from notify.runtime.worker import run_until_idle
from tests.workflows.conftest import NOW, add_steps

NAMES = [
    "Alice", "Bruno", "Chen", "Dana", "Emil", "Fatou", "Goran", "Hana", "Ivo", "Jade",
    "Kofi", "Lena", "Mateo", "Nia", "Omar", "Pia", "Quinn", "Rui", "Sara", "Tomas",
    "Uma", "Vera", "Wim", "Xia", "Yusuf",
]  # fmt: skip


@pytest.fixture
def comments(db, make_rule):
    category = Category.objects.create(key="comments", name="Comments")

    def make(batch_max=None, window=timedelta(minutes=10)):
        rule = make_rule(
            name="comment digest",
            event_type="comment.posted",
            category=category,
            recipients=["payload:watchers"],
            channels=[],
            message="comment_batch",
        )
        add_steps(
            rule,
            {
                "kind": "batch",
                "batch_window": window,
                "batch_key": "payload.document_id",
                "batch_max": batch_max,
            },
            {"kind": "channel", "channels": ["inapp", "email"]},
        )
        return rule

    return make


def post_comments(clock, actors, watchers, every=timedelta(seconds=24), document="doc-1"):
    events = []
    for number, actor in enumerate(actors):
        clock.move_to(NOW + number * every)
        events.append(
            notify.trigger(
                "comment.posted",
                {
                    "document_id": document,
                    "title": "Spec",
                    "comment": f"comment {number + 1}",
                    "watchers": [w.pk for w in watchers],
                },
                actor=actor,
            )
        )
        run_until_idle()
    return events


def test_and_others_helper():
    assert and_others([]) == ""
    assert and_others(["Alice"]) == "Alice"
    assert and_others(["Alice", "Bruno"]) == "Alice and Bruno"
    assert and_others(["Alice", "Bruno", "Chen"]) == "Alice and 2 others"
    assert and_others(["Alice"], 25) == "Alice and 24 others"
    assert and_others(["Alice", "Bruno"], 3, shown=2) == "Alice, Bruno and 1 other"


def test_25_comments_in_10_minutes_make_one_notification_per_recipient(
    clock, smtp_mailer, comments, make_user
):
    comments()
    actors = [make_user(name.lower(), first_name=name) for name in NAMES]
    watchers = [make_user("wendy", first_name="Wendy"), make_user("walt", first_name="Walt")]
    post_comments(clock, actors, watchers)  # 0 s .. 9 min 36 s
    assert Notification.objects.count() == 0 and smtp_mailer.messages == []
    assert WorkflowBatchItem.objects.count() == 50  # 25 events x 2 watchers
    clock.move_to(NOW + timedelta(minutes=10))
    run_until_idle()
    items = Notification.objects.filter(inbox_at__isnull=False).order_by("user_id")
    assert [(n.user_id, n.title) for n in items] == [
        (w.pk, "Alice and 24 others commented on Spec") for w in watchers
    ]
    assert [n.body for n in items] == ["25 new comments"] * 2
    assert sorted(m.to for m in smtp_mailer.messages) == ["walt@example.com", "wendy@example.com"]
    message = smtp_mailer.messages[0]
    assert message.subject == "Alice and 24 others commented on Spec"
    assert "- Yusuf: comment 25" in message.text
    clock.move_to(NOW + timedelta(hours=1))
    run_until_idle()
    assert len(smtp_mailer.messages) == 2  # nothing more
    assert set(WorkflowRun.objects.values_list("state", flat=True)) == {"done"}


def test_the_size_cap_splits_a_batch(clock, smtp_mailer, comments, make_user):
    comments(batch_max=10)
    actors = [make_user(name.lower(), first_name=name) for name in NAMES]
    wendy = make_user("wendy")
    post_comments(clock, actors, [wendy])
    # Two full batches went at once (when the 10th and the 20th comment came).
    assert [m.subject for m in smtp_mailer.messages] == [
        "Alice and 9 others commented on Spec",
        "Kofi and 9 others commented on Spec",
    ]
    clock.move_to(NOW + timedelta(minutes=20))
    run_until_idle()
    assert [m.subject for m in smtp_mailer.messages][2:] == ["Uma and 4 others commented on Spec"]
    assert WorkflowRun.objects.count() == 3
    assert WorkflowBatchItem.objects.count() == 25


def test_different_keys_make_different_batches(clock, smtp_mailer, comments, make_user):
    comments()
    actors = [make_user(name.lower(), first_name=name) for name in NAMES[:4]]
    wendy = make_user("wendy")
    post_comments(clock, actors[:2], [wendy], document="doc-1")
    post_comments(clock, actors[2:], [wendy], document="doc-2")
    clock.move_to(NOW + timedelta(minutes=11))
    run_until_idle()
    assert sorted(m.subject for m in smtp_mailer.messages) == [
        "Alice and Bruno commented on Spec",
        "Chen and Dana commented on Spec",
    ]


def test_a_fan_out_run_again_adds_nothing_twice(clock, comments, make_user):
    comments()
    wendy, alice = make_user("wendy"), make_user("alice", first_name="Alice")
    (event,) = post_comments(clock, [alice], [wendy])
    process_event(event.pk)
    process_event(event.pk)
    assert WorkflowBatchItem.objects.count() == 1
    assert WorkflowRun.objects.count() == 1
