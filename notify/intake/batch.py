"""Many events in: the storage step of ``POST /api/v1/events/batch``.

One transaction stores a whole batch: the idempotency keys are looked up in
one query, the new events go in with one multi-row insert, and the results
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

from django.db import IntegrityError, connections, models, router, transaction

from notify import conf
from notify.models import Event
from notify.runtime.handoff import BrokerUnavailable, get_dispatcher

log = logging.getLogger("notify.intake.batch")

ACCEPTED = "accepted"
DUPLICATE = "duplicate"  # the key was used before for the same request
REUSED = "reused"  # the key was used before for a different request
# Transactions tried before a batch that keeps colliding with concurrent
# requests fails (each retry finds the colliding rows, so two are enough).
ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class NewEvent:
    """One validated item of a batch, ready to store."""

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
            with transaction.atomic(using=using):
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
    results: dict[int, Stored] = {}
    new: list[tuple[NewEvent, Event]] = []
    for item in items:
        found = existing.get(item.idempotency_key) if item.idempotency_key else None
        if found is not None:
            pk, request_hash = found
            status = DUPLICATE if not request_hash or request_hash == item.fingerprint else REUSED
            results[item.index] = Stored(item.index, status, pk)
            continue
        new.append((item, build_event(item, scope, api_key, source)))
    ids = insert_returning_ids([event for _item, event in new])
    for (item, _event), pk in zip(new, ids, strict=True):
        results[item.index] = Stored(item.index, ACCEPTED, pk)
    return [results[item.index] for item in items]


def insert_returning_ids(events: list[Event]) -> list[int]:
    """One ``INSERT … VALUES (…), (…) RETURNING id`` per 1,000 rows; the ids in
    row order (as ``bulk_create`` relies on, SQLite 3.35+ and PostgreSQL).

    Not ``bulk_create``: it compiles a placeholder per value through the
    field's SQL hooks, 80% of a 1,000-event batch's time (BENCHMARKS.md);
    here each value is prepared by its field and the SQL is built once."""
    if not events:
        return []
    connection = connections[router.db_for_write(Event)]
    fields = [f for f in Event._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    table = connection.ops.quote_name(Event._meta.db_table)
    pk = connection.ops.quote_name(Event._meta.pk.column)
    # Only fields whose database form differs from the Python value need their
    # hook (JSON, dates); the rest go as they are.
    hooks = [(f.attname, isinstance(f, models.JSONField | models.DateTimeField), f) for f in fields]
    ids: list[int] = []
    with connection.cursor() as cursor:
        for start in range(0, len(events), 1000):
            chunk = events[start : start + 1000]
            params: list[Any] = []
            for event in chunk:
                for attname, needs_hook, field in hooks:
                    value = getattr(event, attname)
                    params.append(
                        field.get_db_prep_save(value, connection) if needs_hook else value
                    )
            row = "(" + ", ".join(["%s"] * len(fields)) + ")"
            cursor.execute(
                f"INSERT INTO {table} ({columns}) VALUES {', '.join([row] * len(chunk))} "
                f"RETURNING {pk}",
                params,
            )
            ids.extend(row_id for (row_id,) in cursor.fetchall())
    return ids


def known_keys(scope: str, keys: list[str]) -> dict[str, tuple[int, str]]:
    """The events already stored under ``keys``: key -> (id, request hash)."""
    rows = Event.objects.filter(idempotency_scope=scope, idempotency_key__in=keys)
    return {
        key: (pk, request_hash)
        for key, pk, request_hash in rows.values_list("idempotency_key", "pk", "request_hash")
    }


def build_event(item: NewEvent, scope: str, api_key: Any, source: str) -> Event:
    return Event(
        type=item.type,
        payload=item.payload,
        actor_id=item.actor_id,
        recipients=list(item.recipients),
        source=source,
        idempotency_scope=scope,
        idempotency_key=item.idempotency_key,
        request_hash=item.fingerprint,
        api_key=api_key,
        scheduled_for=item.scheduled_for,
    )


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
