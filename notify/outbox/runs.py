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
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

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
from notify.outbox.rows import _skip_locked, claim_token

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


class ClaimedRun(NamedTuple):
    """What the runner reads of a claimed run (a tuple, not a model: a chunk is
    hundreds of runs)."""

    pk: int
    event_id: int
    rule_id: int
    user_id: int
    step: int
    step_id: int | None
    created_at: datetime
    notification_id: int | None
    batch_key: str


RUN_COLUMNS = (
    "id",
    "event_id",
    "rule_id",
    "user_id",
    "step",
    "step_id",
    "created_at",
    "notification_id",
    "batch_key",
)


def claim_due_runs(
    limit: int, ttl: float, now: datetime | None = None, ids: Sequence[int] | None = None
) -> tuple[list[ClaimedRun], datetime]:
    """Claim up to ``limit`` due runs; return them (by id) and the claim token
    (its expiry, as deliveries' claims: ``notify.outbox.rows.claim_token``).

    Due: waiting with ``due_at`` come, or running with an expired claim. A
    claimed batch stops collecting: its window has ended (or it is full).
    The claim is a short transaction (``SKIP LOCKED`` where the database has
    it) so that two runners never claim the same run; on PostgreSQL one
    statement claims and reads the chunk (``UPDATE ... FROM (SELECT ... FOR
    UPDATE SKIP LOCKED) RETURNING``)."""
    now = now or timezone.now()
    token = claim_token(now, ttl)
    due = Q(state=State.WAITING, due_at__lte=now) | Q(state=State.RUNNING, claimed_until__lt=now)
    queryset = WorkflowRun.objects.filter(due)
    if ids is not None:
        queryset = queryset.filter(pk__in=list(ids))
    if not queryset.exists():  # read first: an idle round takes no write lock (rows.nothing_due)
        return [], token
    if connection.vendor == "postgresql":
        return _claim_postgres(limit, token, now, ids), token
    with transaction.atomic():
        claimed = list(
            _skip_locked(queryset.order_by("due_at", "pk")).values_list("pk", flat=True)[:limit]
        )
        if not claimed:
            return [], token
        WorkflowRun.objects.filter(pk__in=claimed).update(
            state=State.RUNNING,
            claimed_until=token,
            collecting=False,
            attempts=F("attempts") + 1,
        )
        rows = WorkflowRun.objects.filter(pk__in=claimed).order_by("pk").values_list(*RUN_COLUMNS)
        return [ClaimedRun(*row) for row in rows], token


def _claim_postgres(
    limit: int, token: datetime, now: datetime, ids: Sequence[int] | None
) -> list[ClaimedRun]:
    table = connection.ops.quote_name(WorkflowRun._meta.db_table)
    only = "AND id = ANY(%s) " if ids is not None else ""
    params: list = [token, now, now, *([list(ids)] if ids is not None else []), limit]
    columns = ", ".join(f"r.{c}" for c in RUN_COLUMNS)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} AS r SET state = 'running', claimed_until = %s, "
            "collecting = false, attempts = r.attempts + 1 "
            f"FROM (SELECT id FROM {table} WHERE ((state = 'waiting' AND due_at <= %s) "
            f"OR (state = 'running' AND claimed_until < %s)) {only}"
            "ORDER BY due_at, id LIMIT %s FOR UPDATE SKIP LOCKED) AS due "
            f"WHERE r.id = due.id RETURNING {columns}",
            params,
        )
        rows = cursor.fetchall()
    return sorted(ClaimedRun(*row) for row in rows)


def set_step_templates(
    notification_ids: Sequence[int], channels: Sequence[str], template: str
) -> None:
    """A channel step with a template of its own, or of a batch run: its
    deliveries render ``template`` (``notify.delivery.message``). The rows are
    written by fan-out's writer, which leaves the template to the rule's; only
    such steps pay this one statement."""
    if notification_ids and template:
        Delivery.objects.filter(
            notification_id__in=list(notification_ids), channel__in=list(channels), template=""
        ).update(template=template[:100])


@dataclass(slots=True)
class RunUpdate:
    run_id: int
    state: str
    step: int
    step_id: int | None
    due_at: datetime | None
    reason: str = ""
    sent: bool = False  # a channel step wrote rows: point the run at its notification


# Past this many distinct outcomes in a chunk, PostgreSQL writes the runs (and
# the history) with one statement over whole columns instead of one per outcome.
FEW_OUTCOMES = 16


def finish_claimed_runs(
    updates: Sequence[RunUpdate], token: datetime, now: datetime
) -> dict[int, int | None]:
    """Write each run's next state, for runs still claimed with ``token``;
    returns the notification id of each run written (a run cancelled or
    claimed again meanwhile is not: it stays as it is).

    Runs of a chunk mostly end alike (the same step, state, due time), so the
    runs are written with one statement per distinct outcome, over an array of
    ids (``id = ANY(...)``; more than ``FEW_OUTCOMES``: one ``UPDATE ... FROM
    unnest(...)`` on PostgreSQL). A run whose channel step wrote rows points at
    its notification, found by its (event, rule, user) key in the same statement."""
    if not updates:
        return {}
    final = (State.DONE, State.CANCELLED, State.FAILED)
    outcomes: dict[tuple, list[int]] = defaultdict(list)
    for u in updates:
        key = (u.state, u.step, u.step_id, u.due_at or now, u.reason[:200], u.sent)
        outcomes[key].append(u.run_id)
    ops = connection.ops
    table = ops.quote_name(WorkflowRun._meta.db_table)
    notifications = ops.quote_name(Notification._meta.db_table)
    notification_of = (
        f"COALESCE(r.notification_id, CASE WHEN {{sent}} THEN (SELECT n.id FROM {notifications} n "
        "WHERE n.event_id = r.event_id AND n.rule_id = r.rule_id AND n.user_id = r.user_id) END)"
    )
    postgres = connection.vendor == "postgresql"
    ours = "r.state = 'running' AND r.claimed_until = %s"
    claim = token if postgres else ops.adapt_datetimefield_value(token)
    written: dict[int, int | None] = {}
    with connection.cursor() as cursor:
        if postgres and len(outcomes) > FEW_OUTCOMES:
            cursor.execute(
                f"UPDATE {table} AS r SET state = v.state, step = v.step, step_id = v.step_id, "
                "due_at = v.due_at, reason = v.reason, "
                f"notification_id = {notification_of.format(sent='v.sent')}, "
                "finished_at = v.finished_at, updated_at = %s, claimed_until = NULL "
                "FROM unnest(%s::bigint[], %s::text[], %s::int[], %s::bigint[], "
                "%s::timestamptz[], %s::text[], %s::bool[], %s::timestamptz[]) "
                "AS v(id, state, step, step_id, due_at, reason, sent, finished_at) "
                f"WHERE r.id = v.id AND {ours} "
                "RETURNING r.id, r.notification_id",
                [
                    now,
                    [u.run_id for u in updates],
                    [u.state for u in updates],
                    [u.step for u in updates],
                    [u.step_id for u in updates],
                    [u.due_at or now for u in updates],
                    [u.reason[:200] for u in updates],
                    [u.sent for u in updates],
                    [now if u.state in final else None for u in updates],
                    claim,
                ],
            )
            return dict(cursor.fetchall())
        stamp = ops.adapt_datetimefield_value(now)
        for (state, step, step_id, due_at, reason, sent), ids in outcomes.items():
            for part in chunks(ids, len(ids) if postgres else ROWS_PER_STATEMENT):
                which = (
                    "r.id = ANY(%s)" if postgres else f"r.id IN ({', '.join(['%s'] * len(part))})"
                )
                cursor.execute(
                    f"UPDATE {table} AS r SET state = %s, step = %s, step_id = %s, due_at = %s, "
                    f"reason = %s, notification_id = {notification_of.format(sent='%s')}, "
                    "finished_at = %s, updated_at = %s, claimed_until = NULL "
                    f"WHERE {which} AND {ours} "
                    "RETURNING id, notification_id",
                    [
                        state,
                        step,
                        step_id,
                        ops.adapt_datetimefield_value(due_at),
                        reason,
                        sent,
                        stamp if state in final else None,
                        stamp,
                        *([list(part)] if postgres else part),
                        claim,
                    ],
                )
                written.update(cursor.fetchall())
    return written


def write_step_logs(logs: Sequence[tuple], now: datetime) -> None:
    """The history rows: (run id, position, kind, decision, reason, until,
    deliveries) each. Rows alike but for their run are written together (one
    statement over an array of run ids on PostgreSQL), else in multi-row
    inserts of 1,000."""
    if not logs:
        return
    ops = connection.ops
    table = ops.quote_name(WorkflowStepLog._meta.db_table)
    columns = "(run_id, position, kind, decision, reason, at, until, deliveries)"
    alike: dict[tuple, list[int]] = defaultdict(list)
    for run_id, position, kind, decision, reason, until, delivered in logs:
        alike[position, kind, decision, reason[:300], until, json.dumps(delivered)].append(run_id)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql" and len(alike) <= FEW_OUTCOMES:
            for (position, kind, decision, reason, until, delivered), run_ids in alike.items():
                cursor.execute(
                    f"INSERT INTO {table} {columns} "
                    "SELECT r, %s, %s, %s, %s, %s, %s, %s::jsonb FROM unnest(%s::bigint[]) AS r",
                    [position, kind, decision, reason, now, until, delivered, run_ids],
                )
            return
        stamp = ops.adapt_datetimefield_value(now)
        rows = [
            (
                run_id,
                *key[:4],
                stamp,
                ops.adapt_datetimefield_value(key[4]) if key[4] else None,
                key[5],
            )
            for key, run_ids in alike.items()
            for run_id in run_ids
        ]
        for chunk in chunks(rows, ROWS_PER_STATEMENT):
            values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s)"] * len(chunk))
            cursor.execute(
                f"INSERT INTO {table} {columns} VALUES {values}",
                [value for row in chunk for value in row],
            )


ROWS_PER_STATEMENT = 1000


def chunks(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


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
