"""Workflow runs as rows: made at fan-out, claimed when due, written back.

The same guarantees as deliveries (``notify.outbox.rows``): one run per
(event, rule, user), or per (rule, user, batch key) while a batch collects;
a claim marks runs ``running`` with an expiry in one short transaction
(``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL); a runner writes a
run's next state only while its claim is still the one it took, and a dead
runner's claims expire and are claimed again. The steps a run already took
wrote their deliveries with ``ON CONFLICT DO NOTHING``, so a step taken again
after a crash writes nothing twice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from notify.models import (
    Delivery,
    Notification,
    WorkflowBatchItem,
    WorkflowRun,
    WorkflowStepLog,
)
from notify.models.status import Status
from notify.outbox.rows import PlannedDelivery, _skip_locked

State = WorkflowRun.State


def write_runs(
    event_id: int, rule_id: int, user_ids: Sequence[int], due_at: datetime, now: datetime
) -> int:
    """One run per user, due at ``due_at``; a fan-out run again writes nothing twice."""
    if not user_ids:
        return 0
    ops = connection.ops
    table = ops.quote_name(WorkflowRun._meta.db_table)
    due, stamp = ops.adapt_datetimefield_value(due_at), ops.adapt_datetimefield_value(now)
    row = f"({int(event_id)}, {int(rule_id)}, %s, '', false, 0, 'waiting', %s, 0, '', %s, %s)"
    written = 0
    with connection.cursor() as cursor:
        for chunk in chunks(list(user_ids), ROWS_PER_STATEMENT):
            params: list = []
            for user_id in chunk:
                params += (user_id, due, stamp, stamp)
            cursor.execute(
                f"INSERT INTO {table} (event_id, rule_id, user_id, batch_key, collecting, step, "
                "state, due_at, attempts, reason, created_at, updated_at) "
                f"VALUES {', '.join([row] * len(chunk))} ON CONFLICT DO NOTHING",
                params,
            )
            written += cursor.rowcount
    return written


@dataclass(slots=True)
class Joined:
    run_id: int
    count: int
    closed: bool  # the batch reached its cap and is due now
    opened: bool  # this event opened the batch


def join_batch(
    event_id: int,
    rule_id: int,
    user_id: int,
    key: str,
    window: timedelta,
    cap: int | None,
    now: datetime,
) -> Joined | None:
    """Add the event to the user's open batch for ``key`` (opening one if none).

    ``None`` if the event is in a batch of this rule for this user already (a
    fan-out run again). The open run is locked while the item is added, so a
    runner closing it at the same moment (its claim sets ``collecting`` off)
    either sees the item or makes this event open the next batch."""
    if WorkflowBatchItem.objects.filter(
        event_id=event_id, rule_id=rule_id, user_id=user_id
    ).exists():
        return None
    for _ in range(5):
        with transaction.atomic():
            run = (
                WorkflowRun.objects.select_for_update()
                .filter(rule_id=rule_id, user_id=user_id, batch_key=key, collecting=True)
                .first()
            )
            opened = run is None
            if run is None:
                try:
                    with transaction.atomic():
                        run = WorkflowRun.objects.create(
                            event_id=event_id,
                            rule_id=rule_id,
                            user_id=user_id,
                            batch_key=key,
                            collecting=True,
                            due_at=now + window,
                            created_at=now,
                            updated_at=now,
                        )
                except IntegrityError:  # another process opened it: join that one
                    continue
            WorkflowBatchItem.objects.create(
                run=run, event_id=event_id, rule_id=rule_id, user_id=user_id, added_at=now
            )
            count = WorkflowBatchItem.objects.filter(run=run).count()
            closed = cap is not None and count >= cap
            if closed:
                WorkflowRun.objects.filter(pk=run.pk).update(
                    collecting=False, due_at=now, updated_at=now
                )
            return Joined(run.pk, count, closed, opened)
    raise RuntimeError(f"could not join a batch of rule {rule_id} for user {user_id}")


def claim_due_runs(
    limit: int, ttl: float, now: datetime | None = None, ids: Sequence[int] | None = None
) -> tuple[list[int], datetime]:
    """Claim up to ``limit`` due runs; their ids and the claim token (its expiry).

    Due: waiting with ``due_at`` come, or running with an expired claim. A
    claimed batch stops collecting: its window has ended (or it is full)."""
    now = now or timezone.now()
    token = now + timedelta(seconds=ttl)
    due = Q(state=State.WAITING, due_at__lte=now) | Q(state=State.RUNNING, claimed_until__lt=now)
    queryset = WorkflowRun.objects.filter(due)
    if ids is not None:
        queryset = queryset.filter(pk__in=list(ids))
    with transaction.atomic():
        claimed = list(
            _skip_locked(queryset.order_by("due_at")).values_list("pk", flat=True)[:limit]
        )
        if claimed:
            WorkflowRun.objects.filter(pk__in=claimed).update(
                state=State.RUNNING,
                claimed_until=token,
                collecting=False,
                attempts=F("attempts") + 1,
            )
    return claimed, token


@dataclass(slots=True)
class StepWrite:
    """A channel step's rows for one run: the notification and its deliveries."""

    run_id: int
    event_id: int
    rule_id: int
    user_id: int
    category_id: int
    group_key: str
    template: str
    deliveries: tuple[PlannedDelivery, ...]


def write_step_deliveries(
    writes: Sequence[StepWrite], now: datetime
) -> tuple[dict[int, int], list[tuple[int, int, str, str]]]:
    """Insert the notifications and deliveries of many runs' channel steps, one
    statement per table. Returns the notification id per run and, per delivery
    written now, (run id, delivery id, channel, status); rows already there
    (a step taken again) are left as they are."""
    if not writes:
        return {}, []
    ops = connection.ops
    stamp = ops.adapt_datetimefield_value(now)
    notifications = ops.quote_name(Notification._meta.db_table)
    deliveries = ops.quote_name(Delivery._meta.db_table)
    keys = list({(w.event_id, w.rule_id, w.user_id): w for w in writes}.values())
    by_key: dict[tuple[int, int, int], int] = {}
    with transaction.atomic(), connection.cursor() as cursor:
        # Statements of at most ROWS_PER_STATEMENT rows: SQLite takes 32,766 parameters.
        for chunk in chunks(keys, ROWS_PER_STATEMENT):
            values = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(chunk))
            params: list = []
            for w in chunk:
                params += (w.event_id, w.rule_id, w.user_id, w.category_id, stamp, w.group_key)
            cursor.execute(
                f"INSERT INTO {notifications} (event_id, rule_id, user_id, category_id, "
                f"created_at, group_key) VALUES {values} ON CONFLICT (event_id, rule_id, user_id) "
                "DO UPDATE SET category_id = EXCLUDED.category_id "
                "RETURNING id, event_id, rule_id, user_id",
                params,
            )
            by_key.update(((e, r, u), pk) for pk, e, r, u in cursor.fetchall())
        notification_of = {w.run_id: by_key[w.event_id, w.rule_id, w.user_id] for w in writes}
        rows: list = []
        for w in writes:
            for d in w.deliveries:
                due = stamp if d.due_at is None else ops.adapt_datetimefield_value(d.due_at)
                rows.append(
                    (
                        notification_of[w.run_id],
                        d.channel,
                        d.status,
                        d.skip_reason[:50],
                        d.hold_reason[:50],
                        due,
                        stamp,
                        stamp,
                        w.template[:100],
                    )
                )
        written: list[tuple[int, int, str, str]] = []
        run_of: dict[int, int] = {}
        for w in writes:
            run_of.setdefault(notification_of[w.run_id], w.run_id)
        for chunk in chunks(rows, ROWS_PER_STATEMENT):
            values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s)"] * len(chunk))
            cursor.execute(
                f"INSERT INTO {deliveries} (notification_id, channel, status, skip_reason, "
                "hold_reason, next_attempt_at, created_at, updated_at, template) "
                f"VALUES {values} ON CONFLICT (notification_id, channel) DO NOTHING "
                "RETURNING id, notification_id, channel, status",
                [value for row in chunk for value in row],
            )
            written += [
                (run_of[nid], pk, channel, status) for pk, nid, channel, status in cursor.fetchall()
            ]
    return notification_of, written


ROWS_PER_STATEMENT = 1000


def chunks(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(slots=True)
class RunUpdate:
    run_id: int
    state: str
    step: int
    due_at: datetime | None
    reason: str = ""
    notification_id: int | None = None


def finish_claimed_runs(
    updates: Sequence[RunUpdate], logs: Sequence[tuple], token: datetime, now: datetime
) -> int:
    """Write each run's next state and its history, for runs still claimed with
    ``token``; returns how many. A run cancelled meanwhile stays cancelled.

    ``logs``: (run id, position, kind, decision, reason, until, deliveries) per
    step taken, written with one multi-row insert (no model instances)."""
    if not updates:
        return 0
    ops = connection.ops
    table = ops.quote_name(WorkflowRun._meta.db_table)
    stamp = ops.adapt_datetimefield_value(now)
    claim = ops.adapt_datetimefield_value(token)
    final = (State.DONE, State.CANCELLED, State.FAILED)
    rows = [
        (
            u.state,
            u.step,
            ops.adapt_datetimefield_value(u.due_at or now),
            u.reason[:200],
            u.notification_id,
            stamp if u.state in final else None,
            stamp,
            u.run_id,
            claim,
        )
        for u in updates
    ]
    with transaction.atomic():
        ours = set(
            WorkflowRun.objects.filter(
                pk__in=[u.run_id for u in updates], state=State.RUNNING, claimed_until=token
            ).values_list("pk", flat=True)
        )
        with connection.cursor() as cursor:
            cursor.executemany(
                f"UPDATE {table} SET state = %s, step = %s, due_at = %s, reason = %s, "
                "notification_id = COALESCE(%s, notification_id), finished_at = %s, "
                "updated_at = %s, claimed_until = NULL "
                "WHERE id = %s AND state = 'running' AND claimed_until = %s",
                [row for row in rows if row[7] in ours],
            )
        write_step_logs([log for log in logs if log[0] in ours], now)
    return len(ours)


def write_step_logs(logs: Sequence[tuple], now: datetime) -> None:
    """The history rows, one multi-row insert per 1,000."""
    if not logs:
        return
    ops = connection.ops
    table = ops.quote_name(WorkflowStepLog._meta.db_table)
    stamp = ops.adapt_datetimefield_value(now)
    with connection.cursor() as cursor:
        for chunk in chunks(logs, ROWS_PER_STATEMENT):
            values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s)"] * len(chunk))
            params: list = []
            for run_id, position, kind, decision, reason, until, deliveries in chunk:
                params += (
                    run_id,
                    position,
                    kind,
                    decision,
                    reason[:300],
                    stamp,
                    ops.adapt_datetimefield_value(until) if until else None,
                    json.dumps(deliveries),
                )
            cursor.execute(
                f"INSERT INTO {table} (run_id, position, kind, decision, reason, at, until, "
                f"deliveries) VALUES {values}",
                params,
            )


def cancel_runs(runs: Q, reason: str, now: datetime | None = None) -> int:
    """Stop open runs: no step runs again, and their deliveries still waiting
    (delayed, held for quiet hours) are cancelled; one a worker is sending
    finishes. Returns how many runs stopped."""
    now = now or timezone.now()
    with transaction.atomic():
        ids = list(
            WorkflowRun.objects.filter(runs, state__in=WorkflowRun.OPEN).values_list("pk", "step")
        )
        if not ids:
            return 0
        WorkflowRun.objects.filter(pk__in=[pk for pk, _ in ids]).update(
            state=State.CANCELLED,
            collecting=False,
            claimed_until=None,
            reason=reason[:200],
            finished_at=now,
            updated_at=now,
        )
        notifications = WorkflowRun.objects.filter(
            pk__in=[pk for pk, _ in ids], notification__isnull=False
        ).values("notification_id")
        Delivery.objects.filter(notification_id__in=notifications, status=Status.PENDING).update(
            status=Status.CANCELLED, skip_reason="workflow_cancelled", updated_at=now
        )
        WorkflowStepLog.objects.bulk_create(
            [
                WorkflowStepLog(
                    run_id=pk,
                    position=step,
                    kind="cancel",
                    decision=WorkflowStepLog.Decision.CANCELLED,
                    reason=reason[:300],
                    at=now,
                )
                for pk, step in ids
            ]
        )
    return len(ids)
