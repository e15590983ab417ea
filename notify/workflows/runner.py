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
from typing import Any, NamedTuple

from django.db import transaction
from django.utils import timezone

from notify import conf
from notify.delivery.batch import batch_context
from notify.fanout.context import condition_context
from notify.fanout.pipeline import notification_group_key
from notify.fanout.policies import RulePolicy
from notify.fanout.sequence import plan_chunk, rule_channels
from notify.models import Category, Delivery, Event, Notification, WorkflowRun
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


def load_engagement(runs: list[Any]) -> dict[int, Engagement]:
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


class RunRow(NamedTuple):
    """What the runner reads of a run (a tuple, not a model: a batch is 500 runs)."""

    pk: int
    event_id: int
    rule_id: int
    user_id: int
    step: int
    created_at: datetime
    notification_id: int | None
    batch_key: str


RUN_COLUMNS = (
    "pk",
    "event_id",
    "rule_id",
    "user_id",
    "step",
    "created_at",
    "notification_id",
    "batch_key",
)


def advance_claimed(ids: list[int], token: datetime, now: datetime) -> RunnerStats:
    stats = RunnerStats()
    runs = [
        RunRow(*row)
        for row in WorkflowRun.objects.filter(
            pk__in=ids, state=WorkflowRun.State.RUNNING, claimed_until=token
        )
        .order_by("pk")
        .values_list(*RUN_COLUMNS)
    ]
    if not runs:
        return stats
    # Each event once, however many of its recipients' runs are in the batch.
    events = {
        e.pk: e
        for e in Event.objects.filter(pk__in={r.event_id for r in runs}).select_related("actor")
    }
    contexts = {pk: condition_context(event) for pk, event in events.items()}
    index = rule_index.get()
    wanted = {r.rule_id for r in runs}
    rules: dict[int, CompiledRule] = {
        r.id: r
        for group in (*index.by_type.values(), index.patterns)
        for r in group
        if r.id in wanted
    }
    category_ids = {r.category_id for r in rules.values()}
    categories = {c.pk: c for c in Category.objects.filter(pk__in=category_ids)}
    infos = {pk: category_info(c) for pk, c in categories.items()}
    channels_of = {
        rule.id: {
            i: rule_channels(rule, s.channels) for i, s in enumerate(rule.steps) if s.channels
        }
        for rule in rules.values()
    }
    kinds = {k for steps in channels_of.values() for ch in steps.values() for k in ch.values() if k}
    prefs = load_preferences(list({run.user_id for run in runs}), category_ids, kinds)
    engagement = load_engagement(runs)
    batches = batch_context([run.pk for run in runs if run.batch_key])
    working_hours = conf.get("WORKFLOW_WORKING_HOURS")
    updates: list[RunUpdate] = []
    logs: list[tuple] = []
    writes: list[StepWrite] = []
    policies = {rule_id: RulePolicy(rule) for rule_id, rule in rules.items()}
    for run in runs:
        rule = rules.get(run.rule_id)
        category = categories.get(rule.category_id) if rule else None
        event = events.get(run.event_id)
        user_prefs = prefs.get(run.user_id)
        if rule is None or not rule.steps or category is None or event is None:
            result = stopped(run, "the rule is inactive, deleted or has no steps any more", now)
        elif user_prefs is None:
            result = stopped(run, "user deleted", now)
        else:
            info = infos[category.pk]
            context = {
                **contexts[run.event_id],
                "prefs": prefs_context(user_prefs, info),
                "category": {"key": info.key, "name": category.name, "critical": info.critical},
                "batch": batches.get(run.pk) or {"count": 1, "others": 0},
            }
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
                channels = channels_of[rule.id][decision.position]
                writes.append(
                    step_write(
                        run,
                        rule,
                        info,
                        channels,
                        decision,
                        user_prefs,
                        event,
                        policies[rule.id],
                        now,
                    )
                )
        updates.append(
            RunUpdate(run.pk, result.state, result.position, result.due_at, result.reason)
        )
        for d in result.decisions:
            logs.append((run.pk, d.position, d.kind, d.decision, d.reason[:300], d.until))
            stats.by_decision[d.decision] += 1
        stats.steps += len(result.decisions)
    # One transaction: a worker never sees a step's deliveries before the run
    # that made them points at their notification (a batch renders from it).
    with transaction.atomic():
        stats.runs = write_back(stats, updates, logs, writes, token, now)
    return stats


def stopped(run: RunRow, reason: str, now: datetime) -> Advance:
    result = Advance(position=run.step, state=CANCELLED, reason=reason)
    result.decisions.append(Decision(run.step, "run", CANCELLED, reason, now))
    return result


def write_back(
    stats: RunnerStats,
    updates: list[RunUpdate],
    logs: list[tuple],
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
    rows = [
        (*entry, per_run.pop(entry[0]) if entry[3] == SENT and entry[0] in per_run else [])
        for entry in logs
    ]
    return finish_claimed_runs(updates, rows, token, now)


def step_write(
    run: RunRow,
    rule: CompiledRule,
    category: CategoryInfo,
    channels: dict[str, str | None],
    decision: Decision,
    prefs: UserPrefs,
    event: Event,
    policy: RulePolicy,
    now: datetime,
) -> StepWrite:
    """A channel step's deliveries for one run, planned as fan-out plans them."""
    planned = plan_chunk([run.user_id], category, channels, {run.user_id: prefs}, now)
    planned = policy.adjust(run.event_id, category, channels, planned, now)
    return StepWrite(
        run_id=run.pk,
        event_id=run.event_id,
        rule_id=rule.id,
        user_id=run.user_id,
        category_id=category.id,
        group_key=notification_group_key(rule.id, event),
        template=decision.message or rule.message,
        deliveries=planned[0].deliveries if planned else (),
    )
