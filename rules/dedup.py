"""Deduplication: the same key within the window notifies nobody again.

A rule's ``dedup_key`` is a Jinja2 expression over payload, event and actor
(compiled in the sandbox, like a condition), e.g. ``payload.order_id`` or
``[payload.order_id, payload.status]``. The first event with a key opens a
window of ``dedup_window`` from its time (``event.received_at``); another
event of the same rule with the same key before the window ends is a
duplicate, and the rule writes nothing for it (the event's fan-out records
"deduplicated" for the rule). At the window's end exactly, the next event
opens a new window. An empty key (``None``, ``""``) never deduplicates; a key
that cannot be evaluated does not either (and the fan-out says why).

``claim`` is the database edge: one upsert on ``DedupRecord`` decides
atomically, with any number of workers, which event owns a key; the same
event fanned out again (a retry) still owns it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction

DEDUPLICATED = "deduplicated"


@dataclass(frozen=True, slots=True)
class Claim:
    first: bool  # this event owns the key: notify
    event_id: int  # the owner
    first_seen_at: datetime


def key_digest(value: Any) -> tuple[str, str] | None:
    """(SHA-256 hex, readable text) of a key value; ``None`` for no key."""
    if value is None or value == "" or value == [] or value == {}:
        return None
    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest(), text[:200]


def window_end(first_seen_at: datetime, window: timedelta) -> datetime:
    """The first instant that is no longer a duplicate of ``first_seen_at``."""
    return first_seen_at + window


def claim(
    rule_id: int, key: tuple[str, str], event_id: int, at: datetime, window: timedelta
) -> Claim:
    """Take the key for ``event_id`` unless another event holds it until after ``at``."""
    from .models import DedupRecord

    ops = connection.ops
    table = ops.quote_name(DedupRecord._meta.db_table)
    digest, text = key
    stamp = ops.adapt_datetimefield_value(at)
    expires = ops.adapt_datetimefield_value(window_end(at, window))
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (rule_id, key, key_text, event_id, first_seen_at, expires_at) "
            "VALUES (%s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (rule_id, key) DO UPDATE SET event_id = EXCLUDED.event_id, "
            "key_text = EXCLUDED.key_text, first_seen_at = EXCLUDED.first_seen_at, "
            "expires_at = EXCLUDED.expires_at "
            f"WHERE {table}.expires_at <= EXCLUDED.first_seen_at",
            [int(rule_id), digest, text, int(event_id), stamp, expires],
        )
    row = (
        DedupRecord.objects.filter(rule_id=rule_id, key=digest)
        .values_list("event_id", "first_seen_at")
        .first()
    )
    if row is None:  # the rule was deleted meanwhile
        return Claim(True, event_id, at)
    return Claim(row[0] == event_id, row[0], row[1])


def holder(rule_id: int, key: tuple[str, str], at: datetime) -> Claim | None:
    """Read-only (previews): the event holding the key at ``at``, if any."""
    from .models import DedupRecord

    row = (
        DedupRecord.objects.filter(rule_id=rule_id, key=key[0], expires_at__gt=at)
        .values_list("event_id", "first_seen_at")
        .first()
    )
    return Claim(False, row[0], row[1]) if row else None


def prune(now: datetime) -> int:
    """Delete the records whose window has ended (a retention job may call it)."""
    from .models import DedupRecord

    return DedupRecord.objects.filter(expires_at__lte=now).delete()[0]
