"""A running run when ops edit its workflow (README, "Workflows"): it remembers
the next step it takes by id, so steps inserted or reordered before it change
nothing it did; an edited step applies from its next evaluation; a deleted
step moves the run on to the step now at its place, or ends it, and the run's
history says so. The escalation workflow, a controlled clock, counted at the
receivers (the SMTP and Twilio peers)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db.models import F

import notify
from notify.models import WorkflowRun, WorkflowStepLog
from rules.models import WorkflowStep
from tests.workflows.test_escalation import at

pytestmark = pytest.mark.django_db(transaction=False)


@pytest.fixture
def waiting_run(clock, escalation, critical, phone_user):
    """Alice's run after its in-app step: waiting 30 minutes for the email step."""
    rule = escalation(category=critical)
    alice = phone_user("alice", "+15005550006")
    notify.trigger("order.shipped", {"order_id": "X1"}, recipients=[alice])
    at(clock, 0)
    run = WorkflowRun.objects.get(user=alice)
    steps = list(WorkflowStep.objects.filter(rule=rule).order_by("position"))
    assert (run.step, run.step_id) == (2, steps[2].pk)  # the email step, by id
    return rule, run, steps


def history(run) -> list[tuple[str, str]]:
    return list(
        WorkflowStepLog.objects.filter(run=run).order_by("at", "id").values_list("kind", "decision")
    )


def test_steps_inserted_before_a_waiting_run_change_nothing_it_does(
    clock, smtp_mailer, twilio_sms, waiting_run
):
    rule, run, _steps = waiting_run
    # Ops put a new first step in front of everything: every position moves by one.
    WorkflowStep.objects.filter(rule=rule).update(position=F("position") + 1)
    WorkflowStep.objects.create(rule=rule, position=0, kind="delay", delay=timedelta(minutes=5))
    at(clock, 30)  # by position the run would now wait 30 minutes more
    assert [m.to for m in smtp_mailer.messages] == ["alice@example.com"]
    at(clock, 120)
    assert [m.to for m in twilio_sms.messages] == ["+15005550006"]
    run.refresh_from_db()
    assert run.state == WorkflowRun.State.DONE and run.step_id is None


def test_an_edited_step_applies_from_its_next_evaluation(
    clock, smtp_mailer, twilio_sms, waiting_run
):
    _rule, run, steps = waiting_run
    steps[2].condition = "read"  # only if the in-app item was read
    steps[2].save()
    at(clock, 30)
    assert smtp_mailer.messages == []
    skipped = WorkflowStepLog.objects.get(run=run, decision="skipped")
    assert skipped.reason == "email skipped: condition false (read)"
    at(clock, 120)
    assert len(twilio_sms.messages) == 1


def test_a_deleted_current_step_moves_the_run_to_the_next_remaining_step(
    clock, smtp_mailer, twilio_sms, waiting_run
):
    _rule, run, steps = waiting_run
    steps[2].delete()  # the email step the run waits for
    at(clock, 30)
    assert smtp_mailer.messages == []
    moved = WorkflowStepLog.objects.get(run=run, decision="moved")
    assert moved.reason == (
        "step 3 was deleted from the workflow: the run goes on at step 3 (wait 1:30:00)"
    )
    at(clock, 119)
    assert twilio_sms.messages == []
    at(clock, 120)  # the 90-minute delay that followed it, then the SMS
    assert [m.to for m in twilio_sms.messages] == ["+15005550006"]
    run.refresh_from_db()
    assert run.state == WorkflowRun.State.DONE
    assert history(run) == [
        ("channel", "sent"),
        ("delay", "waited"),
        ("edit", "moved"),
        ("delay", "waited"),
        ("channel", "sent"),
    ]


def test_a_run_whose_remaining_steps_were_deleted_ends_and_says_why(
    clock, smtp_mailer, twilio_sms, waiting_run
):
    _rule, run, steps = waiting_run
    WorkflowStep.objects.filter(pk__in=[s.pk for s in steps[2:]]).delete()
    at(clock, 30)
    at(clock, 120)
    assert smtp_mailer.messages == [] and twilio_sms.messages == []
    run.refresh_from_db()
    assert run.state == WorkflowRun.State.DONE
    moved = WorkflowStepLog.objects.get(run=run, decision="moved")
    assert moved.reason == "step 3 was deleted from the workflow: no step follows it"
