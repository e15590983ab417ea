"""Dispatch: claimed deliveries in, sends out, every attempt on the record.

The same ``deliver`` runs in the in-process worker pool, in a Celery task and
in tests. For a batch of claimed delivery ids:

1. load the deliveries with their notification, event, rule and user;
2. decide again with the current preferences and addresses; cancel a reminder
   whose cancel condition now holds; hold a message that would reach someone
   during their quiet hours until they end (not an attempt);
3. render each message in the recipient's locale (templates compiled once);
4. send through one open channel instance per channel alias;
5. write every outcome and attempt while the claim is still ours.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from django.db.models import F
from django.utils import timezone
from jinja2.exceptions import TemplateError

from channels.base import (
    Channel,
    ChannelConfigurationError,
    ChannelError,
    OutgoingMessage,
    SendResult,
    Suppressed,
    TransientError,
)
from notify import conf
from notify.delivery.cancel import CancelCheck
from notify.delivery.rendering import template_store
from notify.delivery.retry import RetryPolicy
from notify.fanout.pipeline import actor_context, condition_context, event_context
from notify.logs import log_context
from notify.models import Delivery, DeliveryAttempt
from notify.models.status import Status
from notify.outbox.rows import Outcome, record_outcomes
from notify.preferences.decide import SEND, decide
from notify.preferences.directory import category_info, load_preferences
from notify.preferences.one_click import UnsubscribeScope, email_headers, unsubscribe_url
from notify.preferences.quiet_hours import QUIET_HOURS, applies_to, quiet_until
from notify.preferences.suppressions import suppress
from notify.registry import build_channel, describe

log = logging.getLogger("notify.delivery.send")
Attempt = DeliveryAttempt.Outcome


@dataclass(slots=True)
class DispatchStats:
    sent: int = 0
    skipped: int = 0
    retried: int = 0
    failed: int = 0
    dead: int = 0
    recorded: int = 0
    held: int = 0  # back to pending until the recipient's quiet hours end
    by_status: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def recipient_context(user: Any) -> dict[str, Any]:
    return {
        "id": user.pk,
        "username": user.get_username(),
        "first_name": getattr(user, "first_name", ""),
        "last_name": getattr(user, "last_name", ""),
        "name": user.get_full_name() or user.get_username(),
    }


def render_context(delivery: Delivery, unsubscribe: str = "") -> dict[str, Any]:
    notification = delivery.notification
    event = notification.event
    site = conf.get("SITE_URL").rstrip("/")
    return {
        "payload": event.payload,
        "event": event_context(event),
        "actor": actor_context(event.actor),
        "recipient": recipient_context(notification.user),
        "category": {"key": notification.category.key, "name": notification.category.name},
        "notification": {"id": notification.pk},
        "site_url": site,
        "settings_url": f"{site}/settings/notifications/",
        "inbox_url": f"{site}/inbox/",
        "unsubscribe_url": unsubscribe,
    }


def unsubscribe_link(delivery: Delivery, message_format: str) -> str:
    """The signed one-click link for an email of a non-critical category ("" otherwise)."""
    notification = delivery.notification
    if message_format != "email" or notification.category.critical:
        return ""
    return unsubscribe_url(
        UnsubscribeScope(notification.user_id, notification.category.key, delivery.channel)
    )


def build_message(
    delivery: Delivery, message_format: str, address: str, locale: str
) -> OutgoingMessage:
    """Render one delivery into what its channel sends. Raises TemplateError."""
    notification = delivery.notification
    rule = notification.rule
    if rule is None:
        raise TemplateError("the rule that made this notification was deleted")
    unsubscribe = unsubscribe_link(delivery, message_format)
    context = render_context(delivery, unsubscribe)
    parts = template_store.render(rule.message, message_format, context, locale)
    payload = notification.event.payload if isinstance(notification.event.payload, dict) else {}
    url = payload.get("url") if isinstance(payload.get("url"), str) else ""
    return OutgoingMessage(
        delivery_id=delivery.pk,
        channel=delivery.channel,
        to=address,
        subject=parts.subject,
        text=parts.text,
        html=parts.html,
        headers=email_headers(unsubscribe) if unsubscribe else {},
        extra={"notification_id": notification.pk, "user_id": notification.user_id, "url": url},
    )


def deliver(
    delivery_ids: Iterable[int], token: datetime, now: datetime | None = None
) -> DispatchStats:
    """Send a batch of deliveries claimed with ``token``."""
    stats = DispatchStats()
    policy = RetryPolicy.from_settings()
    # 1. load
    deliveries = list(
        Delivery.objects.filter(
            pk__in=list(delivery_ids), status=Status.SENDING, claimed_until=token
        )
        .select_related(
            "notification__event__actor",
            "notification__rule",
            "notification__user",
            "notification__category",
        )
        .order_by("channel", "pk")
    )
    if not deliveries:
        return stats
    # 2. preferences, again
    kinds = {}
    for alias in {d.channel for d in deliveries}:
        try:
            kinds[alias] = describe(alias)
        except ChannelConfigurationError:
            kinds[alias] = None
    prefs = load_preferences(
        list({d.notification.user_id for d in deliveries}),
        {d.notification.category_id for d in deliveries},
        {k[0] for k in kinds.values() if k and k[0]},
    )
    outcomes: list[Outcome] = []
    holds: list[Hold] = []
    cancels = CancelCheck()
    by_channel: dict[str, list[Delivery]] = defaultdict(list)
    for delivery in deliveries:
        by_channel[delivery.channel].append(delivery)
    for alias, batch in by_channel.items():
        if kinds[alias] is None:
            for delivery in batch:
                outcomes.append(_failure(delivery, f"channel '{alias}' is not configured", now))
            continue
        address_kind, message_format = kinds[alias]
        channel = build_channel(alias)
        try:
            for delivery in batch:
                # Every log line of this send carries its ids (notify.logs).
                with log_context(
                    event_id=delivery.notification.event_id,
                    delivery_id=delivery.pk,
                    attempt=delivery.attempts,
                    channel=alias,
                ):
                    result = _deliver_one(
                        delivery, channel, address_kind, message_format, prefs, policy, cancels
                    )
                    status = "held" if isinstance(result, Hold) else result.status
                    log.debug("delivery %s attempt %s: %s", delivery.pk, delivery.attempts, status)
                (holds if isinstance(result, Hold) else outcomes).append(result)
        finally:
            channel.close()
    # 5. record
    stats.recorded = record_outcomes(outcomes, token)
    stats.held = hold_deliveries(holds, token)
    for outcome in outcomes:
        stats.by_status[outcome.status] += 1
    stats.sent = stats.by_status[Status.SENT]
    stats.skipped = stats.by_status[Status.SKIPPED]
    stats.retried = stats.by_status[Status.PENDING]
    stats.failed = stats.by_status[Status.FAILED]
    stats.dead = stats.by_status[Status.DEAD]
    return stats


def _deliver_one(
    delivery: Delivery,
    channel: Channel,
    address_kind: str | None,
    message_format: str,
    prefs: dict,
    policy: RetryPolicy,
    cancels: CancelCheck | None = None,
) -> Outcome | Hold:
    started = timezone.now()
    notification = delivery.notification
    user_prefs = prefs.get(notification.user_id)
    if user_prefs is None:
        return _done(delivery, started, Status.SKIPPED, Attempt.SKIPPED, skip_reason="user_deleted")
    cancelled = _cancel_condition(delivery, cancels or CancelCheck(), started)
    if cancelled is not None:
        return cancelled
    category = category_info(notification.category)
    decision = decide(category, delivery.channel, address_kind, user_prefs, started)
    if decision.action != SEND:
        # Preferences changed since fan-out (digest holds are released by the scheduler).
        status = Status.DIGEST if decision.action == "digest" else Status.SKIPPED
        return _done(delivery, started, status, Attempt.SKIPPED, skip_reason=decision.reason)
    if user_prefs.quiet_start is not None and applies_to(address_kind, category.critical):
        quiet_end = quiet_until(
            started, user_prefs.quiet_start, user_prefs.quiet_end, user_prefs.timezone
        )
        if quiet_end is not None:
            return Hold(delivery.pk, quiet_end)
    try:
        message = build_message(delivery, message_format, decision.address, user_prefs.locale)
    except TemplateError as exc:
        # Ops-written templates can be broken; that fails this delivery, never the worker.
        return _done(
            delivery,
            started,
            Status.FAILED,
            Attempt.PERMANENT,
            error_code="template",
            error_message=str(exc),
        )
    try:
        result: SendResult = channel.send(message)
    except ChannelError as exc:
        return _error(delivery, started, exc, policy, message, address_kind)
    except ChannelConfigurationError:
        raise
    except Exception as exc:  # a bug or an unexpected library error: retry, and say what it was
        log.exception("unexpected error sending delivery %s", delivery.pk)
        return _error(
            delivery, started, TransientError(f"{type(exc).__name__}: {exc}"), policy, message
        )
    return _done(
        delivery,
        started,
        Status.SENT,
        Attempt.SENT,
        provider=result.provider,
        message_id=result.message_id,
        sent=message.as_record(),
        response=result.response,
    )


def _done(
    delivery: Delivery, started: datetime, status: str, attempt_outcome: str, **fields: Any
) -> Outcome:
    return Outcome(
        delivery_id=delivery.pk,
        status=status,
        attempt=delivery.attempts,
        started_at=started,
        finished_at=timezone.now(),
        attempt_outcome=attempt_outcome,
        **fields,
    )


def suppress_refused(exc: ChannelError, address_kind: str | None, address: str) -> None:
    """Suppress an address the provider refuses for good (shared with digests)."""
    if isinstance(exc, Suppressed) and address_kind and address:
        # The provider refuses the address for good (SMS STOP, ...): nothing may
        # be sent to it again until it is lifted.
        suppress(
            kind=address_kind,
            address=address,
            reason="sms_stop" if exc.code == "21610" else "invalid",
            source=exc.provider,
            detail=str(exc),
        )


def _error(
    delivery: Delivery,
    started: datetime,
    exc: ChannelError,
    policy: RetryPolicy,
    message: OutgoingMessage,
    address_kind: str | None = None,
) -> Outcome:
    suppress_refused(exc, address_kind, message.to)
    fields = {
        "provider": exc.provider,
        "error_code": exc.code,
        "error_message": exc.message,
        "sent": message.as_record(),
        "response": _jsonable(exc.response),
    }
    if not exc.retryable:
        return _done(delivery, started, Status.FAILED, Attempt.PERMANENT, **fields)
    if policy.exhausted(delivery.attempts):
        return _done(delivery, started, Status.DEAD, Attempt.TRANSIENT, **fields)
    delay = policy.delay(delivery.attempts, getattr(exc, "retry_after", None))
    return _done(
        delivery,
        started,
        Status.PENDING,
        Attempt.TRANSIENT,
        next_attempt_at=timezone.now() + timedelta(seconds=delay),
        **fields,
    )


def _failure(delivery: Delivery, reason: str, now: datetime | None) -> Outcome:
    started = now or timezone.now()
    return _done(
        delivery,
        started,
        Status.FAILED,
        Attempt.PERMANENT,
        error_code="config",
        error_message=reason,
    )


def _jsonable(value: Any) -> dict:
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    return {"detail": str(value)[:2000]}


# -- reminders and quiet hours ---------------------------------------------------------


class Hold(NamedTuple):
    """A claimed delivery that goes back to pending until ``until``: not an attempt."""

    delivery_id: int
    until: datetime
    reason: str = QUIET_HOURS


def hold_deliveries(holds: Iterable[Hold], token: datetime) -> int:
    """Put held deliveries back to pending (while the claim is still ours), due
    when the hold ends; the claim's attempt is given back. Returns how many."""
    by_until: dict[tuple[datetime, str], list[int]] = defaultdict(list)
    for hold in holds:
        by_until[(hold.until, hold.reason)].append(hold.delivery_id)
    held = 0
    for (until, reason), ids in by_until.items():
        held += Delivery.objects.filter(
            pk__in=ids, status=Status.SENDING, claimed_until=token
        ).update(
            status=Status.PENDING,
            next_attempt_at=until,
            hold_reason=reason,
            claimed_until=None,
            attempts=F("attempts") - 1,
            updated_at=timezone.now(),
        )
    return held


def _cancel_condition(
    delivery: Delivery, cancels: CancelCheck, started: datetime
) -> Outcome | None:
    """The outcome of a reminder whose cancel condition holds (or cannot be
    evaluated) against the current data; ``None`` to go on sending."""
    notification = delivery.notification
    rule = notification.rule
    if rule is None or not rule.cancel_condition.strip():
        return None
    verdict = cancels.verdict(
        rule.cancel_condition, notification.event, condition_context(notification.event)
    )
    if verdict is None:
        return None
    if verdict.status == Status.CANCELLED:
        return _done(
            delivery,
            started,
            Status.CANCELLED,
            Attempt.SKIPPED,
            skip_reason=verdict.skip_reason,
            error_message=verdict.message,
        )
    return _done(
        delivery,
        started,
        Status.FAILED,
        Attempt.PERMANENT,
        error_code=verdict.skip_reason,
        error_message=verdict.message,
    )
