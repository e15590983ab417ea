"""Dispatch: claimed deliveries in, sends out, every attempt on the record.

The same ``deliver`` runs in the in-process worker pool, in a Celery task and
in tests. For a batch of claimed delivery ids:

1. load the deliveries with their notification, event, rule and user;
2. decide again with the current preferences and addresses;
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
from typing import Any

from django.utils import timezone
from jinja2.exceptions import TemplateError

from channels.base import (
    Channel,
    ChannelConfigurationError,
    ChannelError,
    OutgoingMessage,
    SendResult,
    Status,
    TransientError,
)

from . import conf
from .directory import category_info, load_preferences
from .models import Delivery, DeliveryAttempt
from .outbox import Outcome, record_outcomes
from .pipeline import actor_context, event_context
from .preferences import SEND, decide
from .registry import build_channel, describe
from .rendering import template_store
from .retry import RetryPolicy

log = logging.getLogger("notify.dispatch")
Attempt = DeliveryAttempt.Outcome


@dataclass(slots=True)
class DispatchStats:
    sent: int = 0
    skipped: int = 0
    retried: int = 0
    failed: int = 0
    dead: int = 0
    recorded: int = 0
    by_status: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def recipient_context(user: Any) -> dict[str, Any]:
    return {
        "id": user.pk,
        "username": user.get_username(),
        "first_name": getattr(user, "first_name", ""),
        "last_name": getattr(user, "last_name", ""),
        "name": user.get_full_name() or user.get_username(),
    }


def render_context(delivery: Delivery) -> dict[str, Any]:
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
        "unsubscribe_url": "",
    }


def build_message(
    delivery: Delivery, message_format: str, address: str, locale: str
) -> OutgoingMessage:
    """Render one delivery into what its channel sends. Raises TemplateError."""
    notification = delivery.notification
    rule = notification.rule
    if rule is None:
        raise TemplateError("the rule that made this notification was deleted")
    parts = template_store.render(rule.message, message_format, render_context(delivery), locale)
    payload = notification.event.payload if isinstance(notification.event.payload, dict) else {}
    url = payload.get("url") if isinstance(payload.get("url"), str) else ""
    return OutgoingMessage(
        delivery_id=delivery.pk,
        channel=delivery.channel,
        to=address,
        subject=parts.subject,
        text=parts.text,
        html=parts.html,
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
    by_channel: dict[str, list[Delivery]] = defaultdict(list)
    for delivery in deliveries:
        by_channel[delivery.channel].append(delivery)
    for alias, batch in by_channel.items():
        if kinds[alias] is None:
            for delivery in batch:
                outcomes.append(
                    _failure(delivery, policy, None, f"channel '{alias}' is not configured", now)
                )
            continue
        address_kind, message_format = kinds[alias]
        channel = build_channel(alias)
        try:
            for delivery in batch:
                outcomes.append(
                    _deliver_one(delivery, channel, address_kind, message_format, prefs, policy)
                )
        finally:
            channel.close()
    # 5. record
    stats.recorded = record_outcomes(outcomes, token)
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
) -> Outcome:
    started = timezone.now()
    notification = delivery.notification
    user_prefs = prefs.get(notification.user_id)
    if user_prefs is None:
        return _done(delivery, started, Status.SKIPPED, Attempt.SKIPPED, skip_reason="user_deleted")
    decision = decide(
        category_info(notification.category), delivery.channel, address_kind, user_prefs, started
    )
    if decision.action != SEND:
        # Preferences changed since fan-out (digest holds are released by the scheduler).
        status = Status.DIGEST if decision.action == "digest" else Status.SKIPPED
        return _done(delivery, started, status, Attempt.SKIPPED, skip_reason=decision.reason)
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
        return _error(delivery, started, exc, policy, message)
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
        result.status,
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


def _error(
    delivery: Delivery,
    started: datetime,
    exc: ChannelError,
    policy: RetryPolicy,
    message: OutgoingMessage,
) -> Outcome:
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


def _failure(
    delivery: Delivery, policy: RetryPolicy, provider: str | None, reason: str, now: datetime | None
) -> Outcome:
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
