"""Fan-out: one stored event in, outbox rows out. Nothing is rendered here.

The flow, top to bottom:

1. load the event and build the condition context;
2. match the compiled rules indexed by event type;
3. for each matched rule, stream its recipients in chunks;
4. per chunk: load preferences and addresses (a fixed number of queries),
   decide per user and channel (pure), write one multi-row insert per table.

Steps 1-4 up to the write are the fan-out sequence
(``notify.fanout.sequence.plan_event``), the same one the admin preview and
"send me a test" run; ``fan_out`` writes what it plans.

When: a rule with a delay or a payload time makes its deliveries due later
(``notify.fanout.send_time.send_time``), and a non-critical message that would reach
a person during their quiet hours waits until they end
(``notify.preferences.quiet_hours``). A rule whose payload time is missing or invalid
writes nothing; the reason is recorded on the event and the other rules go on.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from notify.fanout import sequence
from notify.fanout.context import condition_context
from notify.fanout.middleware import EventMiddlewareError, apply_event_middleware
from notify.fanout.runs import BatchKeyError, start_runs
from notify.logs import log_context
from notify.models import Event, RuleError
from notify.outbox.rows import write_fanout_chunk
from rules.index import CompiledRule

log = logging.getLogger("notify.fanout.pipeline")


@dataclass(slots=True)
class FanoutStats:
    rules: int = 0
    recipients: int = 0
    notifications: int = 0
    deliveries: int = 0
    chunks: int = 0
    runs: int = 0  # workflow runs started (rules with steps; notify.fanout.runs)
    decisions: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)  # per rule that wrote nothing
    # (rule id, rule name, RuleError kind, message) per rule that failed for the event
    rule_errors: list[tuple[int, str, str, str]] = field(default_factory=list)

    def rule_failed(self, event_id: int, rule: CompiledRule, kind: str, message: str) -> None:
        """One rule failed for this event: said on the event, logged with its id."""
        log.warning("event %s, rule %s (%s) failed: %s", event_id, rule.id, rule.name, message)
        self.rule_errors.append((rule.id, rule.name, kind, message))
        self.errors.append(f"rule {rule.id} ({rule.name}): {message}; nothing sent for it")


GROUP_PAYLOAD_KEYS = ("thread", "group")


def notification_group_key(rule_id: int, event: Event) -> str:
    """What collapses this rule's notifications in the inbox: ``"<rule>:<thing>"``.

    Same rule = same kind of message; the thing is the event's ``object_ref``
    (``app.model:pk`` for signal events), else the payload's ``thread``, else
    its ``group`` — a string or a number. No thing, no group (""): the items
    stay apart. Long references are hashed to fit the column."""
    payload = event.payload if isinstance(event.payload, dict) else {}
    thing: Any = event.object_ref
    for key in GROUP_PAYLOAD_KEYS:
        if thing:
            break
        thing = payload.get(key)
    if isinstance(thing, bool) or not isinstance(thing, str | int) or thing == "":
        return ""
    key = f"{rule_id}:{thing}"
    if len(key) > 200:
        key = f"{rule_id}:sha256:{hashlib.sha256(str(thing).encode()).hexdigest()}"
    return key


# A rule that fails for one event: recorded as a RuleError, the other rules go on.
RULE_FAILURES = {
    sequence.CONDITION_FAILED: RuleError.Kind.CONDITION,
    sequence.BAD_SEND_TIME: RuleError.Kind.SEND_AT,
    sequence.DEDUP_FAILED: RuleError.Kind.DEDUP_KEY,
}


def fan_out(event: Event, now: datetime | None = None) -> FanoutStats:
    """Write the outbox rows for one event. Idempotent: safe to run again."""
    now = now or timezone.now()
    stats = FanoutStats()
    # 1-3. context, match, per rule: route, send time, ops controls (claimed)
    for plan in sequence.plan_event(event, now=now, record=True):
        rule = plan.rule
        if plan.stop in RULE_FAILURES:
            stats.rule_failed(event.pk, rule, RULE_FAILURES[plan.stop], plan.why)
            continue
        policy = plan.policy
        if policy is not None and (policy.note or policy.skip):
            stats.errors.append(f"rule {rule.id} ({rule.name}): {policy.skip or policy.note}")
        if plan.stop:
            continue
        assert policy is not None and plan.category is not None
        stats.rules += 1
        if rule.steps:  # a workflow: runs now, deliveries step by step (notify.workflows)
            try:
                stats.runs += start_runs(plan, condition_context(event), now).runs
            except BatchKeyError as exc:
                stats.rule_failed(event.pk, rule, RuleError.Kind.CONDITION, str(exc))
            continue
        group_key = notification_group_key(rule.id, event)
        # 4. recipients streamed in chunks, decided, one insert per table
        for chunk in plan.chunks():
            n, d = write_fanout_chunk(
                event.pk, rule.id, plan.category.id, chunk.planned, now, group_key=group_key
            )
            policy.written(event, chunk.user_ids, chunk.prefs)
            stats.chunks += 1
            stats.recipients += len(chunk.user_ids)
            stats.notifications += n
            stats.deliveries += d
            stats.decisions.update(d.status for p in chunk.planned for d in p.deliveries)
    return stats


def process_event(event_id: int) -> FanoutStats | None:
    """Fan out one claimed event and record the outcome on it.

    The event first passes the event middleware (``notify.fanout.middleware``),
    which may change, tag or drop it; a processor that raises leaves it
    stored and failed, the error naming the processor. Every log line made
    meanwhile carries the event id."""
    with log_context(event_id=event_id):
        return _process_event(event_id)


def _process_event(event_id: int) -> FanoutStats | None:
    # A slice without ORDER BY: .first() would order by Meta.ordering, whose
    # compilation cost more than the query (profiled: the events API, BENCHMARKS.md).
    event = next(
        iter(Event.objects.select_related("actor").filter(pk=event_id).order_by()[:1]), None
    )
    if event is None:
        return None
    try:
        event = apply_event_middleware(event)
    except EventMiddlewareError as exc:
        log.warning("event %s not fanned out: %s", event_id, exc)
        Event.objects.filter(pk=event_id).update(
            status=Event.State.FAILED, claimed_until=None, error=str(exc)[:2000]
        )
        return None
    if event is None:  # dropped by a processor; recorded on the event
        return None
    try:
        stats = fan_out(event)
    except Exception as exc:
        log.exception("fan-out of event %s failed", event_id)
        retry = event.attempts < 5
        Event.objects.filter(pk=event_id).update(
            status=Event.State.RECEIVED if retry else Event.State.FAILED,
            claimed_until=timezone.now() + timedelta(seconds=30 * 2**event.attempts)
            if retry
            else None,
            error=f"{type(exc).__name__}: {exc}"[:2000],
        )
        return None
    Event.objects.filter(pk=event_id).update(
        status=Event.State.PROCESSED,
        processed_at=timezone.now(),
        claimed_until=None,
        error="\n".join(stats.errors)[:2000],
    )
    record_rule_errors(event_id, stats.rule_errors)
    log.debug(
        "event %s fanned out: %d rules, %d notifications, %d deliveries",
        event_id,
        stats.rules,
        stats.notifications,
        stats.deliveries,
    )
    return stats


def record_rule_errors(event_id: int, errors: list[tuple[int, str, str, str]]) -> None:
    """Keep each rule's failure on the event (a re-run records it once)."""
    if errors:
        RuleError.objects.bulk_create(
            [
                RuleError(
                    event_id=event_id,
                    rule_id=rule_id,
                    rule_name=name[:200],
                    kind=kind,
                    message=message,
                )
                for rule_id, name, kind, message in errors
            ],
            ignore_conflicts=True,
        )


def reprocess_events(event_ids: Iterable[int]) -> int:
    """Make failed events due for fan-out again (admin action)."""
    return (
        Event.objects.filter(pk__in=list(event_ids))
        .exclude(status=Event.State.PROCESSING)
        .update(status=Event.State.RECEIVED, claimed_until=None, attempts=0)
    )
