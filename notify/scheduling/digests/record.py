"""Digests, step 3: record what happened, at each tick of the send loop.

``record_digests`` writes, in ONE transaction, the outcomes of the digests
that returned since the last tick (``notify.delivery.inflight``): each row
(guarded by the claim's token: a row another leader has claimed since is left
alone), its items closed as a single send with the same outcome would close
them, and every item's attempt in one insert
(``notify.outbox.rows.insert_attempt_values``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection, transaction

from notify.models import Delivery, Digest
from notify.models.status import Status
from notify.outbox.rows import Outcome, attempt_values, insert_attempt_values

HELD = "held"  # an outcome only: the row waits for the end of quiet hours
REFUND = object()  # ``attempts`` one lower, not below 0


@dataclass(slots=True)
class DigestStats:
    built: int = 0  # rows created (with their items claimed)
    items: int = 0  # items claimed into them
    sent: int = 0
    skipped: int = 0
    held: int = 0
    retried: int = 0
    failed: int = 0  # failed or dead


@dataclass(slots=True)
class DigestOutcome:
    """What happened to one claimed digest: ``result`` is the send step's outcome
    for its message (``None`` when nothing was sent: skipped or held)."""

    digest: Digest
    status: str  # SENT, SKIPPED, FAILED, DEAD, PENDING (retry) or HELD
    sent_items: list[Delivery] = field(default_factory=list)  # what the message carried
    dropped: list[tuple[Delivery, Outcome]] = field(default_factory=list)  # decided out
    result: Outcome | None = None
    note: str = ""  # why nothing was sent, for the row
    next_at: datetime | None = None  # end of quiet hours (HELD)


STAT = {Status.SENT: "sent", Status.DELIVERED: "sent", Status.SKIPPED: "skipped"}
STAT |= {HELD: "held", Status.PENDING: "retried"}


def record_digests(
    outcomes: Iterable[DigestOutcome],
    token: datetime,
    due_before: dict[int, datetime],
    stats: DigestStats,
) -> list[int]:
    """Write the outcomes on their rows and items while the claim ``token`` is
    ours, in one transaction; return the ids of the digests written.

    The digest-only bookkeeping: the row, and closing its items; each item's
    attempt is the one a single send with the same outcome records. A fixed
    number of statements a tick, however many digests it records: the rows
    still ours are locked first, then written with one ``executemany`` per
    statement shape (on PostgreSQL psycopg pipelines it: one round trip); a
    tick of one digest (the defaults) needs no lock, its row's guarded
    ``UPDATE`` says whether the claim is ours."""
    outcomes = list(outcomes)
    if not outcomes:
        return []
    rows: dict[str, list[list[Any]]] = defaultdict(list)
    items: dict[str, list[list[Any]]] = defaultdict(list)
    attempts: list[list[Any]] = []
    with transaction.atomic(), connection.cursor() as cursor:
        updates = [
            _row_update(o.digest.pk, token, row_fields(o, due_before[o.digest.pk]))
            for o in outcomes
        ]
        if len(outcomes) == 1:  # a tick at the defaults: its guarded UPDATE says if ours
            cursor.execute(*updates[0])
            written = outcomes if cursor.rowcount == 1 else []
        else:
            ours = _lock_ours(cursor, [o.digest.pk for o in outcomes], token)
            written = [o for o in outcomes if o.digest.pk in ours]
            for outcome, (sql, params) in zip(outcomes, updates, strict=True):
                if outcome.digest.pk in ours:
                    rows[sql].append(params)
        for outcome in written:
            digest = outcome.digest
            for item, dropped in outcome.dropped:
                _close_items(items, digest, [item], dropped)
                attempts.append(attempt_values(dropped.attempt_row(digest=digest.pk)))
            result = outcome.result
            if result is not None and outcome.sent_items:
                _close_items(items, digest, outcome.sent_items, result)
                attempts += _item_attempts(result, outcome.sent_items, digest.pk)
        for statements in (rows, items):
            for sql, many in statements.items():
                cursor.executemany(sql, many)
        if attempts:
            insert_attempt_values(cursor, attempts)
    for outcome in written:
        name = STAT.get(outcome.status, "failed")
        setattr(stats, name, getattr(stats, name) + 1)
    return [o.digest.pk for o in written]


def _lock_ours(cursor, ids: list[int], token: datetime) -> set[int]:
    """Which of ``ids`` are still claimed with ``token``, locked until the
    commit (``FOR UPDATE`` on PostgreSQL; SQLite's write transaction holds the
    whole file): a row another leader claimed since is left alone."""
    ops = connection.ops
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    cursor.execute(
        f"SELECT id FROM {ops.quote_name(Digest._meta.db_table)} "
        f"WHERE id IN ({', '.join(['%s'] * len(ids))}) AND status = %s AND due_at = %s{lock}",
        [*ids, Status.SENDING, ops.adapt_datetimefield_value(token)],
    )
    return {row[0] for row in cursor.fetchall()}


def row_fields(outcome: DigestOutcome, due_before: datetime) -> dict[str, Any]:
    """The digest row's columns for ``outcome`` (``due_before``: its due time
    before the claim, kept on a row that is done)."""
    result = outcome.result
    error = outcome.note
    if result is not None:
        error = f"[{result.error_code}] {result.error_message}" if result.error_code else ""
        error = error or result.error_message
    fields: dict[str, Any] = {"error_message": error[:2000]}
    provider = result.provider[:50] if result is not None else ""
    if outcome.status == HELD:
        # The claim counted an attempt that was not made: give it back.
        fields.update(status=Status.PENDING, due_at=outcome.next_at, attempts=REFUND)
    elif outcome.status == Status.PENDING:
        assert result is not None
        fields.update(status=Status.PENDING, due_at=result.next_attempt_at, provider=provider)
    else:
        fields.update(status=outcome.status, due_at=due_before, provider=provider)
    if result is not None and result.status == Status.SENT:
        fields.update(
            provider_message_id=result.message_id[:255],
            sent=result.sent or {},
            sent_at=result.finished_at,
            item_count=len(outcome.sent_items),
        )
    elif result is not None and result.sent is not None:
        fields["sent"] = result.sent
    return fields


def _row_update(digest_id: int, token: datetime, fields: dict[str, Any]) -> tuple[str, list]:
    """The prepared ``UPDATE`` that writes ``fields`` on the digest row, still
    guarded by the claim, and its parameters (rows of one shape share the SQL)."""
    ops = connection.ops
    sets, params = [], []
    for name, value in fields.items():
        column = ops.quote_name(Digest._meta.get_field(name).column)
        if value is REFUND:
            sets.append(f"{column} = CASE WHEN {column} > 0 THEN {column} - 1 ELSE 0 END")
            continue
        sets.append(f"{column} = %s")
        params.append(Digest._meta.get_field(name).get_db_prep_save(value, connection))
    sql = (
        f"UPDATE {ops.quote_name(Digest._meta.db_table)} SET {', '.join(sets)} "
        "WHERE id = %s AND status = %s AND due_at = %s"
    )
    return sql, [*params, digest_id, Status.SENDING, ops.adapt_datetimefield_value(token)]


def _item_attempts(result: Outcome, items: list[Delivery], digest_id: int) -> list[list[Any]]:
    """Each item's attempt for the digest's outcome, as ``Outcome.attempt_row``
    writes it: the values are prepared once (the message sent, as JSON, is the
    same for every item) and only the item's id and attempt number differ."""
    shared = attempt_values(result.attempt_row(0, 0, digest=digest_id))
    rows = []
    for item in items:
        row = list(shared)
        row[0], row[1] = item.pk, item.attempts + 1  # delivery_id, number
        rows.append(row)
    return rows


def _close_items(
    statements: dict[str, list[list[Any]]],
    digest: Digest,
    items: Iterable[Delivery],
    outcome: Outcome,
) -> None:
    """Add to ``statements`` the ``UPDATE`` of each item still waiting in
    ``digest`` with ``outcome``, as ``record_outcomes`` writes a single
    delivery; an item stays in the digest (status ``digest``) while the digest
    is retried, and keeps its ``skip_reason`` (the frequency it waited for)
    unless decided out. One prepared statement per shape, run with
    ``executemany`` (the ORM's compiler cost more than the statement)."""
    ops = connection.ops
    retry = outcome.status == Status.PENDING
    sent = outcome.status == Status.SENT
    finished = ops.adapt_datetimefield_value(outcome.finished_at)
    next_at = ops.adapt_datetimefield_value(outcome.next_attempt_at) if retry else None
    skip = ", skip_reason = %s" if outcome.skip_reason else ""
    table = ops.quote_name(Delivery._meta.db_table)
    sql = (
        f"UPDATE {table} SET status = %s{skip}, provider = %s, provider_message_id = %s, "
        "error_code = %s, error_message = %s, attempts = attempts + 1, "
        "next_attempt_at = %s, sent_at = %s, updated_at = %s "
        "WHERE id = %s AND digest_id = %s AND status = %s"
    )
    values = [
        Status.DIGEST if retry else outcome.status,
        *([outcome.skip_reason[:50]] if skip else []),
        outcome.provider[:50],
        outcome.message_id[:255],
        outcome.error_code[:50],
        outcome.error_message[:2000],
        next_at or finished,
        finished if sent else None,
        finished,
    ]
    for item in items:
        statements[sql].append([*values, item.pk, digest.pk, Status.DIGEST])
