"""Workflow steps through admin's form (the Django test client): a valid
workflow saves in the order shown; a bad one is refused with the step named
and changes nothing; the runs admin shows a run's history."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse

import notify
from notify.models import WorkflowRun
from notify.runtime.worker import run_until_idle
from rules.models import Rule, WorkflowStep
from tests.admin.test_admin import rule_data


def steps_data(*steps: dict) -> dict:
    data = {
        "steps-TOTAL_FORMS": str(len(steps)),
        "steps-INITIAL_FORMS": "0",
        "steps-MIN_NUM_FORMS": "0",
        "steps-MAX_NUM_FORMS": "1000",
    }
    for number, step in enumerate(steps):
        for key, value in {"position": str(number), "delay_mode": "fixed", **step}.items():
            data[f"steps-{number}-{key}"] = value
    return data


def test_a_workflow_saves_in_order(admin_client, category):
    data = {
        **rule_data(category),
        **steps_data(
            {"kind": "channel", "channels": ["inapp"], "position": "1"},
            {"kind": "channel", "channels": ["email"], "condition": "not read", "position": "3"},
            {"kind": "delay", "delay": "00:30:00", "position": "2"},
        ),
    }
    response = admin_client.post(reverse("admin:rules_rule_add"), data)
    assert response.status_code == 302, response.content.decode()[-3000:]
    rule = Rule.objects.get()
    assert [(s.position, s.kind) for s in WorkflowStep.objects.filter(rule=rule)] == [
        (0, "channel"),
        (1, "delay"),
        (2, "channel"),
    ]


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (
            [{"kind": "channel", "channels": ["email"]}, {"kind": "batch", "batch_window": "00:10:00"}],
            "a batch step must be the first step",
        ),
        ([{"kind": "channel", "channels": ["inapp"], "condition": "payload.__class__"}], "__class__"),
        ([{"kind": "delay", "delay": "00:05:00"}], "the workflow sends nothing"),
        ([{"kind": "channel", "channels": ["inapp"], "message": "nope"}], "no message template"),
    ],
)  # fmt: skip
def test_a_bad_workflow_is_refused_and_changes_nothing(admin_client, category, steps, message):
    response = admin_client.post(
        reverse("admin:rules_rule_add"), {**rule_data(category), **steps_data(*steps)}
    )
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Rule.objects.exists() and not WorkflowStep.objects.exists()


def test_the_runs_admin_shows_a_runs_history(admin_client, make_rule, make_user):
    rule = make_rule(channels=[])
    WorkflowStep.objects.create(rule=rule, position=0, kind="channel", channels=["inapp"])
    WorkflowStep.objects.create(rule=rule, position=1, kind="delay", delay=timedelta(hours=1))
    WorkflowStep.objects.create(rule=rule, position=2, kind="channel", channels=["email"])
    notify.trigger("order.shipped", {"order_id": "H1"}, recipients=[make_user("alice")])
    run_until_idle()
    run = WorkflowRun.objects.get()
    page = admin_client.get(reverse("admin:notify_workflowrun_change", args=[run.pk]))
    text = page.content.decode()
    assert page.status_code == 200
    assert "send on inapp" in text and "wait 1:00:00" in text and "inapp: pending" in text
    listing = admin_client.get(
        reverse("admin:notify_workflowrun_changelist"), {"rule__id__exact": rule.pk}
    )
    assert listing.status_code == 200 and listing.context["cl"].result_count == 1
