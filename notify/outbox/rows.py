"""The outbox: writing fan-out rows, claiming due work, recording outcomes.

This is the database edge of the flow. Everything here is written to be safe
with several workers (threads or processes) at once:

* rows are unique per (event, rule, user) and (notification, channel), so a
  fan-out that is retried after a crash writes nothing twice;
* a claim marks rows ``sending`` with an expiry in one transaction
  (``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's IMMEDIATE
  transactions serialise writers); its worker's heartbeat extends it
  (``notify.outbox.lease``), so only a dead worker's claim expires, and
  ``reap_lost`` sorts such a batch out (the row in flight apart);
* an outcome is written, one delivery at a time, only while the claim is still ours.
"""

from __future__ import annotations

import functools
import json
import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from django.db import IntegrityError, connection, transaction
from django.db.models import Count, F
from django.db.models.functions import Greatest
from django.utils import timezone

from notify import conf
from notify.models import Delivery, DeliveryAttempt, Event, Notification
from notify.models.status import Status
from notify.outbox.status_reports import apply_waiting_reports

log = logging.getLogger("notify.outbox.rows")


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
    """Insert one chunk: its notifications and their deliveries. Returns row counts.

    Written in SQL rather than ``bulk_create`` because building a model
    instance and compiling each value costs ~50 µs per row in the ORM. The
    statements keep the ORM's table and column names and the same uniqueness
    guarantees (``ON CONFLICT``, so a retried fan-out writes nothing twice).

    No row is built in Python. The recipients of a chunk share a few delivery
    plans ("shapes": pending on every channel, no address for email, held for
    the digest, ...; ``plan_chunk`` shares their tuples), so the database gets
    the user ids as one array and, per recipient, which shape it has; it joins
    the shapes' rows in. SQLite: two statements (``json_each``), PostgreSQL: one
    (the notification insert as a data-modifying ``WITH``, arrays through
    ``unnest``), whatever the number of recipients and deliveries.

    The event, rule and category are checked once per chunk, by the same
    statement (``PARENTS``): the columns have no database constraint (its check
    ran per row). If one of them is gone, nothing is written and
    ``IntegrityError`` is raised, as the constraint did at the commit.
    """
    if not planned:
        return 0, 0
    ops = connection.ops
    stamp = ops.adapt_datetimefield_value(now)
    shapes, shape_of = delivery_shapes(planned)
    deliveries = sum(len(shapes[k]) for k in shape_of)
    args = (int(event_id), int(rule_id), int(category_id), stamp, group_key)
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            notifications = _write_chunk_postgres(cursor, args, planned, shapes, shape_of)
        else:
            notifications = _write_chunk_sqlite(cursor, args, planned, shapes, shape_of)
        if not notifications:  # rows found or written for every recipient, or none
            raise IntegrityError(
                f"fan-out of event {event_id}, rule {rule_id}, category {category_id}: "
                "one of them no longer exists; nothing written"
            )
    return notifications, deliveries


def parents_sql(lock: bool) -> str:
    """A row if the chunk's event, rule and category all exist (parameters
    ``%(e)s``, ``%(r)s``, ``%(c)s``). ``lock``: PostgreSQL's ``FOR KEY SHARE``,
    the lock a foreign-key check takes, so none of them can be deleted before
    the chunk commits. (SQLite needs no lock: the chunk's IMMEDIATE
    transaction keeps every other writer out until it commits.)

    This replaces the three foreign-key constraints of the notification
    table (and the delivery's on its notification, written by the same
    statement), whose checks ran once per row: on PostgreSQL at the commit,
    26 % of a fan-out's time (BENCHMARKS.md)."""
    rule = Notification._meta.get_field("rule").related_model
    category = Notification._meta.get_field("category").related_model
    quote = connection.ops.quote_name
    return (
        f"SELECT 1 FROM {quote(Event._meta.db_table)} e, {quote(rule._meta.db_table)} r, "
        f"{quote(category._meta.db_table)} c "
        "WHERE e.id = %(e)s AND r.id = %(r)s AND c.id = %(c)s" + (" FOR KEY SHARE" if lock else "")
    )


Shape = tuple[PlannedDelivery, ...]


def delivery_shapes(planned: Sequence[PlannedNotification]) -> tuple[list[Shape], list[int]]:
    """The chunk's distinct delivery plans, and each recipient's index into them.

    Recipients whose plan ``plan_chunk`` shared have the same tuple: they are
    grouped by identity (no hashing of the tuple per recipient), and only the
    groups' tuples are compared by value."""
    by_identity: dict[int, int] = {}
    by_value: dict[Shape, int] = {}
    shapes: list[Shape] = []
    shape_of: list[int] = []
    append = shape_of.append
    for p in planned:
        deliveries = p.deliveries
        k = by_identity.get(id(deliveries))
        if k is None:
            k = by_value.get(deliveries)
            if k is None:
                k = by_value[deliveries] = len(shapes)
                shapes.append(deliveries)
            by_identity[id(deliveries)] = k
        append(k)
    return shapes, shape_of


# The columns fan-out writes; the others take their database defaults.
DELIVERY_COLUMNS = (
    "notification_id, channel, status, skip_reason, hold_reason, "
    "next_attempt_at, created_at, updated_at"
)

# Shapes per SQLite statement: their rows are scanned for each recipient (a
# few dozen comparisons in C). A chunk with more (users with quiet hours of
# their own, each due at their own time) takes a statement per this many.
SQLITE_SHAPES_PER_STATEMENT = 32


def _shape_rows(shapes: Sequence[Shape], stamp: object) -> list[tuple]:
    """(shape, order, channel, status, skip reason, hold reason, due) per planned delivery."""
    adapt = connection.ops.adapt_datetimefield_value
    return [
        (
            k,
            order,
            d.channel,
            d.status,
            d.skip_reason,
            d.hold_reason,
            stamp if d.due_at is None else adapt(d.due_at),
        )
        for k, shape in enumerate(shapes)
        for order, d in enumerate(shape)
    ]


def _write_chunk_sqlite(cursor, args, planned, shapes, shape_of) -> int:
    notification_table = connection.ops.quote_name(Notification._meta.db_table)
    delivery_table = connection.ops.quote_name(Delivery._meta.db_table)
    cursor.execute(
        f"INSERT INTO {notification_table} "
        "(event_id, rule_id, user_id, category_id, created_at, group_key) "
        "SELECT %(e)s, %(r)s, j.value, %(c)s, %(t)s, %(g)s FROM json_each(%(users)s) AS j "
        f"WHERE EXISTS ({parents_sql(lock=False)}) "
        "ON CONFLICT (event_id, rule_id, user_id) DO UPDATE SET category_id = EXCLUDED.category_id "
        "RETURNING user_id, id",
        {
            "e": args[0],
            "r": args[1],
            "c": args[2],
            "t": args[3],
            "g": args[4],
            "users": json.dumps([p.user_id for p in planned]),
        },
    )
    ids = dict(cursor.fetchall())
    stamp = args[3]
    per = SQLITE_SHAPES_PER_STATEMENT
    for first in range(0, len(shapes), per):
        batch = shapes[first : first + per]
        n = len(batch)
        rows = _shape_rows(batch, stamp)
        if not rows:
            continue
        # notification id * n + shape: one integer per recipient, ascending.
        keys = sorted(
            ids[p.user_id] * n + (k - first)
            for p, k in zip(planned, shape_of, strict=True)
            if first <= k < first + n and p.user_id in ids
        )
        if not keys:
            continue
        values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(rows))
        cursor.execute(
            f"INSERT INTO {delivery_table} ({DELIVERY_COLUMNS}) "
            f"WITH s(k, o, channel, status, skip_reason, hold_reason, due) AS (VALUES {values}) "
            "SELECT j.value / %s, s.channel, s.status, s.skip_reason, s.hold_reason, s.due, "
            "%s, %s FROM json_each(%s) AS j CROSS JOIN s WHERE s.k = j.value %% %s "
            "ORDER BY j.key, s.o "
            "ON CONFLICT (notification_id, channel) DO NOTHING",
            [v for row in rows for v in row] + [n, stamp, stamp, json.dumps(keys), n],
        )
    return len(ids)


def _write_chunk_postgres(cursor, args, planned, shapes, shape_of) -> int:
    """One statement: the parents locked (``parents_sql``), the notifications
    (``RETURNING``), then the deliveries of those this statement inserted
    (``xmax = 0``) without a conflict check, and of those a retried fan-out
    found with ``ON CONFLICT DO NOTHING``."""
    notification_table = connection.ops.quote_name(Notification._meta.db_table)
    delivery_table = connection.ops.quote_name(Delivery._meta.db_table)
    rows = _shape_rows(shapes, args[3])
    columns = [list(c) for c in zip(*rows, strict=True)] if rows else [[]] * 7
    select = (
        f"INSERT INTO {delivery_table} ({DELIVERY_COLUMNS}) "
        "SELECT n.id, s.channel, s.status, s.skip_reason, s.hold_reason, s.due, %(t)s, %(t)s "
        "FROM n JOIN p ON p.u = n.user_id "
        "JOIN unnest(%(k)s::int[], %(o)s::int[], %(channel)s::text[], %(status)s::text[], "
        "%(skip)s::text[], %(hold)s::text[], %(due)s::timestamptz[]) "
        "AS s(k, o, channel, status, skip_reason, hold_reason, due) ON s.k = p.k "
    )
    cursor.execute(
        f"WITH parents AS ({parents_sql(lock=True)}), "
        "p AS (SELECT * FROM unnest(%(users)s::bigint[], %(shape)s::int[]) AS p(u, k) "
        "WHERE EXISTS (SELECT 1 FROM parents)), "
        f"n AS (INSERT INTO {notification_table} "
        "(event_id, rule_id, user_id, category_id, created_at, group_key) "
        "SELECT %(e)s, %(r)s, p.u, %(c)s, %(t)s, %(g)s FROM p "
        "ON CONFLICT (event_id, rule_id, user_id) DO UPDATE SET category_id = EXCLUDED.category_id "
        "RETURNING id, user_id, xmax = 0 AS fresh), "
        f"fresh AS ({select} WHERE n.fresh ORDER BY n.id, s.o), "
        f"retried AS ({select} WHERE NOT n.fresh ORDER BY n.id, s.o "
        "ON CONFLICT (notification_id, channel) DO NOTHING) "
        "SELECT count(*) FROM n",
        {
            "e": args[0],
            "r": args[1],
            "c": args[2],
            "t": args[3],
            "g": args[4],
            "users": [p.user_id for p in planned],
            "shape": shape_of,
            "k": columns[0],
            "o": columns[1],
            "channel": columns[2],
            "status": columns[3],
            "skip": columns[4],
            "hold": columns[5],
            "due": columns[6],
        },
    )
    return cursor.fetchone()[0]


def _skip_locked(queryset):
    if connection.features.has_select_for_update_skip_locked:
        return queryset.select_for_update(skip_locked=True)
    return queryset


# A delivery that was in flight when its worker died: it is sent alone (in a
# batch of its own, with nothing else in flight in its process) until it is
# recorded, so a message that kills its worker takes no batch mate with it.
SUSPECT = "suspect"
SEND_ORDER = ("channel", "pk")  # the order a batch is sent in


def claim_token(now: datetime, ttl: float) -> datetime:
    """A claim's expiry, which doubles as its token: a few random microseconds
    keep two claims made at the same instant apart."""
    return now + timedelta(seconds=ttl, microseconds=random.randrange(1, 1000))


def claim_due_deliveries(
    limit: int,
    ttl: float,
    now: datetime | None = None,
    ids: Iterable[int] | None = None,
) -> tuple[list[int], datetime]:
    """Claim up to ``limit`` due deliveries; return their ids and the claim token.

    Due means pending and ``next_attempt_at`` has come. With ``ids``, only
    those are claimed (a queue task claims the deliveries it names that are
    still due; the others were sent, or are someone else's, meanwhile). A
    suspect (``SUSPECT``: in flight when its worker died) is claimed alone.
    Rows whose claim expired (their worker died) are first sorted out by
    ``reap_lost`` and claimed as pending rows.

    Each claim counts as an attempt; a delivery put back untried gives it back.
    """
    now = now or timezone.now()
    token = claim_token(now, ttl)
    claimed, lost = _claim(limit, token, now, ids)
    if lost:
        reap_lost(lost, now)
        if not claimed:
            claimed, _lost = _claim(limit, token, now, ids)
    return claimed, token


def claim_more(limit: int, token: datetime, channel: str, now: datetime | None = None) -> list[int]:
    """Claim up to ``limit`` more due deliveries of ``channel`` under the running
    batch's claim ``token`` (its current one: call it inside ``Lease.held()``);
    return their ids.

    A batch with sends in flight grows with them instead of draining before
    its next claim (``notify.delivery.inflight.send_all``). The rows are the
    ones ``_claim`` would take (pending and due, skipping rows another worker
    is claiming), of this channel only, never a suspect (sent alone, in a
    batch of its own) and never an expired claim (``claim_due_deliveries``
    sorts those out), through ``_claim`` as any claim: nothing due, no write lock."""
    if limit < 1:
        return []
    claimed, _lost = _claim(limit, token, now or timezone.now(), None, channel=channel)
    return claimed


def _only_ids(ids: Iterable[int] | None) -> tuple[str, list[int] | None]:
    """A claim's ``AND id IN (...)`` restriction and its parameters: ``("", None)``
    for any due row, ``("", [])`` when asked for no row at all."""
    if ids is None:
        return "", None
    wanted = [int(i) for i in ids]
    if not wanted:
        return "", []
    return f"AND id IN ({', '.join(['%s'] * len(wanted))}) ", wanted


def _skip_locked_sql() -> str:
    """Rows another worker is claiming are passed over, where the database can."""
    return (
        " FOR UPDATE SKIP LOCKED" if connection.features.has_select_for_update_skip_locked else ""
    )


def nothing_due(table: str, due: str, params: Sequence[object]) -> bool:
    """Whether a claim would find no row where ``due`` (its WHERE) holds: one
    read, so that a worker's round that finds nothing takes no write lock. On
    SQLite a claim's IMMEDIATE transaction takes the whole file's, and every
    writer beside it (a web request storing an event) waited for an idle
    worker's empty round; on PostgreSQL an empty claim costs three round trips
    instead of one. Inside a caller's transaction (which holds its write lock
    already) the claim itself is as cheap: no read first."""
    if connection.in_atomic_block:
        return False
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT 1 FROM {table} WHERE {due}LIMIT 1", params)
        return cursor.fetchone() is None


def _claim(
    limit: int,
    token: datetime,
    now: datetime,
    ids: Iterable[int] | None,
    channel: str | None = None,
) -> tuple[list[int], set[datetime]]:
    """Claim pending due rows; return them and the tokens of expired claims seen.

    Plain SQL (the ORM's ``Q``/``F`` queryset compiled for every batch of ten
    cost more than the two statements): the due rows by ``next_attempt_at``
    (``FOR UPDATE SKIP LOCKED`` where the database has it), then one UPDATE.
    With ``channel`` (a growing batch, ``claim_more``): pending rows of that
    channel only, no suspect, no expired claim."""
    ops = connection.ops
    table = ops.quote_name(Delivery._meta.db_table)
    at = ops.adapt_datetimefield_value(now)
    only, wanted = _only_ids(ids)
    if wanted == []:
        return [], set()
    params: list[object]
    if channel is None:
        params = [Status.PENDING, at, Status.SENDING, at, *(wanted or ())]
        due = (
            "((status = %s AND next_attempt_at <= %s) OR (status = %s AND claimed_until < %s)) "
            f"{only}"
        )
    else:
        params = [Status.PENDING, at, channel, SUSPECT, *(wanted or ())]
        due = f"status = %s AND next_attempt_at <= %s AND channel = %s AND hold_reason <> %s {only}"
    if nothing_due(table, due, params):
        return [], set()
    lock = _skip_locked_sql()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, status, hold_reason, claimed_until FROM {table} "
            f"WHERE {due}ORDER BY next_attempt_at ASC LIMIT %s{lock}",
            [*params, int(limit)],
        )
        rows = cursor.fetchall()
        lost = {_claim_time(row[3]) for row in rows if row[1] == Status.SENDING}
        pending = [row for row in rows if row[1] == Status.PENDING]
        suspects = [row[0] for row in pending if row[2] == SUSPECT]
        claimed = suspects[:1] or [row[0] for row in pending]
        if claimed:
            cursor.execute(
                f"UPDATE {table} SET status = %s, claimed_until = %s, attempts = attempts + 1 "
                f"WHERE id IN ({', '.join(['%s'] * len(claimed))})",
                [Status.SENDING, ops.adapt_datetimefield_value(token), *claimed],
            )
    return claimed, lost


def _claim_time(value: object) -> datetime:
    """A ``claimed_until`` read raw, as the ORM would give it (SQLite: text)."""
    field = Delivery._meta.get_field("claimed_until")
    column = field.get_col(Delivery._meta.db_table)
    for fn in connection.ops.get_db_converters(column) + column.get_db_converters(connection):
        value = fn(value, column, connection)
    return value  # type: ignore[return-value]


@dataclass(slots=True)
class Reaped:
    """What ``reap_lost`` made of lost batches: ids put back pending."""

    suspects: list[int] = field(default_factory=list)  # in flight at the loss: alone from now
    mates: list[int] = field(default_factory=list)  # never started: as if never claimed
    dead: list[int] = field(default_factory=list)  # lost too often: dead, "worker lost"


LOST_MESSAGE = (
    "the worker sending it stopped before recording an outcome (killed, or crashed "
    "on this message); "
)


def mark_in_flight(delivery_ids: int | Sequence[int], token: datetime) -> None:
    """Say that these claimed rows' sends start now (``Delivery.sending_since``).

    On PostgreSQL a mark alone commits without waiting for the WAL flush
    (``synchronous_commit = off`` for this transaction only): it is visible to
    every other session at once, which is all a reaper needs after a worker's
    kill -9. Only a crash of the database server itself can lose a mark, and
    then the row is put back as never started. (A mark written with outcomes,
    ``record_outcomes``, commits as they do.)"""
    ids = [delivery_ids] if isinstance(delivery_ids, int) else list(delivery_ids)
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
        _mark(cursor, ids, token)


def _mark(cursor, ids: Sequence[int], token: datetime) -> None:
    ops = connection.ops
    table = ops.quote_name(Delivery._meta.db_table)
    ids = [int(i) for i in ids]  # our own ids: formatted in
    cursor.execute(
        f"UPDATE {table} SET sending_since = %s "
        f"WHERE id IN ({', '.join(map(str, ids))}) AND status = %s AND claimed_until = %s",
        (
            ops.adapt_datetimefield_value(timezone.now()),
            Status.SENDING,
            ops.adapt_datetimefield_value(token),
        ),
    )


def reap_lost(tokens: Iterable[datetime], now: datetime | None = None) -> Reaped:
    """Sort out the expired claims ``tokens`` (batches whose worker died).

    A batch marks each row in flight (``mark_in_flight``) while its send runs
    and records it as soon as it returns, so of a lost batch's unrecorded rows
    the one marked was in flight when its worker died (it may have reached the
    provider, or killed the worker): it gets a "lost" attempt on record and is
    sent alone from now on (``SUSPECT``), or ends dead once lost
    ``MAX_WORKER_LOSSES`` times (or at ``MAX_ATTEMPTS``). The others were never
    started: they are pending again, with their claim's attempt given back.
    Rows are locked (waiting, not skipping) so two reapers never split a batch."""
    now = now or timezone.now()
    tokens = [t for t in tokens if t is not None and t < now]
    reaped = Reaped()
    if not tokens:
        return reaped
    max_attempts = conf.get("MAX_ATTEMPTS")
    max_losses = conf.get("MAX_WORKER_LOSSES")
    with transaction.atomic():
        rows = list(
            Delivery.objects.select_for_update()
            .filter(status=Status.SENDING, claimed_until__in=tokens)
            .order_by("claimed_until", *SEND_ORDER)
            .values_list("pk", "attempts", "claimed_until", "sending_since")
        )
        in_flight: dict[int, tuple[int, datetime]] = {}
        for pk, attempts, token, since in rows:
            if since is None:
                reaped.mates.append(pk)
            else:
                in_flight[pk] = (attempts, token)
        earlier = dict(
            DeliveryAttempt.objects.filter(
                delivery_id__in=list(in_flight),
                outcome=DeliveryAttempt.Outcome.LOST,
            )
            .values("delivery_id")
            .annotate(n=Count("id"))
            .values_list("delivery_id", "n")
        )
        attempts_rows = []
        for pk, (attempts, token) in in_flight.items():
            losses = earlier.get(pk, 0) + 1
            final = losses >= max_losses or attempts >= max_attempts
            (reaped.dead if final else reaped.suspects).append(pk)
            message = LOST_MESSAGE + (
                f"lost {losses} times, not retried"
                if final
                else f"lost {losses} times, sent alone next"
            )
            attempts_rows.append(
                DeliveryAttempt(
                    delivery_id=pk,
                    number=attempts,
                    # When the claim was taken, as far as we know.
                    started_at=min(now, token - timedelta(seconds=conf.get("CLAIM_TTL"))),
                    finished_at=now,
                    outcome=DeliveryAttempt.Outcome.LOST,
                    error_code="worker_lost",
                    error_message=message,
                )
            )
        DeliveryAttempt.objects.bulk_create(attempts_rows)
        if reaped.dead:
            Delivery.objects.filter(pk__in=reaped.dead).update(
                status=Status.DEAD,
                claimed_until=None,
                sending_since=None,
                error_code="worker_lost",
                error_message=LOST_MESSAGE + "lost too often, not retried",
                updated_at=now,
            )
        if reaped.suspects:
            Delivery.objects.filter(pk__in=reaped.suspects).update(
                status=Status.PENDING,
                hold_reason=SUSPECT,
                claimed_until=None,
                sending_since=None,
                next_attempt_at=now,
                error_code="worker_lost",
                error_message=LOST_MESSAGE + "sent alone next",
                updated_at=now,
            )
        if reaped.mates:
            Delivery.objects.filter(pk__in=reaped.mates).update(
                status=Status.PENDING,
                claimed_until=None,
                next_attempt_at=now,
                attempts=Greatest(F("attempts") - 1, 0),
                updated_at=now,
            )
    if reaped.suspects or reaped.dead:
        log.warning(
            "claims expired (worker lost): %d in flight sent alone next %s, %d dead %s, "
            "%d never started put back",
            len(reaped.suspects),
            reaped.suspects[:20],
            len(reaped.dead),
            reaped.dead[:20],
            len(reaped.mates),
        )
    return reaped


def release(ids: Iterable[int], token: datetime, now: datetime | None = None) -> int:
    """Put claimed rows that were not started back to pending, due now, their
    claim's attempt given back (a batch past ``WORKER_BATCH_SECONDS``)."""
    now = now or timezone.now()
    return Delivery.objects.filter(
        pk__in=list(ids), status=Status.SENDING, claimed_until=token
    ).update(
        status=Status.PENDING,
        claimed_until=None,
        next_attempt_at=now,
        attempts=Greatest(F("attempts") - 1, 0),
        updated_at=now,
    )


def claim_events(
    limit: int, ttl: float, now: datetime | None = None, ids: Iterable[int] | None = None
) -> list[int]:
    """Claim events waiting for fan-out (new, or whose processing claim expired);
    with ``ids``, only those. Plain SQL, as ``_claim``: every round of every
    worker thread asks, and mostly finds nothing."""
    now = now or timezone.now()
    ops = connection.ops
    table = ops.quote_name(Event._meta.db_table)
    at = ops.adapt_datetimefield_value(now)
    only, wanted = _only_ids(ids)
    if wanted == []:
        return []
    params: list[object] = [
        Event.State.RECEIVED.value,
        at,
        at,
        Event.State.PROCESSING.value,
        at,
        *(wanted or ()),
    ]
    due = (
        "((status = %s AND (claimed_until IS NULL OR claimed_until <= %s) "
        "AND (scheduled_for IS NULL OR scheduled_for <= %s)) "
        f"OR (status = %s AND claimed_until < %s)) {only}"
    )
    if nothing_due(table, due, params):
        return []
    lock = _skip_locked_sql()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id FROM {table} WHERE {due}ORDER BY received_at ASC LIMIT %s{lock}",
            [*params, int(limit)],
        )
        claimed = [row[0] for row in cursor.fetchall()]
        if claimed:
            cursor.execute(
                f"UPDATE {table} SET status = %s, claimed_until = %s, attempts = attempts + 1 "
                f"WHERE id IN ({', '.join(['%s'] * len(claimed))})",
                [
                    Event.State.PROCESSING.value,
                    ops.adapt_datetimefield_value(now + timedelta(seconds=ttl)),
                    *claimed,
                ],
            )
    return claimed


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


def record_outcomes(outcomes: Iterable[Outcome], token: datetime, mark: Sequence[int] = ()) -> int:
    """Write outcomes for deliveries still claimed with ``token``, and mark the
    claimed rows ``mark`` in flight, in one short transaction; return how many
    outcomes were written.

    A worker calls it at each tick of its send loop (``notify.delivery.inflight``)
    with the outcomes known since the last and the sends it is about to start:
    one guarded UPDATE per outcome (its claim must still be ``token``; a row
    whose claim is no longer ours is left alone) and its attempt row, one
    UPDATE for the marks (``mark_in_flight``)."""
    outcomes = list(outcomes)
    if not outcomes:
        if mark:
            mark_in_flight(mark, token)
        return 0
    ops = connection.ops
    table = ops.quote_name(Delivery._meta.db_table)
    # A prepared UPDATE per row (Django's bulk_update builds a CASE per column
    # and costs ~1 ms a row here), its row count saying whether the claim was ours.
    update = (
        f"UPDATE {table} SET status = %s, skip_reason = %s, provider = %s, "
        "provider_message_id = %s, error_code = %s, error_message = %s, next_attempt_at = %s, "
        "claimed_until = NULL, sending_since = NULL, sent_at = %s, updated_at = %s, "
        "attempts = attempts - %s, "
        "hold_reason = CASE WHEN hold_reason = %s THEN '' ELSE hold_reason END "
        "WHERE id = %s AND status = %s AND claimed_until = %s"
    )
    claim = ops.adapt_datetimefield_value(token)
    ours: list[Outcome] = []
    with transaction.atomic(), connection.cursor() as cursor:
        for o in outcomes:
            finished = ops.adapt_datetimefield_value(o.finished_at)
            cursor.execute(
                update,
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
                    1 if o.refund_attempt else 0,
                    SUSPECT,
                    o.delivery_id,
                    Status.SENDING,
                    claim,
                ),
            )
            if cursor.rowcount == 1:
                ours.append(o)
        attempts = [row for o in ours for row in o.attempt_rows()]
        if attempts:
            insert_attempts(cursor, attempts)
        if mark:
            _mark(cursor, mark, token)
    # Status reports that came before this record was committed (DESIGN.md, 8).
    apply_waiting_reports(o.message_id for o in ours if o.status == Status.SENT)
    return len(ours)


def insert_attempts(cursor, attempts: list[DeliveryAttempt]) -> None:
    """Insert attempt rows as prepared values (``bulk_create`` compiles every
    value through the ORM: most of a tick's write on a busy worker)."""
    insert_attempt_values(cursor, [attempt_values(row) for row in attempts])


def attempt_values(row: DeliveryAttempt) -> list[Any]:
    """An attempt's column values as the database takes them, in
    ``insert_attempt_values``' order: ``delivery_id`` first, then ``number``."""
    return [f.get_db_prep_save(getattr(row, f.attname), connection) for f in _attempt_fields()]


# Up to this many rows, one multi-row INSERT; beyond, one ``executemany``.
# Measured both ways (``python -m bench.attempt_insert``, BENCHMARKS.md): on
# PostgreSQL one statement is 14-16 % faster a row at 1 and 2 rows (a
# worker's tick at the defaults: psycopg's executemany sets up a pipeline),
# executemany 1.3-1.7x faster from 128 (a tick of digests, one row per item;
# between, either way by run); on SQLite the two stay within 15 % at every size.
ONE_STATEMENT_ROWS = 8


def insert_attempt_values(cursor, rows: list[list[Any]]) -> None:
    """Insert prepared attempt rows (``attempt_values``): one statement for a
    few, one ``executemany`` for many (``ONE_STATEMENT_ROWS``)."""
    if not rows:
        return
    head, one = _attempt_insert()
    if len(rows) <= ONE_STATEMENT_ROWS:
        cursor.execute(f"{head}{', '.join([one] * len(rows))}", [v for row in rows for v in row])
    else:
        cursor.executemany(f"{head}{one}", rows)


def _attempt_insert() -> tuple[str, str]:
    """``INSERT INTO <attempts> (<columns>) VALUES `` and one row's placeholders."""
    fields = _attempt_fields()
    table = connection.ops.quote_name(DeliveryAttempt._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    return f"INSERT INTO {table} ({columns}) VALUES ", f"({', '.join(['%s'] * len(fields))})"


@functools.cache
def _attempt_fields() -> tuple:
    return tuple(f for f in DeliveryAttempt._meta.concrete_fields if not f.primary_key)


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
