"""The outbox: writing fan-out rows, claiming due work, recording outcomes.

This is the database edge of the flow. Everything here is written to be safe
with several workers (threads or processes) at once:

* rows are unique per (event, rule, user) and (notification, channel), so a
  fan-out that is retried after a crash writes nothing twice;
* a claim marks rows ``sending`` with an expiry in one transaction
  (``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's IMMEDIATE
  transactions serialise writers); an expired claim is claimed again;
* an outcome is written only while the claim is still ours.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from channels.base import Status

from .models import Delivery, DeliveryAttempt, Event, Notification


@dataclass(frozen=True, slots=True)
class PlannedDelivery:
    channel: str
    status: str
    skip_reason: str = ""


@dataclass(frozen=True, slots=True)
class PlannedNotification:
    user_id: int
    deliveries: tuple[PlannedDelivery, ...]


def write_fanout_chunk(
    event_id: int,
    rule_id: int,
    category_id: int,
    planned: Sequence[PlannedNotification],
    now: datetime,
) -> tuple[int, int]:
    """Insert one chunk: one multi-row insert per table. Returns row counts."""
    if not planned:
        return 0, 0
    with transaction.atomic():
        notifications = Notification.objects.bulk_create(
            [
                Notification(
                    event_id=event_id,
                    rule_id=rule_id,
                    user_id=p.user_id,
                    category_id=category_id,
                    created_at=now,
                )
                for p in planned
            ],
            batch_size=len(planned),
            update_conflicts=True,
            unique_fields=["event", "rule", "user"],
            update_fields=["category"],
        )
        deliveries = [
            Delivery(
                notification_id=notification.pk,
                channel=d.channel,
                status=d.status,
                skip_reason=d.skip_reason,
                next_attempt_at=now,
                created_at=now,
                updated_at=now,
            )
            for notification, p in zip(notifications, planned, strict=True)
            for d in p.deliveries
        ]
        Delivery.objects.bulk_create(
            deliveries, batch_size=len(deliveries) or None, ignore_conflicts=True
        )
    return len(notifications), len(deliveries)


def _skip_locked(queryset):
    if connection.features.has_select_for_update_skip_locked:
        return queryset.select_for_update(skip_locked=True)
    return queryset


def claim_due_deliveries(
    limit: int, ttl: float, now: datetime | None = None
) -> tuple[list[int], datetime]:
    """Claim up to ``limit`` due deliveries; return their ids and the claim token.

    Due means pending and ``next_attempt_at`` has come, or sending with an
    expired claim (the worker that held it died). The claim expiry doubles as
    the token that later proves the claim is still ours.
    """
    now = now or timezone.now()
    token = now + timedelta(seconds=ttl)
    due = Q(status=Status.PENDING, next_attempt_at__lte=now) | Q(
        status=Status.SENDING, claimed_until__lt=now
    )
    with transaction.atomic():
        ids = list(
            _skip_locked(Delivery.objects.filter(due).order_by("next_attempt_at")).values_list(
                "pk", flat=True
            )[:limit]
        )
        if ids:
            Delivery.objects.filter(pk__in=ids).update(
                status=Status.SENDING, claimed_until=token, attempts=F("attempts") + 1
            )
    return ids, token


def claim_events(limit: int, ttl: float, now: datetime | None = None) -> list[int]:
    """Claim events waiting for fan-out (new, or whose processing claim expired)."""
    now = now or timezone.now()
    due = Q(status=Event.State.RECEIVED) & (
        Q(claimed_until__isnull=True) | Q(claimed_until__lte=now)
    )
    due |= Q(status=Event.State.PROCESSING, claimed_until__lt=now)
    with transaction.atomic():
        ids = list(
            _skip_locked(Event.objects.filter(due).order_by("received_at")).values_list(
                "pk", flat=True
            )[:limit]
        )
        if ids:
            Event.objects.filter(pk__in=ids).update(
                status=Event.State.PROCESSING,
                claimed_until=now + timedelta(seconds=ttl),
                attempts=F("attempts") + 1,
            )
    return ids


@dataclass(slots=True)
class Outcome:
    """What happened to one claimed delivery, ready to be written."""

    delivery_id: int
    status: str
    attempt: int
    started_at: datetime
    finished_at: datetime
    provider: str = ""
    message_id: str = ""
    skip_reason: str = ""
    error_code: str = ""
    error_message: str = ""
    next_attempt_at: datetime | None = None
    attempt_outcome: str = DeliveryAttempt.Outcome.SENT
    sent: dict | None = None
    response: dict | None = None


def record_outcomes(outcomes: Iterable[Outcome], token: datetime) -> int:
    """Write outcomes for deliveries still claimed with ``token``; return how many."""
    outcomes = list(outcomes)
    if not outcomes:
        return 0
    by_id = {o.delivery_id: o for o in outcomes}
    with transaction.atomic():
        ours = set(
            _skip_locked(
                Delivery.objects.filter(pk__in=by_id, status=Status.SENDING, claimed_until=token)
            ).values_list("pk", flat=True)
        )
        rows = []
        for delivery_id in ours:
            o = by_id[delivery_id]
            rows.append(
                Delivery(
                    pk=delivery_id,
                    status=o.status,
                    skip_reason=o.skip_reason,
                    provider=o.provider,
                    provider_message_id=o.message_id,
                    error_code=o.error_code[:50],
                    error_message=o.error_message[:2000],
                    next_attempt_at=o.next_attempt_at or o.finished_at,
                    claimed_until=None,
                    sent_at=o.finished_at if o.status == Status.SENT else None,
                    updated_at=o.finished_at,
                )
            )
        Delivery.objects.bulk_update(
            rows,
            [
                "status",
                "skip_reason",
                "provider",
                "provider_message_id",
                "error_code",
                "error_message",
                "next_attempt_at",
                "claimed_until",
                "sent_at",
                "updated_at",
            ],
        )
        DeliveryAttempt.objects.bulk_create(
            [
                DeliveryAttempt(
                    delivery_id=o.delivery_id,
                    number=o.attempt,
                    started_at=o.started_at,
                    finished_at=o.finished_at,
                    provider=o.provider,
                    outcome=o.attempt_outcome,
                    error_code=o.error_code[:50],
                    error_message=o.error_message[:2000],
                    retry_at=o.next_attempt_at if o.status == Status.PENDING else None,
                    sent=o.sent or {},
                    response=o.response or {},
                )
                for o in (by_id[i] for i in ours)
            ]
        )
    return len(ours)


def retry_now(delivery_ids: Iterable[int]) -> int:
    """Make failed or dead deliveries due again (admin's "retry" action)."""
    return Delivery.objects.filter(
        pk__in=list(delivery_ids), status__in=[Status.FAILED, Status.DEAD]
    ).update(
        status=Status.PENDING,
        next_attempt_at=timezone.now(),
        attempts=0,
        claimed_until=None,
        error_code="",
        error_message="",
    )
