"""Digests, step 1: build the due ones (see ``notify.scheduling.digests.send``).

For each (user, channel, frequency) with items waiting, ``latest_due`` names
the most recent period whose digest hour has been reached. If that period has
no ``Digest`` row yet and some items were waiting before its digest hour, one
transaction creates the row and claims the items with a conditional
``UPDATE ... SET digest_id = <row> WHERE id IN (...) AND digest_id IS NULL AND
status = 'digest'``. The unique (user, channel, frequency, period) row and the
conditional claim mean that two ticks, or two schedulers, never put an item in
two digests nor build a period twice. No items, no row.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import Min

from notify.models import Delivery, Digest
from notify.models.status import Status
from notify.preferences.decide import DAILY, WEEKLY
from notify.scheduling.digests.periods import DuePeriod, latest_due

USERS_PER_QUERY = 500
BUILD_BATCH = 100  # digests created per transaction


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
        todo = [
            (user_id, channel, period)
            for (user_id, channel, frequency), period in due.items()
            if (user_id, channel, frequency, period.period) not in existing
        ]
        # One commit per batch (each digest in a savepoint of its own): commits,
        # not statements, are what a digest run spends its time on.
        for start in range(0, len(todo), BUILD_BATCH):
            with transaction.atomic():
                for user_id, channel, period in todo[start : start + BUILD_BATCH]:
                    claimed = create_and_claim(user_id, channel, period, now)
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
