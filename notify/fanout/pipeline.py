"""Fan-out: one stored event in, outbox rows out. Nothing is rendered here.

The flow, top to bottom:

1. load the event and build the condition context;
2. match the compiled rules indexed by event type;
3. for each matched rule, stream its recipients in chunks;
4. per chunk: load preferences and addresses (a fixed number of queries),
   decide per user and channel (pure), write one multi-row insert per table.

When: a rule with a delay or a payload time makes its deliveries due later
(``notify.fanout.send_time.send_time``), and a non-critical message that would reach
a person during their quiet hours waits until they end
(``notify.preferences.quiet_hours``). A rule whose payload time is missing or invalid
writes nothing; the reason is recorded on the event and the other rules go on.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from notify import conf
from notify.fanout.middleware import EventMiddlewareError, apply_event_middleware
from notify.fanout.policies import RulePolicy
from notify.fanout.send_time import SendAtError, send_time
from notify.logs import log_context
from notify.models import Category, Event, RuleError
from notify.models.status import Status
from notify.outbox.rows import PlannedDelivery, PlannedNotification, write_fanout_chunk
from notify.preferences.decide import SEND, SKIP, CategoryInfo, UserPrefs, decide
from notify.preferences.directory import DatabaseDirectory, category_info, load_preferences
from notify.preferences.quiet_hours import QUIET_HOURS, applies_to, quiet_until
from notify.registry import describe
from rules.index import CompiledRule, rule_index
from rules.recipients import EventRecipients, RecipientSpec, resolve_recipients

log = logging.getLogger("notify.fanout.pipeline")

EXPLICIT = (RecipientSpec("explicit"),)


@dataclass(slots=True)
class FanoutStats:
    rules: int = 0
    recipients: int = 0
    notifications: int = 0
    deliveries: int = 0
    chunks: int = 0
    decisions: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)  # per rule that wrote nothing
    # (rule id, rule name, RuleError kind, message) per rule that failed for the event
    rule_errors: list[tuple[int, str, str, str]] = field(default_factory=list)

    def rule_failed(self, event_id: int, rule: CompiledRule, kind: str, message: str) -> None:
        """One rule failed for this event: said on the event, logged with its id."""
        log.warning("event %s, rule %s (%s) failed: %s", event_id, rule.id, rule.name, message)
        self.rule_errors.append((rule.id, rule.name, kind, message))
        self.errors.append(f"rule {rule.id} ({rule.name}): {message}; nothing sent for it")


def actor_context(user: Any) -> dict[str, Any] | None:
    if user is None:
        return None
    return {
        "id": user.pk,
        "username": user.get_username(),
        "name": user.get_full_name() or user.get_username(),
        "first_name": getattr(user, "first_name", ""),
        "is_staff": user.is_staff,
        "is_superuser": user.is_superuser,
    }


def event_context(event: Event) -> dict[str, Any]:
    return {
        "id": event.pk,
        "type": event.type,
        "source": event.source,
        "object": event.object_ref,
        "received_at": event.received_at.isoformat() if event.received_at else "",
    }


def condition_context(event: Event) -> dict[str, Any]:
    return {
        "payload": event.payload,
        "event": event_context(event),
        "actor": actor_context(event.actor),
    }


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


def chunked(ids: Iterable[int], size: int) -> Iterator[list[int]]:
    iterator = iter(ids)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def plan_chunk(
    user_ids: Iterable[int],
    category: CategoryInfo,
    channels: dict[str, str | None],
    prefs: dict[int, UserPrefs],
    now: datetime,
    *,
    due_at: datetime | None = None,
    hold_reason: str = "",
) -> list[PlannedNotification]:
    """Decide every (user, channel) of a chunk. Pure: data in, rows out.

    ``due_at`` and ``hold_reason`` come from the rule (delayed or scheduled).
    A delivery that is due later is planned pending even if it is held for a
    digest today: dispatch decides again when it is due."""
    planned = []
    for user_id in user_ids:
        user_prefs = prefs.get(user_id)
        if user_prefs is None:  # deleted between resolution and loading
            continue
        deliveries = []
        for alias, address_kind in channels.items():
            decision = decide(category, alias, address_kind, user_prefs, now)
            if decision.action == SKIP:
                deliveries.append(PlannedDelivery(alias, Status.SKIPPED, decision.reason))
            elif decision.action == SEND or due_at is not None:
                deliveries.append(
                    plan_send(alias, address_kind, category, user_prefs, now, due_at, hold_reason)
                )
            else:
                deliveries.append(PlannedDelivery(alias, Status.DIGEST, decision.reason))
        planned.append(PlannedNotification(user_id, tuple(deliveries)))
    return planned


def plan_send(
    alias: str,
    address_kind: str | None,
    category: CategoryInfo,
    prefs: UserPrefs,
    now: datetime,
    due_at: datetime | None,
    hold_reason: str,
) -> PlannedDelivery:
    """A pending delivery, due at ``due_at`` or, if that falls in the user's
    quiet hours (and they apply), when the quiet hours end."""
    if prefs.quiet_start is not None and applies_to(address_kind, category.critical):
        quiet_end = quiet_until(due_at or now, prefs.quiet_start, prefs.quiet_end, prefs.timezone)
        if quiet_end is not None:
            return PlannedDelivery(alias, Status.PENDING, "", QUIET_HOURS, quiet_end)
    return PlannedDelivery(alias, Status.PENDING, "", hold_reason, due_at)


def rule_channels(rule: CompiledRule) -> dict[str, str | None]:
    """The rule's channel aliases (configured ones only) with their address kinds."""
    configured = conf.get("CHANNELS")
    aliases = rule.channels or tuple(conf.get("DEFAULT_CHANNELS"))
    channels = {}
    for alias in aliases:
        if alias not in configured:
            log.warning("rule %s names channel %r, which is not configured", rule.id, alias)
            continue
        channels[alias] = describe(alias)[0]
    return channels


def fan_out(event: Event, now: datetime | None = None) -> FanoutStats:
    """Write the outbox rows for one event. Idempotent: safe to run again."""
    now = now or timezone.now()
    stats = FanoutStats()
    # 1. context
    context = condition_context(event)
    # 2. match
    matches = []
    for match in rule_index.get().match(event.type, context):
        if match.matched:
            matches.append(match)
        elif match.failed:
            stats.rule_failed(event.pk, match.rule, RuleError.Kind.CONDITION, match.reason)
    if not matches:
        return stats
    categories = {
        c.pk: category_info(c)
        for c in Category.objects.filter(pk__in={m.rule.category_id for m in matches})
    }
    directory = DatabaseDirectory()
    recipients = EventRecipients(
        payload=event.payload if isinstance(event.payload, dict) else {},
        actor_id=event.actor_id,
        explicit=tuple(event.recipients or ()),
        object_ref=event.object_ref,
    )
    chunk_size = conf.get("FANOUT_CHUNK_SIZE")
    for match in matches:
        rule = match.rule
        category = categories.get(rule.category_id)
        channels = rule_channels(rule)
        if category is None or not channels:
            continue
        try:
            due_at, hold_reason = send_time(rule, event.payload, now)
        except SendAtError as exc:
            stats.rule_failed(event.pk, rule, RuleError.Kind.SEND_AT, str(exc))
            continue
        # Ops controls: deduplication, active window, then per chunk fallback,
        # throttling and dry run (notify.fanout.policies).
        policy = RulePolicy.start(rule, event, context, now)
        if policy.failed:
            stats.rule_failed(event.pk, rule, RuleError.Kind.DEDUP_KEY, policy.failed)
            continue
        if policy.note or policy.skip:
            stats.errors.append(f"rule {rule.id} ({rule.name}): {policy.skip or policy.note}")
        if policy.skip:
            continue
        due_at, hold_reason = policy.when(due_at, hold_reason, now)
        stats.rules += 1
        group_key = notification_group_key(rule.id, event)
        # 3. recipients, streamed
        user_ids = resolve_recipients(
            rule.recipients or EXPLICIT, recipients, directory, exclude_actor=rule.exclude_actor
        )
        for chunk in chunked(user_ids, chunk_size):
            # 4. preferences, decisions, one insert per table
            prefs = load_preferences(chunk, [category.id], {k for k in channels.values() if k})
            planned = plan_chunk(
                chunk, category, channels, prefs, now, due_at=due_at, hold_reason=hold_reason
            )
            planned = policy.adjust(event.pk, category, channels, planned, now)
            n, d = write_fanout_chunk(
                event.pk, rule.id, category.id, planned, now, group_key=group_key
            )
            policy.written(event, chunk, prefs)
            stats.chunks += 1
            stats.recipients += len(chunk)
            stats.notifications += n
            stats.deliveries += d
            stats.decisions.update(d.status for p in planned for d in p.deliveries)
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
    event = Event.objects.select_related("actor").filter(pk=event_id).first()
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
