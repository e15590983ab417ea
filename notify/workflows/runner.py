"""The runner: due workflow runs claimed, advanced, written back.

``advance_due_runs`` is what the worker pool, a Celery task, the scheduler and
tests call. Per batch of claimed runs (a fixed number of queries, however
many runs):

1. claim due runs (``notify.outbox.runs.claim_due_runs``: a short transaction,
   ``SKIP LOCKED`` on PostgreSQL, a claim expiry);
2. load the runs with their events, the engagement with their notifications
   (seen, read, clicked, opened, delivered), batch items, the recipients'
   preferences and the categories;
3. decide each run with the pure engine (``notify.workflows.engine.advance``);
4. a channel step plans its deliveries like fan-out does: preferences and
   quiet hours (``notify.fanout.sequence.plan_chunk``), then the rule's
   fallback, throttling and dry run (``RulePolicy.adjust``), and writes them
   for every run of the batch in one statement per table; the workers send
   them as any delivery (preferences are decided again before sending);
5. write each run's next state and history while the claim is still ours.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from notify import conf
from notify.delivery.batch import batch_context
from notify.fanout.context import condition_context
from notify.fanout.pipeline import notification_group_key
from notify.fanout.policies import RulePolicy
from notify.fanout.sequence import plan_chunk, rule_channels
from notify.models import Category, Delivery, Notification, WorkflowRun
from notify.models import WorkflowStepLog as StepLog
from notify.models.status import Status
from notify.outbox.runs import (
    RunUpdate,
    StepWrite,
    claim_due_runs,
    finish_claimed_runs,
    write_step_deliveries,
)
from notify.preferences.decide import CategoryInfo, UserPrefs
from notify.preferences.directory import category_info, load_preferences
from notify.workflows.engine import (
    CANCELLED,
    SENT,
    Advance,
    Decision,
    Engagement,
    RunInput,
    advance,
)
from rules.index import CompiledRule, rule_index

log = logging.getLogger("notify.workflows.runner")


@dataclass(slots=True)
class RunnerStats:
    runs: int = 0  # runs advanced and written back
    steps: int = 0  # step decisions taken
    deliveries: list[int] = field(default_factory=list)  # delivery ids written, due now or later
    by_decision: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def advance_due_runs(
    limit: int | None = None, ttl: float | None = None, now: datetime | None = None
) -> RunnerStats:
    """Claim a batch of due runs and advance each as far as it goes now."""
    now = now or timezone.now()
    ids, token = claim_due_runs(
        limit or conf.get("WORKFLOW_BATCH_SIZE"), ttl or conf.get("CLAIM_TTL"), now
    )
    if not ids:
        return RunnerStats()
    return advance_claimed(ids, token, now)


def prefs_context(prefs: UserPrefs | None, category: CategoryInfo) -> dict[str, Any]:
    """What a step's condition sees of the recipient's preferences."""
    if prefs is None:
        return {}
    return {
        "timezone": prefs.timezone,
        "locale": prefs.locale,
        "mode": prefs.modes.get(category.id, category.default_mode),
        "channels": {
            alias: on for (cat, alias), on in prefs.channels.items() if cat == category.id
        },
        "quiet_hours": prefs.quiet_start is not None,
        "paused": prefs.paused_until is not None,
    }


def load_engagement(runs: list[WorkflowRun]) -> dict[int, Engagement]:
    """Engagement per notification id of these runs (two queries)."""
    ids = [run.notification_id for run in runs if run.notification_id]
    if not ids:
        return {}
    delivered: dict[int, list[tuple[str, datetime]]] = defaultdict(list)
    for nid, channel, status, delivered_at, sent_at in Delivery.objects.filter(
        notification_id__in=ids, status__in=[Status.DELIVERED, Status.SENT]
    ).values_list("notification_id", "channel", "status", "delivered_at", "sent_at"):
        at = delivered_at or (sent_at if channel == "inapp" else None)
        if status == Status.DELIVERED or at is not None:
            if at is not None:
                delivered[nid].append((channel, at))
    return {
        pk: Engagement(seen, read, clicked, opened, tuple(delivered.get(pk, ())))
        for pk, seen, read, clicked, opened in Notification.objects.filter(pk__in=ids).values_list(
            "pk", "seen_at", "read_at", "clicked_at", "opened_at"
        )
    }


def advance_claimed(ids: list[int], token: datetime, now: datetime) -> RunnerStats:
    stats = RunnerStats()
    runs = list(
        WorkflowRun.objects.filter(pk__in=ids, state=WorkflowRun.State.RUNNING, claimed_until=token)
        .select_related("event__actor")
        .order_by("pk")
    )
    if not runs:
        return stats
    index = rule_index.get()
    rules: dict[int, CompiledRule] = {
        r.id: r for group in (*index.by_type.values(), index.patterns) for r in group
    }
    category_ids = {r.category_id for r in rules.values() if r.id in {x.rule_id for x in runs}}
    categories = {c.pk: c for c in Category.objects.filter(pk__in=category_ids)}
    kinds = {
        kind
        for run in runs
        if run.rule_id in rules
        for kind in rule_channels(
            rules[run.rule_id],
            [a for s in rules[run.rule_id].steps for a in s.channels],
        ).values()
        if kind
    }
    prefs = load_preferences(list({run.user_id for run in runs}), category_ids, kinds)
    engagement = load_engagement(runs)
    batches = batch_context([run.pk for run in runs if run.batch_key])
    working_hours = conf.get("WORKFLOW_WORKING_HOURS")
    updates: list[RunUpdate] = []
    logs: list[StepLog] = []
    writes: list[StepWrite] = []
    sends: dict[int, list[Decision]] = {}
    for run in runs:
        rule = rules.get(run.rule_id)
        category = categories.get(rule.category_id) if rule else None
        if rule is None or not rule.steps or category is None:
            result = Advance(
                position=run.step,
                state=CANCELLED,
                reason="the rule is inactive, deleted or has no steps any more",
            )
            result.decisions.append(Decision(run.step, "rule", CANCELLED, result.reason, now))
        else:
            info = category_info(category)
            user_prefs = prefs.get(run.user_id)
            if user_prefs is None:
                result = Advance(position=run.step, state=CANCELLED, reason="user deleted")
                result.decisions.append(Decision(run.step, "user", CANCELLED, result.reason, now))
            else:
                context = condition_context(run.event)
                context["prefs"] = prefs_context(user_prefs, info)
                context["category"] = {
                    "key": info.key,
                    "name": category.name,
                    "critical": info.critical,
                }
                context["batch"] = batches.get(run.pk) or {"count": 1, "others": 0}
                result = advance(
                    rule.steps,
                    RunInput(
                        run.step,
                        context,
                        engagement.get(run.notification_id or 0, Engagement()),
                        user_prefs.timezone,
                        run.created_at,
                    ),
                    now,
                    working_hours,
                )
                for decision in result.sends:
                    writes.append(step_write(run, rule, info, decision, user_prefs, now))
                sends[run.pk] = result.sends
        updates.append(
            RunUpdate(run.pk, result.state, result.position, result.due_at, result.reason)
        )
        for d in result.decisions:
            logs.append(
                StepLog(
                    run_id=run.pk,
                    position=d.position,
                    kind=d.kind,
                    decision=d.decision,
                    reason=d.reason[:300],
                    at=now,
                    until=d.until,
                )
            )
        stats.steps += len(result.decisions)
        for d in result.decisions:
            stats.by_decision[d.decision] += 1
    # One transaction: a worker never sees a step's deliveries before the run
    # that made them points at their notification (a batch renders from it).
    with transaction.atomic():
        stats.runs = write_back(stats, updates, logs, writes, token, now)
    return stats


def write_back(
    stats: RunnerStats,
    updates: list[RunUpdate],
    logs: list[StepLog],
    writes: list[StepWrite],
    token: datetime,
    now: datetime,
) -> int:
    """Step 5: the channel steps' rows, each run's next state and history."""
    notification_of, written = write_step_deliveries(writes, now)
    per_run: dict[int, list[list[str]]] = defaultdict(list)
    for run_id, delivery_id, channel, status in written:
        per_run[run_id].append([channel, status])
        stats.deliveries.append(delivery_id)
    for update in updates:
        update.notification_id = notification_of.get(update.run_id)
    for entry in logs:
        if entry.decision == SENT and entry.run_id in per_run:
            entry.deliveries = per_run.pop(entry.run_id)
    return finish_claimed_runs(updates, logs, token, now)


def step_write(
    run: WorkflowRun,
    rule: CompiledRule,
    category: CategoryInfo,
    decision: Decision,
    prefs: UserPrefs,
    now: datetime,
) -> StepWrite:
    """A channel step's deliveries for one run, planned as fan-out plans them."""
    channels = rule_channels(rule, decision.channels)
    planned = plan_chunk([run.user_id], category, channels, {run.user_id: prefs}, now)
    planned = RulePolicy(rule).adjust(run.event_id, category, channels, planned, now)
    return StepWrite(
        run_id=run.pk,
        event_id=run.event_id,
        rule_id=rule.id,
        user_id=run.user_id,
        category_id=category.id,
        group_key=notification_group_key(rule.id, run.event),
        template=decision.message or rule.message,
        deliveries=planned[0].deliveries if planned else (),
    )
