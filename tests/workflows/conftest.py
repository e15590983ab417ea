"""Workflow fixtures: a controlled clock, the escalation rule, recipients with a phone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.utils import timezone

from notify.models import Category, ContactPoint
from rules.models import WorkflowStep

# A Wednesday, within working hours in UTC.
NOW = datetime(2026, 11, 18, 10, tzinfo=UTC)


@pytest.fixture
def clock():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def critical(db):
    return Category.objects.create(key="incidents", name="Incidents", critical=True)


@pytest.fixture
def phone_user(make_user):
    def make(username: str, number: str):
        user = make_user(username, first_name=username.title())
        ContactPoint.objects.create(
            user=user, kind="phone", address=number, verified_at=timezone.now()
        )
        return user

    return make


def add_steps(rule, *steps: dict) -> list[WorkflowStep]:
    return [
        WorkflowStep.objects.create(rule=rule, position=number, **fields)
        for number, fields in enumerate(steps)
    ]


ESCALATION = (
    {"kind": "channel", "channels": ["inapp"]},
    {"kind": "delay", "delay": timedelta(minutes=30)},
    {"kind": "channel", "channels": ["email"], "condition": "not read"},
    {"kind": "delay", "delay": timedelta(minutes=90)},
    {"kind": "channel", "channels": ["sms"], "condition": "not read and category.critical"},
)


@pytest.fixture
def escalation(make_rule):
    """In-app now; unread after 30 min: email; unread after 2 h and critical: SMS."""

    def make(category=None, **fields):
        if category is not None:
            fields["category"] = category
        rule = make_rule(name="escalate", channels=[], **fields)
        add_steps(rule, *ESCALATION)
        return rule

    return make
