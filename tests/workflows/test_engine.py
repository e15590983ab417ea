"""The engine alone (pure, no database) and the workflow system checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from notify.checks import check_workflow_settings
from notify.workflows.engine import Engagement, RunInput, advance
from rules.workflow import compile_steps

NOW = datetime(2026, 11, 18, 10, tzinfo=UTC)  # a Wednesday


def steps(*rows):
    return compile_steps([{**row, "position": n, "id": n} for n, row in enumerate(rows)])


def run(position=0, payload=None, engagement=Engagement(), zone="UTC", **context):
    return RunInput(position, {"payload": payload or {}, **context}, engagement, zone, NOW)


def test_a_delay_until_a_payload_time_and_a_bad_one_fails_the_run():
    flow = steps(
        {"kind": "delay", "delay_mode": "payload", "delay_until_path": "starts_at",
         "delay": timedelta(hours=-1)},
        {"kind": "channel", "channels": ["email"]},
    )  # fmt: skip
    result = advance(flow, run(payload={"starts_at": "2026-11-18T15:00:00Z"}), NOW)
    assert (result.state, result.position, result.due_at) == (
        "waiting",
        1,
        NOW + timedelta(hours=4),
    )
    failed = advance(flow, run(payload={}), NOW)
    assert failed.state == "failed" and "the payload has no 'starts_at'" in failed.reason


def test_a_delay_until_working_hours_follows_the_users_zone():
    flow = steps(
        {"kind": "delay", "delay_mode": "working_hours"}, {"kind": "channel", "channels": ["sms"]}
    )
    evening = NOW.replace(hour=20)  # 20:00 UTC Wednesday
    result = advance(
        flow,
        run(zone="Asia/Tokyo"),
        evening,
        {"days": [0, 1, 2, 3, 4], "from": "09:00", "until": "17:00"},
    )
    assert result.due_at == datetime(2026, 11, 19, 0, tzinfo=UTC)  # 09:00 Thursday in Tokyo
    inside = advance(flow, run(), NOW, {"days": [0, 1, 2, 3, 4], "from": "09:00", "until": "17:00"})
    assert inside.state == "done" and [d.decision for d in inside.decisions] == ["waited", "sent"]


def test_a_condition_that_cannot_be_evaluated_fails_the_run_and_says_why():
    flow = steps({"kind": "channel", "channels": ["email"], "condition": "payload.count > 1"})
    result = advance(flow, run(payload={"count": "many"}), NOW)
    assert result.state == "failed" and "condition failed" in result.decisions[0].reason


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"kind": "channel", "channels": ["email"]}, {"kind": "batch", "batch_window": timedelta(minutes=5)}], "must be the first step"),
        ([{"kind": "channel", "channels": ["email"]}, {"kind": "channel", "channels": ["email"]}], "channel 'email' is already sent by step 1"),
        ([{"kind": "delay", "delay": timedelta(minutes=5)}], "the workflow sends nothing"),
        ([{"kind": "channel", "channels": []}], "name at least one channel"),
        ([{"kind": "channel", "channels": ["email"], "condition": "user.is_staff"}], "unknown name 'user'"),
        ([{"kind": "delay"}, {"kind": "channel", "channels": ["email"]}], "a fixed delay needs a positive duration"),
    ],
)  # fmt: skip
def test_bad_workflows_are_refused_with_the_step_named(rows, message):
    with pytest.raises(ValueError, match=message):
        steps(*rows)


def test_workflow_settings_are_checked(settings):
    assert check_workflow_settings() == []
    settings.NOTIFY = {
        **settings.NOTIFY,
        "WORKFLOW_BATCH_SIZE": 0,
        "WORKFLOW_WORKING_HOURS": {"from": "nine"},
    }
    assert [e.id for e in check_workflow_settings()] == ["notify.E070", "notify.E071"]


STEP_CONDITIONS = [
    "not read",
    "not read and category.critical",
    "seen or clicked",
    "not delivered and prefs.mode == 'now'",
    "batch.count > 3",
    "prefs.channels.email",
    "category.missing",
    "not read and payload.total > 10",
]
STEP_CONTEXTS = [
    {
        "read": False,
        "seen": True,
        "clicked": False,
        "opened": False,
        "delivered": False,
        "category": {"key": "incidents", "critical": True},
        "prefs": {"mode": "now", "channels": {"email": False}},
        "batch": {"count": 5},
        "payload": {"total": 12},
    },
    {
        "read": True,
        "seen": True,
        "clicked": True,
        "opened": True,
        "delivered": True,
        "category": {"key": "orders", "critical": False},
        "prefs": {},
        "batch": {"count": 1},
        "payload": {},
    },
]


@pytest.mark.parametrize("source", STEP_CONDITIONS)
def test_step_conditions_take_the_fast_path_and_answer_like_the_sandbox(source):
    """What the runner evaluates per run: plain closures, not the sandbox
    (``rules.fastpath``), with the sandbox's answers and errors."""
    from rules.conditions import ConditionError, _env, compile_condition
    from rules.workflow import STEP_CONDITION_NAMES

    condition = compile_condition(source, STEP_CONDITION_NAMES)
    assert condition._fast is not None
    slow = type(condition)(source, _env.compile_expression(source, undefined_to_none=False))
    for context in STEP_CONTEXTS:
        answers = []
        for evaluated in (condition, slow):
            try:
                answers.append(("ok", evaluated.evaluate(context)))
            except ConditionError as exc:
                answers.append(("error", str(exc)))
        assert answers[0] == answers[1], (source, context)
