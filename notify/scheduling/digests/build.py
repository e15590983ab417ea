"""Digests, step 1: build the due ones (see ``notify.scheduling.digests.send``).

For each (user, channel, frequency) with items waiting, ``latest_due`` names
the most recent period whose digest hour has been reached. If that period has
no ``Digest`` row yet and some items were waiting before its digest hour, one
transaction creates the row and claims the items with a conditional
``UPDATE ... SET digest_id = <row> WHERE ... AND digest_id IS NULL AND
status = 'digest'``. In bulk: the waiting items of ``USERS_PER_QUERY`` users
come in one query, and ``BUILD_BATCH`` digests are created with one insert and
claim their items with one ``UPDATE ... FROM`` (a batch that meets a period
built meanwhile is built one digest at a time instead). The unique (user, channel, frequency, period) row and the
conditional claim mean that two ticks, or two schedulers, never put an item in
two digests nor build a period twice. No items, no row.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import NamedTuple

from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Min

from notify.models import Delivery, Digest
from notify.models.status import Status
from notify.preferences.decide import DAILY, WEEKLY
from notify.scheduling.digests.periods import DuePeriod, latest_due

USERS_PER_QUERY = 500
BUILD_BATCH = 100  # digests created per transaction
CLAIM_BATCH = 5000  # items claimed per statement (two parameters each)


def frequency_of(mode: str) -> str:
    return WEEKLY if mode == WEEKLY else DAILY


def waiting_items(user_id: int, channel: str, frequency: str):
    items = Delivery.objects.filter(
        status=Status.DIGEST, digest__isnull=True, channel=channel, notification__user_id=user_id
    )
    if frequency == WEEKLY:
        return items.filter(skip_reason=WEEKLY)
    return items.exclude(skip_reason=WEEKLY)


def _chunks(values: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def build_due_digests(now: datetime) -> tuple[int, int]:
    """Create the due digest rows and claim their items; return (rows, items)."""
    built = claimed_items = 0
    # One query: every (user, channel, mode) with items waiting, since when, and
    # the user's digest schedule (a missing settings row means the defaults).
    settings = "notification__user__notify_settings__"
    groups = (
        Delivery.objects.filter(status=Status.DIGEST, digest__isnull=True)
        .values_list(
            "notification__user_id",
            "channel",
            "skip_reason",
            f"{settings}timezone",
            f"{settings}digest_hour",
            f"{settings}digest_weekday",
        )
        .annotate(since=Min("updated_at"))
        .order_by()
    )
    due_by_user: dict[int, dict[tuple[int, str, str], DuePeriod]] = defaultdict(dict)
    for user_id, channel, mode, tz, hour, weekday, since in groups:
        frequency = frequency_of(mode)
        period = latest_due(now, frequency, tz or "UTC", 8 if hour is None else hour, weekday or 0)
        # Items that arrived from the digest hour on wait for the next period.
        if since < period.due_at:
            due_by_user[user_id][(user_id, channel, frequency)] = period
    for chunk in _chunks(sorted(due_by_user), USERS_PER_QUERY):
        due = {key: period for user_id in chunk for key, period in due_by_user[user_id].items()}
        existing = set(
            Digest.objects.filter(
                user_id__in=chunk, period__in={p.period for p in due.values()}
            ).values_list("user_id", "channel", "frequency", "period")
        )
        todo = {key: period for key, period in due.items() if (*key, period.period) not in existing}
        planned = planned_digests(todo, waiting_items_of(chunk))
        # One commit per batch: commits, not statements, are what a digest run
        # spends its time on.
        for start in range(0, len(planned), BUILD_BATCH):
            rows, items = create_and_claim_many(planned[start : start + BUILD_BATCH], now)
            built += rows
            claimed_items += items
    return built, claimed_items


class PlannedDigest(NamedTuple):
    user_id: int
    channel: str
    period: DuePeriod
    item_ids: list[int]


def waiting_items_of(user_ids: list[int]) -> list[tuple[int, int, str, str, datetime]]:
    """Every item waiting for a digest of these users, in one query: (id, user,
    channel, mode, waiting since)."""
    return list(
        Delivery.objects.filter(
            status=Status.DIGEST, digest__isnull=True, notification__user_id__in=user_ids
        )
        .order_by("pk")
        .values_list("pk", "notification__user_id", "channel", "skip_reason", "updated_at")
    )


def planned_digests(
    todo: dict[tuple[int, str, str], DuePeriod],
    items: Iterable[tuple[int, int, str, str, datetime]],
) -> list[PlannedDigest]:
    """The digests to create and the items each claims: those that waited since
    before its period was due (pure)."""
    ids: dict[tuple[int, str, str], list[int]] = defaultdict(list)
    for pk, user_id, channel, mode, since in items:
        key = (user_id, channel, frequency_of(mode))
        period = todo.get(key)
        if period is not None and since < period.due_at:
            ids[key].append(pk)
    return [
        PlannedDigest(key[0], key[1], period, ids[key])
        for key, period in todo.items()
        if ids.get(key)
    ]


def create_and_claim_many(planned: list[PlannedDigest], now: datetime) -> tuple[int, int]:
    """Create a batch of digest rows (one insert) and claim their items (one
    ``UPDATE ... FROM`` per ``CLAIM_BATCH`` items), in one transaction; a row
    that claimed nothing is removed again (no items, no row). If another tick
    or scheduler built one of these periods first, each digest of the batch is
    built alone instead. Returns (rows, items)."""
    if not planned:
        return 0, 0
    if not connection.features.can_return_rows_from_bulk_insert:
        return _one_by_one(planned, now)
    try:
        with transaction.atomic():
            digests = Digest.objects.bulk_create(
                [
                    Digest(
                        user_id=p.user_id,
                        channel=p.channel,
                        frequency=p.period.frequency,
                        period=p.period.period,
                        due_at=p.period.due_at,
                        status=Status.PENDING,
                        item_count=len(p.item_ids),
                        created_at=now,
                    )
                    for p in planned
                ]
            )
            pairs = [
                (item_id, digest.pk)
                for digest, p in zip(digests, planned, strict=True)
                for item_id in p.item_ids
            ]
            for start in range(0, len(pairs), CLAIM_BATCH):
                _claim(pairs[start : start + CLAIM_BATCH])
            counts = dict(
                Delivery.objects.filter(digest_id__in=[d.pk for d in digests])
                .order_by()
                .values_list("digest_id")
                .annotate(n=Count("pk"))
            )
            empty = [d.pk for d in digests if not counts.get(d.pk)]
            if empty:
                Digest.objects.filter(pk__in=empty).delete()
            for digest in digests:  # some were taken or released meanwhile
                claimed = counts.get(digest.pk, 0)
                if claimed and claimed != digest.item_count:
                    Digest.objects.filter(pk=digest.pk).update(item_count=claimed)
    except IntegrityError:
        return _one_by_one(planned, now)
    return len(digests) - len(empty), sum(counts.values())


def _claim(pairs: list[tuple[int, int]]) -> None:
    """Items into their digests, only those still unclaimed and still held."""
    table = connection.ops.quote_name(Delivery._meta.db_table)
    values = ", ".join(["(%s, %s)"] * len(pairs))
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH claim(id, digest) AS (VALUES {values}) "
            f"UPDATE {table} SET digest_id = claim.digest FROM claim "
            f"WHERE {table}.id = claim.id AND {table}.status = %s "
            f"AND {table}.digest_id IS NULL",
            [value for pair in pairs for value in pair] + [Status.DIGEST],
        )


def _one_by_one(planned: list[PlannedDigest], now: datetime) -> tuple[int, int]:
    built = claimed_items = 0
    with transaction.atomic():
        for p in planned:
            claimed = create_and_claim(p.user_id, p.channel, p.period, now)
            if claimed:
                built += 1
                claimed_items += claimed
    return built, claimed_items


class _NothingToClaim(Exception):
    pass


def create_and_claim(user_id: int, channel: str, period: DuePeriod, now: datetime) -> int:
    """Create the period's row and claim the items waiting since before it was
    due, in one transaction; return the number claimed (0: nothing written)."""
    ids = list(
        waiting_items(user_id, channel, period.frequency)
        .filter(updated_at__lt=period.due_at)
        .values_list("pk", flat=True)
    )
    if not ids:
        return 0
    try:
        with transaction.atomic():
            digest = Digest.objects.create(
                user_id=user_id,
                channel=channel,
                frequency=period.frequency,
                period=period.period,
                due_at=period.due_at,
                status=Status.PENDING,
                item_count=len(ids),
                created_at=now,
            )
            # The claim: only items still unclaimed and still held are taken.
            claimed = Delivery.objects.filter(
                pk__in=ids, status=Status.DIGEST, digest__isnull=True
            ).update(digest=digest)
            if not claimed:
                raise _NothingToClaim
            if claimed != len(ids):  # some were taken or released meanwhile
                Digest.objects.filter(pk=digest.pk).update(item_count=claimed)
    except _NothingToClaim:
        return 0
    except IntegrityError:  # another tick or scheduler built this period first
        return 0
    return claimed
