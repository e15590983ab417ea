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
from typing import NamedTuple

from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from notify import conf
from notify.models import Delivery, DeliveryAttempt, Event, Notification
from notify.models.status import Status
from notify.outbox.status_reports import apply_waiting_reports


class PlannedDelivery(NamedTuple):
    channel: str
    status: str
    skip_reason: str = ""
    hold_reason: str = ""  # why it waits: delayed, scheduled, quiet_hours...
    due_at: datetime | None = None  # None: now


class PlannedNotification(NamedTuple):
    """One recipient of a chunk and what each channel does for them.

    Named tuples, not dataclasses: fan-out makes hundreds of thousands."""

    user_id: int
    deliveries: tuple[PlannedDelivery, ...]


def write_fanout_chunk(
    event_id: int,
    rule_id: int,
    category_id: int,
    planned: Sequence[PlannedNotification],
    now: datetime,
    group_key: str = "",
) -> tuple[int, int]:
    """Insert one chunk: one multi-row insert per table. Returns row counts.

    Written in SQL rather than ``bulk_create`` because building a model
    instance and compiling each value costs ~50 µs per row in the ORM, which
    would make fan-out of 100,000 recipients (300,000 rows) take tens of
    seconds; the statements below keep the ORM's table and column names and the
    same uniqueness guarantees (``ON CONFLICT``, so a retried fan-out writes
    nothing twice).
    """
    if not planned:
        return 0, 0
    ops = connection.ops
    stamp = ops.adapt_datetimefield_value(now)
    notification_table = ops.quote_name(Notification._meta.db_table)
    delivery_table = ops.quote_name(Delivery._meta.db_table)
    # The ids are ints from our own rows; formatting them in keeps three
    # parameters per row (user, time, group key: a string, so a parameter),
    # far below SQLite's variable limit (32766) for a 2000-row chunk.
    event_id, rule_id, category_id = int(event_id), int(rule_id), int(category_id)
    # Columns not named here take their database defaults (``db_default``).
    values = ", ".join([f"({event_id}, {rule_id}, %s, {category_id}, %s, %s)"] * len(planned))
    params: list = []
    for p in planned:
        params += (p.user_id, stamp, group_key)
    insert_notifications = (
        f"INSERT INTO {notification_table} "
        "(event_id, rule_id, user_id, category_id, created_at, group_key) "
        f"VALUES {values} "
        "ON CONFLICT (event_id, rule_id, user_id) DO UPDATE SET category_id = EXCLUDED.category_id "
        "RETURNING id, user_id"
    )
    insert_delivery = (
        f"INSERT INTO {delivery_table} (notification_id, channel, status, skip_reason, hold_reason, "
        "next_attempt_at, created_at, updated_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (notification_id, channel) DO NOTHING"
    )
    postgres = connection.vendor == "postgresql"
    if postgres:
        # PostgreSQL: whole columns as arrays through unnest() — one statement,
        # one round trip, ~4x the rows/s of executemany or a long VALUES list.
        insert_notifications = (
            f"INSERT INTO {notification_table} "
            "(event_id, rule_id, user_id, category_id, created_at, group_key) "
            "SELECT %s, %s, u, %s, %s, %s FROM unnest(%s::bigint[]) AS u "
            "ON CONFLICT (event_id, rule_id, user_id) DO UPDATE SET category_id = EXCLUDED.category_id "
            "RETURNING id, user_id"
        )
        params = [event_id, rule_id, category_id, stamp, group_key, [p.user_id for p in planned]]
        insert_delivery = (
            f"INSERT INTO {delivery_table} (notification_id, channel, status, skip_reason, hold_reason, "
            "next_attempt_at, created_at, updated_at) "
            "SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[], "
            "%s::timestamptz[], %s::timestamptz[], %s::timestamptz[]) "
            "ON CONFLICT (notification_id, channel) DO NOTHING"
        )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(insert_notifications, params)
        notification_ids = dict((user_id, pk) for pk, user_id in cursor.fetchall())
        rows = [
            (
                notification_ids[p.user_id],
                d.channel,
                d.status,
                d.skip_reason,
                d.hold_reason,
                stamp if d.due_at is None else ops.adapt_datetimefield_value(d.due_at),
                stamp,
                stamp,
            )
            for p in planned
            for d in p.deliveries
        ]
        if rows and postgres:
            cursor.execute(insert_delivery, [list(column) for column in zip(*rows, strict=True)])
        elif rows:
            cursor.executemany(insert_delivery, rows)
    return len(notification_ids), len(rows)


def _skip_locked(queryset):
    if connection.features.has_select_for_update_skip_locked:
        return queryset.select_for_update(skip_locked=True)
    return queryset


def claim_due_deliveries(
    limit: int,
    ttl: float,
    now: datetime | None = None,
    ids: Iterable[int] | None = None,
) -> tuple[list[int], datetime]:
    """Claim up to ``limit`` due deliveries; return their ids and the claim token.

    Due means pending and ``next_attempt_at`` has come, or sending with an
    expired claim (the worker that held it died). The claim expiry doubles as
    the token that later proves the claim is still ours. With ``ids``, only
    those are claimed (a queue task claims the deliveries it names that are
    still due; the others were sent, or are someone else's, meanwhile).

    Each claim counts as an attempt. A delivery whose claim expired at its last
    attempt (``MAX_ATTEMPTS``) is not claimed again but ends dead, with a
    "lost" attempt on record: a message that kills every worker that takes it
    must stop somewhere, and redeliveries by the broker do not count attempts.
    """
    now = now or timezone.now()
    token = now + timedelta(seconds=ttl)
    due = Q(status=Status.PENDING, next_attempt_at__lte=now) | Q(
        status=Status.SENDING, claimed_until__lt=now
    )
    queryset = Delivery.objects.filter(due)
    if ids is not None:
        queryset = queryset.filter(pk__in=list(ids))
    max_attempts = conf.get("MAX_ATTEMPTS")
    with transaction.atomic():
        rows = list(
            _skip_locked(queryset.order_by("next_attempt_at")).values_list(
                "pk", "status", "attempts", "claimed_until"
            )[:limit]
        )
        lost = [row for row in rows if row[1] == Status.SENDING and row[2] >= max_attempts]
        if lost:
            _end_lost(lost, ttl, now)
        claimed = [row[0] for row in rows if row not in lost]
        if claimed:
            Delivery.objects.filter(pk__in=claimed).update(
                status=Status.SENDING, claimed_until=token, attempts=F("attempts") + 1
            )
    return claimed, token


def _end_lost(rows: list[tuple[int, str, int, datetime]], ttl: float, now: datetime) -> None:
    """Deliveries whose last claim expired without an outcome: dead, and why."""
    message = (
        "the worker holding the last claim stopped before recording an outcome "
        "(killed, or crashed on this message) at every attempt; not retried"
    )
    Delivery.objects.filter(pk__in=[row[0] for row in rows]).update(
        status=Status.DEAD,
        claimed_until=None,
        error_code="worker_lost",
        error_message=message,
        updated_at=now,
    )
    DeliveryAttempt.objects.bulk_create(
        [
            DeliveryAttempt(
                delivery_id=pk,
                number=attempts,
                # When the claim was taken, as far as we know (its expiry less a TTL).
                started_at=min(now, expired - timedelta(seconds=ttl)),
                finished_at=now,
                outcome=DeliveryAttempt.Outcome.LOST,
                error_code="worker_lost",
                error_message=message,
            )
            for pk, _status, attempts, expired in rows
        ]
    )


def claim_events(
    limit: int, ttl: float, now: datetime | None = None, ids: Iterable[int] | None = None
) -> list[int]:
    """Claim events waiting for fan-out (new, or whose processing claim expired);
    with ``ids``, only those."""
    now = now or timezone.now()
    due = (
        Q(status=Event.State.RECEIVED)
        & (Q(claimed_until__isnull=True) | Q(claimed_until__lte=now))
        & (Q(scheduled_for__isnull=True) | Q(scheduled_for__lte=now))
    )
    due |= Q(status=Event.State.PROCESSING, claimed_until__lt=now)
    queryset = Event.objects.filter(due)
    if ids is not None:
        queryset = queryset.filter(pk__in=list(ids))
    with transaction.atomic():
        ids = list(
            _skip_locked(queryset.order_by("received_at")).values_list("pk", flat=True)[:limit]
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
    # Not an attempt (paced, circuit open, a provider's 429 within its
    # allowance): the claim's count is handed back. With an empty
    # ``attempt_outcome`` nothing was tried and no attempt row is written.
    refund_attempt: bool = False
    # A push to several devices of the user: one outcome per device, each its
    # own attempt row (``notify.delivery.devices``); this outcome is their sum.
    parts: tuple[Outcome, ...] = ()

    def attempt_rows(self) -> list[DeliveryAttempt]:
        """The attempts on the record for this outcome: one per device of a
        push to several, else this outcome's own (none when nothing was tried)."""
        if self.parts:
            return [row for part in self.parts for row in part.attempt_rows()]
        return [self.attempt_row()] if self.attempt_outcome else []

    def attempt_row(
        self, delivery_id: int | None = None, number: int | None = None, **sent: object
    ) -> DeliveryAttempt:
        """The attempt on the record for this outcome: the one way a send is
        written down, for a single delivery and for each item of a digest (which
        passes the item's id and number, and ``digest=`` its id into ``sent``)."""
        return DeliveryAttempt(
            delivery_id=self.delivery_id if delivery_id is None else delivery_id,
            number=self.attempt if number is None else number,
            started_at=self.started_at,
            finished_at=self.finished_at,
            provider=self.provider[:50],
            outcome=self.attempt_outcome,
            error_code=self.error_code[:50],
            error_message=self.error_message[:2000],
            retry_at=self.next_attempt_at if self.status == Status.PENDING else None,
            sent={**(self.sent or {}), **sent},
            response=self.response or {},
        )


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
        # One prepared UPDATE per row, sent with executemany: Django's
        # bulk_update builds a CASE per column and costs ~1 ms a row here.
        ops = connection.ops
        table = ops.quote_name(Delivery._meta.db_table)
        update = (
            f"UPDATE {table} SET status = %s, skip_reason = %s, provider = %s, "
            "provider_message_id = %s, error_code = %s, error_message = %s, next_attempt_at = %s, "
            "claimed_until = NULL, sent_at = %s, updated_at = %s WHERE id = %s"
        )
        rows = []
        for delivery_id in ours:
            o = by_id[delivery_id]
            finished = ops.adapt_datetimefield_value(o.finished_at)
            rows.append(
                (
                    o.status,
                    o.skip_reason[:50],
                    o.provider[:50],
                    o.message_id[:255],
                    o.error_code[:50],
                    o.error_message[:2000],
                    ops.adapt_datetimefield_value(o.next_attempt_at)
                    if o.next_attempt_at
                    else finished,
                    finished if o.status == Status.SENT else None,
                    finished,
                    delivery_id,
                )
            )
        if rows:
            with connection.cursor() as cursor:
                cursor.executemany(update, rows)
        DeliveryAttempt.objects.bulk_create([row for i in ours for row in by_id[i].attempt_rows()])
        refunded = [i for i in ours if by_id[i].refund_attempt]
        if refunded:
            Delivery.objects.filter(pk__in=refunded).update(attempts=F("attempts") - 1)
    # Status reports that came before this record was committed (DESIGN.md, 8).
    apply_waiting_reports(by_id[i].message_id for i in ours if by_id[i].status == Status.SENT)
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
