"""Workflow runs: a rule's steps executed for one recipient, as rows.

The database is the truth: a run knows its next step and when it is due; the
runner claims due runs like deliveries (``notify.workflows.runs``), and the
scheduler only wakes it. So a run survives restarts and any number of workers.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class WorkflowRun(models.Model):
    """One rule's workflow for one recipient of one event, or of one batch.

    Unique per (event, rule, user) for a run without a batch, and per
    (rule, user, batch key) while a batch is collecting (``collecting``): the
    next event with that key after it closes opens a new run."""

    class State(models.TextChoices):
        WAITING = "waiting"  # due at ``due_at``
        RUNNING = "running"  # claimed by a runner until ``claimed_until``
        DONE = "done"
        CANCELLED = "cancelled"
        FAILED = "failed"

    OPEN = (State.WAITING, State.RUNNING)

    event = models.ForeignKey("Event", on_delete=models.CASCADE, related_name="workflow_runs")
    rule = models.ForeignKey("rules.Rule", on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    batch_key = models.CharField(max_length=200, blank=True, default="")
    collecting = models.BooleanField(default=False)
    notification = models.ForeignKey(
        "Notification", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    step = models.PositiveIntegerField(default=0, help_text="The next step to run (0-based).")
    # The next step by id: a run follows its step when ops reorder or edit the
    # workflow (``notify.workflows.runner.resume_position``); empty until the
    # run has been advanced once (a run not started begins at the first step).
    # No foreign key: a deleted step leaves the id behind, which says so.
    step_id = models.PositiveBigIntegerField(null=True, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.WAITING)
    due_at = models.DateTimeField(default=timezone.now)
    claimed_until = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    reason = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["event", "rule", "user"],
                condition=models.Q(batch_key=""),
                name="workflow_run_unique",
            ),
            models.UniqueConstraint(
                fields=["rule", "user", "batch_key"],
                condition=models.Q(collecting=True),
                name="workflow_batch_open_unique",
            ),
        ]
        indexes = [
            # (due_at, id), not due_at alone: a big fan-out makes thousands of
            # runs due at the same instant, and a B-tree keeps equal keys in
            # posting lists whose dead entries a scan cannot skip until all
            # are dead, so each claim re-read the runs already advanced
            # (claims of 100-300 ms at 100,000 runs; BENCHMARKS.md).
            models.Index(
                fields=["due_at", "id"],
                condition=models.Q(state__in=["waiting", "running"]),
                name="workflow_run_due_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"run #{self.pk} of rule {self.rule_id} for user {self.user_id} ({self.state})"


class WorkflowBatchItem(models.Model):
    """One event collected into a batch run; an event joins one batch per
    (rule, user), so a fan-out run again adds nothing twice."""

    run = models.ForeignKey(WorkflowRun, on_delete=models.CASCADE, related_name="items")
    event = models.ForeignKey("Event", on_delete=models.CASCADE, related_name="+")
    rule = models.ForeignKey("rules.Rule", on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    added_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["run", "added_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["event", "rule", "user"], name="workflow_batch_item_unique"
            )
        ]

    def __str__(self) -> str:
        return f"event {self.event_id} in run {self.run_id}"


class WorkflowStepLog(models.Model):
    """What a run decided at a step, and why: its history, one row per step."""

    class Decision(models.TextChoices):
        SENT = "sent"  # a channel step wrote its deliveries
        SKIPPED = "skipped"  # the step's condition was false
        WAITED = "waited"  # a delay or batch step made the run due later
        COLLECTED = "collected"  # a batch closed with its items
        CANCELLED = "cancelled"
        FAILED = "failed"
        MOVED = "moved"  # ops deleted the run's step: it went on at another

    run = models.ForeignKey(WorkflowRun, on_delete=models.CASCADE, related_name="log")
    position = models.PositiveIntegerField()
    kind = models.CharField(max_length=10)
    decision = models.CharField(max_length=10, choices=Decision.choices)
    reason = models.CharField(max_length=300, blank=True, default="")
    at = models.DateTimeField(default=timezone.now)
    until = models.DateTimeField(null=True, blank=True)
    deliveries = models.JSONField(default=list, blank=True)  # [channel, status] per delivery

    class Meta:
        ordering = ["run", "at", "id"]

    def __str__(self) -> str:
        return f"run {self.run_id} step {self.position + 1}: {self.decision}"
