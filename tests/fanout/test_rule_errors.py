"""A rule that fails for an event fails alone, visibly (issue 12): its condition
cannot be evaluated, or its deduplication key names a missing payload field.
The other rules of the event deliver; the error is on the event (per rule),
in the log with the event id, in /metrics and on the dashboard; the rule's
preview answers 200."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.urls import reverse
from prometheus_client.parser import text_string_to_metric_families

from notify import trigger
from notify.models import Delivery, Event, RuleError
from notify.models.status import Status
from notify.runtime.worker import run_until_idle

pytestmark = pytest.mark.django_db


@pytest.fixture
def rules(make_rule):
    return {
        "condition": make_rule(
            name="bad condition", channels=["inapp"], condition="payload.total / payload.count > 1"
        ),
        "dedup_key": make_rule(
            name="bad key",
            channels=["inapp"],
            dedup_key="payload.order_ref",
            dedup_window=timedelta(hours=1),
        ),
        "fine": make_rule(name="fine", channels=["email"]),
    }


def test_a_failing_rule_fails_alone_and_is_on_the_record(
    rules, make_user, caplog, admin_client, client, smtp_mailer
):
    alice = make_user("alice")
    with caplog.at_level(logging.WARNING, logger="notify.fanout.pipeline"):
        event = trigger(
            "order.shipped", {"order_id": "A1", "total": 5, "count": 0}, recipients=[alice]
        )
        run_until_idle()

    event.refresh_from_db()
    assert event.status == Event.State.PROCESSED
    [delivery] = Delivery.objects.filter(notification__event=event)
    assert delivery.notification.rule == rules["fine"]
    assert delivery.status == Status.SENT
    assert len(smtp_mailer.messages_to(alice.email)) == 1  # counted at the SMTP peer
    errors = {e.kind: e for e in RuleError.objects.filter(event=event)}
    assert set(errors) == {"condition", "dedup_key"}
    assert errors["condition"].rule == rules["condition"]
    assert "ZeroDivisionError" in errors["condition"].message
    assert errors["dedup_key"].rule == rules["dedup_key"]
    assert "order_ref" in errors["dedup_key"].message
    assert "bad condition" in event.error and "bad key" in event.error
    logged = [r.getMessage() for r in caplog.records]
    assert sum(f"event {event.pk}," in line for line in logged) == 2

    # Admin: per rule on the event; the dashboard counts them.
    page = admin_client.get(reverse("admin:notify_event_change", args=[event.pk]))
    assert page.status_code == 200
    assert b"ules that failed for this event" in page.content
    assert b"order_ref" in page.content

    # /metrics
    response = client.get("/metrics")
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.content.decode())}
    values = {s.labels["kind"]: s.value for s in families["notify_rule_errors"].samples}
    assert values["condition"] == 1 and values["dedup_key"] == 1

    # The preview of the failing rule answers, and says why.
    url = reverse("admin:rules_rule_preview", args=[rules["dedup_key"].pk])
    preview = admin_client.get(f"{url}?source=event&event={event.pk}")
    assert preview.status_code == 200
    assert b"order_ref" in preview.content


def test_the_next_event_with_the_field_deduplicates_as_usual(rules, make_user):
    alice = make_user("alice")
    for _ in range(2):
        trigger("order.shipped", {"order_ref": "R1", "total": 1, "count": 1}, recipients=[alice])
    run_until_idle()
    by_rule = Delivery.objects.values_list("notification__rule__name", flat=True)
    assert sorted(by_rule) == ["bad key", "fine", "fine"]
    assert not RuleError.objects.exists()
