"""Many events in: the storage step of ``POST /api/v1/events/batch``.

One transaction stores a whole batch: the idempotency keys are looked up in
one query, the new events go in with one multi-row insert of prepared rows
(``notify.intake.rows``: no model instance per event), and the results
are returned only after the commit, so every item reported *accepted* is
stored. If a concurrent request inserts one of the keys between the lookup
and the insert, the unique constraint refuses the insert, the transaction
rolls back whole (nothing of it was reported) and is run again, when the
lookup finds that row: the item becomes a *duplicate* (or *reused*).

The fan-out of the new events is handed off once, after the commit, for the
whole batch (one wake-up of the worker pool, or one publish per event to
Celery, as ``trigger()`` does per event).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import IntegrityError, connections, router, transaction
from django.utils import timezone

from notify import conf
from notify.intake import rows
from notify.models import Event
from notify.runtime.handoff import BrokerUnavailable, get_dispatcher

log = logging.getLogger("notify.intake.batch")

ACCEPTED = "accepted"
DUPLICATE = "duplicate"  # the key was used before for the same request
REUSED = "reused"  # the key was used before for a different request
# Transactions tried before a batch that keeps colliding with concurrent
# requests fails (each retry finds the colliding rows, so two are enough).
ATTEMPTS = 3


@dataclass(slots=True)  # not frozen: a frozen __init__ was 14 % of a 1,000-event batch
class NewEvent:
    """One validated item of a batch, ready to store (not changed once built)."""

    index: int
    type: str
    payload: dict[str, Any]
    fingerprint: str
    actor_id: int | None = None
    recipients: tuple[Any, ...] = ()
    scheduled_for: datetime | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class Stored:
    """What became of one item: its status and the event it names."""

    index: int
    status: str
    event_id: int


def store_events(
    items: Sequence[NewEvent], *, scope: str, api_key: Any = None, source: str = Event.Source.API
) -> list[Stored]:
    """Store ``items`` in one transaction (see the module); results in item order."""
    if not items:
        return []
    using = router.db_for_write(Event)
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with rows.one_writer_at_a_time(using), transaction.atomic(using=using):
                results = _store(items, scope, api_key, source)
        except IntegrityError:
            if attempt == ATTEMPTS:
                raise
            log.info("batch collided with a concurrent request; trying again (%d)", attempt)
            continue
        new_ids = [r.event_id for r in results if r.status == ACCEPTED]
        if new_ids:
            transaction.on_commit(functools.partial(events_committed, new_ids), using=using)
        return results
    raise AssertionError("unreachable")


def _store(items: Sequence[NewEvent], scope: str, api_key: Any, source: str) -> list[Stored]:
    keys = [item.idempotency_key for item in items if item.idempotency_key is not None]
    existing = known_keys(scope, keys) if keys else {}
    using = router.db_for_write(Event)
    connection = connections[using]
    # One timestamp for the batch: it is stored in one transaction.
    received_at = rows.datetime_value(timezone.now(), connection)
    constants = rows.row_constants(connection)
    api_key_id = api_key.pk if api_key is not None else None
    results: dict[int, Stored] = {}
    new: list[NewEvent] = []
    new_rows: list[tuple[Any, ...]] = []
    for item in items:
        found = existing.get(item.idempotency_key) if item.idempotency_key else None
        if found is not None:
            pk, request_hash = found
            status = DUPLICATE if not request_hash or request_hash == item.fingerprint else REUSED
            results[item.index] = Stored(item.index, status, pk)
            continue
        new.append(item)
        new_rows.append(
            rows.event_row(
                connection,
                type=item.type,
                payload=item.payload,
                recipients=item.recipients,
                request_hash=item.fingerprint,
                received_at=received_at,
                constants=constants,
                actor_id=item.actor_id,
                source=source,
                idempotency_scope=scope,
                idempotency_key=item.idempotency_key,
                api_key_id=api_key_id,
                scheduled_for=item.scheduled_for,
            )
        )
    ids = rows.insert_rows(new_rows, using)
    for item, pk in zip(new, ids, strict=True):
        results[item.index] = Stored(item.index, ACCEPTED, pk)
    return [results[item.index] for item in items]


def known_keys(scope: str, keys: list[str]) -> dict[str, tuple[int, str]]:
    """The events already stored under ``keys``: key -> (id, request hash).

    One query for the batch, in SQL written here: the ORM compiled each of the
    1,000 values of the ``IN`` list (8 % of a batch)."""
    connection = connections[router.db_for_write(Event)]  # the transaction storing the batch
    quote = connection.ops.quote_name
    found: dict[str, tuple[int, str]] = {}
    with connection.cursor() as cursor:
        for start in range(0, len(keys), rows.ROWS_PER_STATEMENT):
            chunk = keys[start : start + rows.ROWS_PER_STATEMENT]
            cursor.execute(
                f"SELECT {quote('idempotency_key')}, {quote('id')}, {quote('request_hash')} "
                f"FROM {quote(Event._meta.db_table)} "
                f"WHERE {quote('idempotency_scope')} = %s "
                f"AND {quote('idempotency_key')} IN ({', '.join(['%s'] * len(chunk))})",
                [scope, *chunk],
            )
            found.update((key, (pk, request_hash)) for key, pk, request_hash in cursor.fetchall())
    return found


def events_committed(event_ids: list[int]) -> None:
    """After commit: one hand-off for the batch. Never raises: the events are
    stored, and a lost hand-off is relayed (``notify.runtime.relay``)."""
    dispatcher = get_dispatcher()
    if conf.get("EAGER"):
        dispatcher.event_committed(event_ids[0])  # EAGER: runs everything due
        return
    try:
        dispatcher.hand_off_events(event_ids)
    except BrokerUnavailable:
        pass  # logged by the dispatcher; the relay hands them off
