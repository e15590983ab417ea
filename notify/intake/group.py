"""Group commit: the events that concurrent requests store, inserted and
committed together.

Each ``trigger()`` outside a transaction was one transaction of its own:
``BEGIN``, one ``INSERT``, ``COMMIT``, and Django's bookkeeping around them,
about a fifth of an accepted event's CPU on the events API (BENCHMARKS.md).
Here a thread that has a row to store puts it in the queue and takes the
writers' lock; whoever holds it (the leader) takes every row queued so far,
inserts them in one statement, commits once, and hands each row its id. A
thread whose row a leader committed meanwhile finds its answer when it gets
the lock and returns at once. Nothing is answered before its commit: a caller
returns only with the id of a committed row, or with its own error.

When the grouped insert or its commit fails (a row refused by a constraint: an
idempotency key already used, a duplicate within the group, an actor deleted
meanwhile), nothing of it is stored and each row of the group is tried again
alone, in a transaction of its own, so that each caller gets exactly the
outcome it would have had alone.

On SQLite the writers' lock is the one that already orders this process's
write transactions (``rows.one_writer_at_a_time``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from django.db import connections, transaction

from notify.intake import rows

_LOCKS: dict[str, threading.Lock] = {}
_QUEUES: dict[str, list[Slot]] = {}
_SETUP = threading.Lock()


class Slot:
    """One caller's row and, once a leader is done with it, its id or error."""

    __slots__ = ("done", "error", "row", "row_id")

    def __init__(self, row: tuple[Any, ...]) -> None:
        self.row = row
        self.done = False
        self.row_id: int | None = None
        self.error: BaseException | None = None

    def result(self) -> int:
        if self.error is not None:
            raise self.error
        assert self.row_id is not None
        return self.row_id


def writer_lock(using: str) -> threading.Lock:
    if connections[using].vendor == "sqlite":
        return rows._SQLITE_WRITER
    lock = _LOCKS.get(using)
    if lock is None:
        with _SETUP:
            lock = _LOCKS.setdefault(using, threading.Lock())
    return lock


def insert_committed(row: tuple[Any, ...], using: str) -> int:
    """Store ``row`` (``rows.COLUMNS`` order) and commit it, grouped with the
    rows other threads are storing now; its id. Call outside a transaction."""
    slot = Slot(row)
    queue = _QUEUES.setdefault(using, [])
    queue.append(slot)  # list.append is atomic
    with writer_lock(using):
        if not slot.done:
            batch = queue[:]
            del queue[: len(batch)]
            try:
                commit_group(batch, using)
            finally:  # interrupted (not an Exception): no caller waits forever
                for other in batch:
                    if not other.done:
                        finish(other, None, RuntimeError("the group commit was interrupted"))
    return slot.result()


def commit_group(batch: Sequence[Slot], using: str) -> None:
    """Insert and commit ``batch`` in one transaction; when that fails, each
    row alone. Every slot ends ``done``, with its id or its error."""
    try:
        with transaction.atomic(using=using):
            ids = rows.insert_rows([slot.row for slot in batch], using)
    except Exception as exc:
        if len(batch) == 1:
            finish(batch[0], None, exc)
            return
        for slot in batch:
            try:
                with transaction.atomic(using=using):
                    (row_id,) = rows.insert_rows([slot.row], using)
            except Exception as alone:
                finish(slot, None, alone)
            else:
                finish(slot, row_id, None)
        return
    for slot, row_id in zip(batch, ids, strict=True):
        finish(slot, row_id, None)


def finish(slot: Slot, row_id: int | None, error: BaseException | None) -> None:
    slot.row_id = row_id
    slot.error = error
    slot.done = True
