"""Event rows written without the ORM's per-value machinery: the insert behind
``trigger()`` and ``POST /api/v1/events/batch``.

``Model.save()`` and ``bulk_create`` compile each value through its field's
hooks and, for a batch, build a model instance per row: for 1,000 events that
was 40 % of the request, and for one event a tenth of the API's time
(BENCHMARKS.md, "The events API under load"). Here a row is a tuple in
``COLUMNS`` order, prepared with the backend's own adapters (the same ones
the fields call: JSON, date-times), and the SQL for a given number of rows
is built once. Nothing else differs: same table, same constraints, so the
unique idempotency constraint still decides races.

Model signals do not fire for these rows (as with ``bulk_create``); ``trigger()``
falls back to ``save()`` when something listens to ``Event``'s.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from django.db import connections

from notify.models import Event

# The columns every insert names, in row order. The others keep their defaults.
COLUMNS = (
    "type",
    "payload",
    "actor_id",
    "recipients",
    "source",
    "object_ref",
    "idempotency_scope",
    "idempotency_key",
    "request_hash",
    "api_key_id",
    "received_at",
    "scheduled_for",
    "tags",
    "status",
    "attempts",
    "error",
)
ROWS_PER_STATEMENT = 1000
# PostgreSQL: each column as one array through unnest() (as Django's own
# bulk_create does there): a statement of 16 parameters however many rows,
# where a VALUES list of 1,000 rows had 16,000 for the driver to bind.
POSTGRES_ARRAYS = (
    "text[]",
    "text[]::jsonb[]",
    "bigint[]",
    "text[]::jsonb[]",
    "text[]",
    "text[]",
    "text[]",
    "text[]",
    "text[]",
    "bigint[]",
    "timestamptz[]",
    "timestamptz[]",
    "text[]::jsonb[]",
    "text[]",
    "integer[]",
    "text[]",
)
# SQLite has one writer at a time. Threads of one process that all ``BEGIN
# IMMEDIATE`` at once meet SQLite's busy handler, which sleeps 1, 2, 5, 10 …
# up to 100 ms between tries: the tail of the API's latency under load
# (BENCHMARKS.md). Queued on this lock instead, the next writer starts the
# moment the last one commits.
_SQLITE_WRITER = threading.Lock()


@contextlib.contextmanager
def one_writer_at_a_time(using: str) -> Iterator[None]:
    """Around a write transaction of its own: on SQLite, this process's
    threads take turns; elsewhere (or inside a caller's transaction, which
    holds or waits for the database's lock already) nothing."""
    connection = connections[using]
    if connection.vendor != "sqlite" or connection.in_atomic_block:
        yield
        return
    with _SQLITE_WRITER:
        yield


def json_value(value: Any, connection: Any) -> str:
    """``value`` as JSON text, as a JSONField writes it (``json.dumps``, no
    encoder): SQLite stores the text, PostgreSQL casts it to ``jsonb``."""
    return json.dumps(value)


def datetime_value(value: datetime | None, connection: Any) -> Any:
    return connection.ops.adapt_datetimefield_value(value)


def event_row(
    connection: Any,
    *,
    type: str,
    payload: dict[str, Any],
    recipients: Sequence[Any],
    request_hash: str,
    received_at: Any,
    constants: tuple[Any, ...],
    actor_id: int | None = None,
    source: str = Event.Source.PYTHON,
    object_ref: str = "",
    idempotency_scope: str = "",
    idempotency_key: str | None = None,
    api_key_id: int | None = None,
    scheduled_for: datetime | None = None,
) -> tuple[Any, ...]:
    """One row in ``COLUMNS`` order; ``received_at`` already adapted
    (``datetime_value``), ``constants`` from ``row_constants``."""
    return (
        type,
        json_value(payload, connection),
        actor_id,
        json_value(list(recipients), connection),
        source,
        object_ref,
        idempotency_scope,
        idempotency_key,
        request_hash,
        api_key_id,
        received_at,
        None if scheduled_for is None else datetime_value(scheduled_for, connection),
        *constants,
    )


def row_constants(connection: Any) -> tuple[Any, ...]:
    """tags, status, attempts, error of a new event (the fields' defaults)."""
    return (json_value([], connection), Event.State.RECEIVED, 0, "")


@functools.lru_cache(maxsize=64)
def insert_sql(vendor: str, table: str, columns: str, pk: str, rows: int) -> str:
    if vendor == "postgresql" and rows > 1:  # one row: VALUES, nothing to gain
        arrays = ", ".join(f"%s::{array}" for array in POSTGRES_ARRAYS)
        return f"INSERT INTO {table} ({columns}) SELECT * FROM unnest({arrays}) RETURNING {pk}"
    row = "(" + ", ".join(["%s"] * len(COLUMNS)) + ")"
    return f"INSERT INTO {table} ({columns}) VALUES {', '.join([row] * rows)} RETURNING {pk}"


_QUOTED: dict[str, tuple[str, str, str]] = {}


def quoted_names(connection: Any) -> tuple[str, str, str]:
    """The table, its ``COLUMNS`` and its key, quoted as ``connection``'s
    vendor quotes them (once per vendor: per insert they were a tenth of a
    single event's insert)."""
    names = _QUOTED.get(connection.vendor)
    if names is None:
        quote = connection.ops.quote_name
        columns = (quote(Event._meta.get_field(c.removesuffix("_id")).column) for c in COLUMNS)
        names = (quote(Event._meta.db_table), ", ".join(columns), quote(Event._meta.pk.column))
        _QUOTED[connection.vendor] = names
    return names


def insert_rows(rows: Sequence[tuple[Any, ...]], using: str) -> list[int]:
    """``INSERT … VALUES (…), (…) RETURNING id`` (PostgreSQL: ``INSERT … SELECT
    FROM unnest(…)``), ``ROWS_PER_STATEMENT`` rows a statement; the ids in row
    order (as ``bulk_create`` relies on, SQLite 3.35+ and PostgreSQL)."""
    if not rows:
        return []
    connection = connections[using]
    table, columns, pk = quoted_names(connection)
    ids: list[int] = []
    with connection.cursor() as cursor:
        for start in range(0, len(rows), ROWS_PER_STATEMENT):
            chunk = rows[start : start + ROWS_PER_STATEMENT]
            if connection.vendor == "postgresql" and len(chunk) > 1:
                params = [list(column) for column in zip(*chunk, strict=True)]
            else:
                params = [value for row in chunk for value in row]
            cursor.execute(insert_sql(connection.vendor, table, columns, pk, len(chunk)), params)
            ids.extend(row_id for (row_id,) in cursor.fetchall())
    return ids
