"""The runner: due workflow runs claimed, advanced, written back, a chunk at a time.

``advance_due_runs`` is what the worker pool, a Celery task, the scheduler and
tests call. Per chunk of claimed runs (a fixed number of queries, however
many runs):

1. claim a chunk of due runs (``notify.outbox.runs.claim_due_runs``: one
   statement on PostgreSQL, ``FOR UPDATE SKIP LOCKED``, a claim token that
   expires, the same discipline as deliveries, so two runner processes never
   take the same run's step twice);
2. load what the chunk needs: its events (each once), the engagement with
   the runs' notifications (seen, read, clicked, opened, delivered), batch
   items, the recipients' preferences and the categories;
3. decide each run with the pure engine (``notify.workflows.engine.advance``)
   on plain data: the steps come compiled from the rule index (compiled once
   per rules revision; a plain condition such as ``not read`` is evaluated as
   closures, ``rules.fastpath``, not in the sandbox), and each run goes on
   from the step it remembers by id (``resume_position``);
4. plan the channel steps' deliveries in bulk, one group per (rule, event,
   step): preferences and quiet hours (``notify.fanout.sequence.plan_chunk``),
   then the rule's fallback, throttling and dry run (``RulePolicy.adjust``),
   as fan-out plans them;
5. in one transaction, while the claim is still ours: lock the chunk's runs,
   write each group with fan-out's writer (``write_fanout_chunk``), then every
   run's next state with one statement and the history with one more.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
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
from notify.models import Category, Delivery, Event, Notification
from notify.models.status import Status
from notify.outbox.rows import PlannedNotification, write_fanout_chunk
from notify.outbox.runs import (
    ClaimedRun,
    RunUpdate,
    claim_due_runs,
    finish_claimed_runs,
    set_step_templates,
    write_step_logs,
)
from notify.preferences.decide import CategoryInfo, UserPrefs
from notify.preferences.directory import category_info, load_preferences
from notify.workflows.engine import (
    CANCELLED,
    MOVED,
    SENT,
    Advance,
    Decision,
    Engagement,
    RunInput,
    advance,
)
from rules.index import CompiledRule, rule_index
from rules.workflow import CompiledStep

log = logging.getLogger("notify.workflows.runner")


@dataclass(slots=True)
class RunnerStats:
    runs: int = 0  # runs advanced and written back
    steps: int = 0  # step decisions taken
    notifications: list[int] = field(default_factory=list)  # of runs whose channel steps wrote
    by_decision: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def advance_due_runs(
    limit: int | None = None, ttl: float | None = None, now: datetime | None = None
) -> RunnerStats:
    """Claim a chunk of due runs and advance each as far as it goes now."""
    now = now or timezone.now()
    runs, token = claim_due_runs(
        limit or conf.get("WORKFLOW_BATCH_SIZE"), ttl or conf.get("CLAIM_TTL"), now
    )
    if not runs:
        return RunnerStats()
    return advance_claimed(runs, token, now)


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


def load_engagement(runs: Sequence[ClaimedRun]) -> dict[int, Engagement]:
    """Engagement per notification id of these runs (two queries; none when no
    run has sent anything yet)."""
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


def resume_position(steps: tuple[CompiledStep, ...], run: ClaimedRun) -> tuple[int, str]:
    """Where a run goes on, and why it moved ("" when it did not).

    A run remembers the next step it takes by id (``WorkflowRun.step_id``), so
    steps that ops reorder or insert before it change nothing it has done, and
    a step they edit applies from its next evaluation. A run not started yet
    (no id) begins at its position (0: the first step). When its step was
    deleted, the run goes on at the step now at the deleted step's position
    (the one that followed it, when nothing else moved), or ends if none is."""
    if run.step_id is None:
        return min(run.step, len(steps)), ""
    for step in steps:
        if step.id == run.step_id:
            return step.position, ""
    position = min(run.step, len(steps))
    if position < len(steps):
        reason = (
            f"step {run.step + 1} was deleted from the workflow: the run goes on at step "
            f"{position + 1} ({steps[position].describe()})"
        )
    else:
        reason = f"step {run.step + 1} was deleted from the workflow: no step follows it"
    return position, reason[:300]


@dataclass(slots=True)
class Chunk:
    """What a chunk of runs reads, each thing once."""

    events: dict[int, Event]
    contexts: dict[int, dict[str, Any]]  # per event: payload, event, actor
    rules: dict[int, CompiledRule]
    categories: dict[int, Category]
    infos: dict[int, CategoryInfo]
    channels_of: dict[int, dict[int, dict[str, str | None]]]  # rule -> position -> aliases
    prefs: dict[int, UserPrefs]
    engagement: dict[int, Engagement]
    batches: dict[int, dict[str, Any]]


def load_chunk(runs: Sequence[ClaimedRun]) -> Chunk:
    """Step 2: the chunk's events, rules, categories, preferences, engagement."""
    events = {
        e.pk: e
        for e in Event.objects.filter(pk__in={r.event_id for r in runs}).select_related("actor")
    }
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
    channels_of = {
        rule.id: {
            i: rule_channels(rule, s.channels) for i, s in enumerate(rule.steps) if s.channels
        }
        for rule in rules.values()
    }
    kinds = {k for steps in channels_of.values() for ch in steps.values() for k in ch.values() if k}
    return Chunk(
        events=events,
        contexts={pk: condition_context(event) for pk, event in events.items()},
        rules=rules,
        categories=categories,
        infos={pk: category_info(c) for pk, c in categories.items()},
        channels_of=channels_of,
        prefs=load_preferences(list({run.user_id for run in runs}), category_ids, kinds),
        engagement=load_engagement(runs),
        batches=batch_context([run.pk for run in runs if run.batch_key]),
    )


@dataclass(slots=True)
class SendGroup:
    """The runs of a chunk whose channel step at ``position`` of one rule sends
    now for one event: planned and written together."""

    rule: CompiledRule
    event: Event
    position: int
    template: str  # the step's own template, or the rule's for a batch run ("": the rule's)
    runs: list[ClaimedRun] = field(default_factory=list)
    planned: list[PlannedNotification] = field(default_factory=list)


def advance_claimed(runs: Sequence[ClaimedRun], token: datetime, now: datetime) -> RunnerStats:
    stats = RunnerStats()
    if not runs:
        return stats
    chunk = load_chunk(runs)
    working_hours = conf.get("WORKFLOW_WORKING_HOURS")
    updates: list[RunUpdate] = []
    logs: list[tuple] = []  # (run, position, kind, decision, reason, until)
    groups: dict[tuple[int, int, int], SendGroup] = {}
    prefs_contexts: dict[tuple[int, int], dict[str, Any]] = {}
    for run in runs:
        rule = chunk.rules.get(run.rule_id)
        category = chunk.categories.get(rule.category_id) if rule else None
        event = chunk.events.get(run.event_id)
        user_prefs = chunk.prefs.get(run.user_id)
        position, moved = run.step, ""
        if rule is None or not rule.steps or category is None or event is None:
            result = stopped(run, "the rule is inactive, deleted or has no steps any more", now)
        elif user_prefs is None:
            result = stopped(run, "user deleted", now)
        else:
            info = chunk.infos[category.pk]
            position, moved = resume_position(rule.steps, run)
            key = (id(user_prefs), category.pk)
            prefs = prefs_contexts.get(key)
            if prefs is None:
                prefs = prefs_contexts[key] = prefs_context(user_prefs, info)
            context = {
                **chunk.contexts[run.event_id],
                "prefs": prefs,
                "category": {"key": info.key, "name": category.name, "critical": info.critical},
                "batch": chunk.batches.get(run.pk) or {"count": 1, "others": 0},
            }
            result = advance(
                rule.steps,
                RunInput(
                    position,
                    context,
                    chunk.engagement.get(run.notification_id or 0, Engagement()),
                    user_prefs.timezone,
                    run.created_at,
                ),
                now,
                working_hours,
            )
            for decision in result.sends:
                group = groups.get((rule.id, event.pk, decision.position))
                if group is None:
                    step = rule.steps[decision.position]
                    template = step.message if step.message != rule.message else ""
                    if run.batch_key:
                        template = step.message or rule.message
                    group = groups[rule.id, event.pk, decision.position] = SendGroup(
                        rule, event, decision.position, template
                    )
                group.runs.append(run)
        steps = rule.steps if rule else ()
        step_id = steps[result.position].id if result.position < len(steps) else None
        updates.append(
            RunUpdate(
                run.pk,
                result.state,
                result.position,
                step_id,
                result.due_at,
                result.reason,
                sent=bool(result.sends),
            )
        )
        if moved:
            logs.append((run.pk, position, "edit", MOVED, moved, None))
            stats.by_decision[MOVED] += 1
        for d in result.decisions:
            logs.append((run.pk, d.position, d.kind, d.decision, d.reason[:300], d.until))
            stats.by_decision[d.decision] += 1
        stats.steps += len(result.decisions)
    plan_groups(groups.values(), chunk, now)
    delivered = planned_rows(groups.values())
    logs = [
        (*entry, delivered.get((entry[0], entry[1]), []) if entry[3] == SENT else [])
        for entry in logs
    ]
    written = write_back(groups, updates, logs, {run.pk for run in runs}, token, now)
    stats.runs = len(written)
    stats.notifications = [n for n in written.values() if n]
    return stats


class ClaimLost(Exception):
    """Some runs of the chunk were cancelled, or claimed again, meanwhile."""

    def __init__(self, ours: set[int]) -> None:
        self.ours = ours


def write_back(
    groups: dict[tuple[int, int, int], SendGroup],
    updates: list[RunUpdate],
    logs: list[tuple],
    ours: set[int],
    token: datetime,
    now: datetime,
) -> dict[int, int | None]:
    """Step 5, in one transaction: a worker never sees a step's deliveries
    before the run that made them points at their notification (a batch
    renders from it), and a run's step is written once or not at all.

    The runs are written after their deliveries (to point at the notification
    in the same statement) and only while still claimed with ``token``; if any
    is not (cancelled, or its claim expired and another runner took it), the
    transaction is rolled back and written again for the runs still ours."""
    while ours:
        try:
            with transaction.atomic():
                write_groups(groups.values(), ours, now)
                written = finish_claimed_runs([u for u in updates if u.run_id in ours], token, now)
                if written.keys() != ours:
                    raise ClaimLost(set(written))
                write_step_logs([entry for entry in logs if entry[0] in ours], now)
                for group in groups.values():
                    if group.template:
                        set_step_templates(
                            [n for r in group.runs if (n := written.get(r.pk))],
                            group.rule.steps[group.position].channels,
                            group.template,
                        )
                return written
        except ClaimLost as lost:
            log.info("%d run(s) of a chunk were no longer claimed", len(ours - lost.ours))
            ours = lost.ours
    return {}


def plan_groups(groups: Any, chunk: Chunk, now: datetime) -> None:
    """Step 4: each group's deliveries, planned for all its recipients at once."""
    policies: dict[int, RulePolicy] = {}
    for group in groups:
        rule = group.rule
        info = chunk.infos[rule.category_id]
        channels = chunk.channels_of[rule.id][group.position]
        users = [run.user_id for run in group.runs]
        planned = plan_chunk(users, info, channels, chunk.prefs, now)
        policy = policies.get(rule.id) or policies.setdefault(rule.id, RulePolicy(rule))
        group.planned = policy.adjust(group.event.pk, info, channels, planned, now)


def write_groups(groups: Any, ours: set[int], now: datetime) -> None:
    """Step 5: each group's notifications and deliveries, with fan-out's writer."""
    for group in groups:
        mine = {run.user_id for run in group.runs if run.pk in ours}
        planned = [p for p in group.planned if p.user_id in mine]
        if planned:
            rule = group.rule
            write_fanout_chunk(
                group.event.pk,
                rule.id,
                rule.category_id,
                planned,
                now,
                notification_group_key(rule.id, group.event),
            )


def planned_rows(groups: Any) -> dict[tuple[int, int], list[list[str]]]:
    """Per (run, step position): its deliveries as planned, [channel, status]
    each, for the run's history."""
    rows: dict[tuple[int, int], list[list[str]]] = {}
    for group in groups:
        by_user = {p.user_id: p.deliveries for p in group.planned}
        for run in group.runs:
            rows[run.pk, group.position] = [
                [d.channel, d.status] for d in by_user.get(run.user_id, ())
            ]
    return rows


def stopped(run: ClaimedRun, reason: str, now: datetime) -> Advance:
    result = Advance(position=run.step, state=CANCELLED, reason=reason)
    result.decisions.append(Decision(run.step, "run", CANCELLED, reason, now))
    return result
