"""A fan-out chunk written with binary ``COPY`` on PostgreSQL.

``COPY`` skips most of the per-row work of an ``INSERT`` (planning, the
executor's projection, a conflict check per row), but has no ``ON CONFLICT``.
So it writes only chunks that find none of their rows: a fresh fan-out, by far
the common case. A retried chunk, or a concurrent fan-out of the same event,
meets the unique index on (event, rule, user), which raises; the caller rolls
its savepoint back and writes the chunk with the ``INSERT ... ON CONFLICT``
statement (``notify.outbox.rows._write_chunk_postgres``), so nothing is ever
written twice.

The rows are encoded here, in PostgreSQL's binary copy format, rather than
passed through psycopg's ``write_row`` (text ``COPY`` was slower than the
``INSERT``: 1.58 s against 1.18 s at 20,000 recipients): a chunk's recipients
share a few delivery plans (``delivery_shapes``), so every row is a packed
id followed by bytes encoded once per chunk.

Notification ids are taken from the table's sequence up front (one query),
because the delivery rows name them; delivery ids are the column's default.
The event, rule and category are locked ``FOR KEY SHARE`` first, as the
``INSERT`` statement does (``parents_sql``).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection

from notify.models import Delivery, Notification

# Chunks smaller than this take the INSERT: the sequence query and two COPY
# round trips cost more than they save on a few rows.
COPY_MIN_RECIPIENTS = 100

SIGNATURE = b"PGCOPY\n\xff\r\n\0" + b"\0" * 8  # signature, flags, header extension
TRAILER = b"\xff\xff"
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)

NOTIFICATION_FIELDS = ("id", "event", "rule", "user", "category", "created_at", "group_key")
DELIVERY_FIELDS = (
    "notification",
    "channel",
    "status",
    "skip_reason",
    "hold_reason",
    "next_attempt_at",
    "created_at",
    "updated_at",
)
NOTIFICATION_IDS = ("id", "event", "rule", "user", "category")
INTEGERS = {"integer": "i", "bigint": "q"}


def timestamp(value: datetime) -> bytes:
    """A ``timestamp with time zone`` field: microseconds since 2000-01-01 UTC."""
    return struct.pack("!iq", 8, (value - PG_EPOCH) // MICROSECOND)


def text(value: str) -> bytes:
    data = value.encode()
    return struct.pack("!i", len(data)) + data


@functools.cache
def integer_codes(model: Any, names: tuple[str, ...]) -> str:
    """The struct codes of these integer columns (``i`` or ``q``), from their
    database types: binary ``COPY`` takes exactly the column's width. Empty
    if one is not an integer (a user model keyed otherwise): no ``COPY``."""
    types = [model._meta.get_field(name).db_type(connection).split()[0] for name in names]
    return "".join(INTEGERS[t] for t in types) if all(t in INTEGERS for t in types) else ""


def supported() -> bool:
    """Whether every id column ``copy_chunk`` encodes is an integer it knows."""
    return bool(
        integer_codes(Notification, NOTIFICATION_IDS) and integer_codes(Delivery, ("notification",))
    )


def copy_chunk(
    cursor: Any, parents: str, args: tuple, planned: Sequence, shapes: Sequence, shape_of: list[int]
) -> int | None:
    """Write the chunk with ``COPY``; return the notifications written (0: a
    parent is gone, nothing written). Raises ``psycopg.errors.UniqueViolation``
    when a row of the chunk exists already: the caller's savepoint undoes it."""
    event_id, rule_id, category_id, now, group_key = args
    cursor.execute(parents, {"e": event_id, "r": rule_id, "c": category_id})
    if cursor.fetchone() is None:
        return 0
    q = connection.ops.quote_name
    notifications, deliveries = Notification._meta.db_table, Delivery._meta.db_table
    cursor.execute(
        "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s) ORDER BY 1",
        [notifications, len(planned)],
    )
    ids = [row[0] for row in cursor.fetchall()]
    stamp = timestamp(now)
    # A notification row: field count, then (length, value) per column.
    codes = integer_codes(Notification, NOTIFICATION_IDS)
    row = struct.Struct("!h" + "".join(f"i{code}" for code in codes))
    widths = [struct.calcsize("!" + code) for code in codes]
    tail = stamp + text(group_key)
    e, r, c = event_id, rule_id, category_id
    pack = row.pack
    body = [
        pack(7, widths[0], i, widths[1], e, widths[2], r, widths[3], p.user_id, widths[4], c) + tail
        for i, p in zip(ids, planned, strict=True)
    ]
    _copy(cursor, q(notifications), NOTIFICATION_FIELDS, Notification, body)
    # A delivery row: its notification's id, then what its shape encodes once.
    tails = [
        [
            text(d.channel)
            + text(d.status)
            + text(d.skip_reason)
            + text(d.hold_reason)
            + (stamp if d.due_at is None else timestamp(d.due_at))
            + stamp
            + stamp
            for d in shape
        ]
        for shape in shapes
    ]
    head = struct.Struct("!hi" + integer_codes(Delivery, ("notification",))).pack
    size = struct.calcsize("!" + integer_codes(Delivery, ("notification",)))
    body = [head(8, size, i) + t for i, k in zip(ids, shape_of, strict=True) for t in tails[k]]
    if body:
        _copy(cursor, q(deliveries), DELIVERY_FIELDS, Delivery, body)
    return len(ids)


def _copy(cursor: Any, table: str, fields: tuple[str, ...], model: Any, rows: list[bytes]) -> None:
    columns = ", ".join(connection.ops.quote_name(model._meta.get_field(f).column) for f in fields)
    with cursor.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(b"".join([SIGNATURE, *rows, TRAILER]))
