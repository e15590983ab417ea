"""Django's SQLite backend, with the writers of one process queued on a lock.

**One writer at a time, queued, not polled.** SQLite lets one connection
write at a time; the others' ``BEGIN IMMEDIATE`` meets its busy handler,
which sleeps 1, 2, 5, 10 ... up to 100 ms between tries. Threads of one
process (the worker pool's threads, the web threads beside them in
``notify run``) that wrote at once therefore waited up to 100 ms for a lock
freed a fraction of a millisecond later: a second worker thread sent fewer
emails than one, and a web request that met a worker's commit paid the
sleep in its latency. Here a write transaction first takes a lock shared by
every connection of the process to the same file, so the next writer starts
the moment the last one commits. Other processes still meet the busy
handler; the lock is given up after the connection's own busy timeout, and
SQLite's handler then decides as before, so no wait can become a deadlock.
Re-entrant: a thread that opens a second transaction on another connection
to the same file waits on SQLite, as it did.

**Single write statements too.** A write outside a transaction (an
autocommit ``save()`` or ``update()``, a worker's heartbeat) takes SQLite's
lock as much as a transaction does, so ``QueuedWriterCursor`` takes the
same lock around it: an INSERT, UPDATE, DELETE or REPLACE (a quick look at
the statement's first word), and with ``RETURNING`` until its rows are read,
since sqlite3 steps such a statement lazily and its write commits only at
the last row.

**Its folder.** The embedded default keeps its database in ``var/``;
creating that folder here, at the first connection, keeps the settings
module free of side effects on disk (``import notify.project.settings``
creates nothing). A ``DATABASE_URL``'s folder must exist:
``NOTIFY_CREATE_FOLDER`` in the settings dict says which.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.db.backends.sqlite3 import base

_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def writer_lock(database: str) -> threading.RLock:
    """The lock the connections of this process to ``database`` write under."""
    lock = _LOCKS.get(database)
    if lock is not None:
        return lock
    with _LOCKS_GUARD:
        lock = _LOCKS.get(database)
        if lock is None:
            lock = _LOCKS[database] = threading.RLock()
        return lock


class DatabaseWrapper(base.DatabaseWrapper):
    _writer: threading.RLock | None = None

    def get_new_connection(self, conn_params):
        database = str(conn_params.get("database", ""))
        if (
            self.settings_dict.get("NOTIFY_CREATE_FOLDER")
            and database
            and not self.is_in_memory_db()
            and not database.startswith("file:")
        ):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        return super().get_new_connection(conn_params)

    def create_cursor(self, name=None):
        return self.connection.cursor(factory=lambda raw: QueuedWriterCursor(raw, self))

    def acquire_writer(self) -> threading.RLock | None:
        """This process's writer lock for this file, taken; ``None`` for an
        in-memory database, or when the connection's busy timeout passed
        first (SQLite's busy handler decides then, as without the lock)."""
        if self.is_in_memory_db():
            return None
        lock = writer_lock(str(self.settings_dict["NAME"]))
        timeout = float(self.settings_dict.get("OPTIONS", {}).get("timeout", 5))
        return lock if lock.acquire(timeout=timeout) else None

    def _start_transaction_under_autocommit(self):
        if self._writer is None:
            self._writer = self.acquire_writer()
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._release_writer()
            raise

    def _commit(self):
        try:
            return super()._commit()
        finally:
            self._release_writer()

    def _rollback(self):
        try:
            return super()._rollback()
        finally:
            self._release_writer()

    def _close(self):
        try:
            return super()._close()
        finally:
            self._release_writer()

    def _release_writer(self) -> None:
        lock, self._writer = self._writer, None
        if lock is not None:
            try:
                lock.release()
            except RuntimeError:  # not this thread's: Django binds a connection to one
                pass


# The first word of a statement that writes; after a ``WITH``, the word of its body.
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")
_WRITE_WORD = re.compile(r"\b(?:INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)


def is_write(sql: str) -> bool:
    """Whether ``sql`` writes: by its first word, cheaply (every statement asks)."""
    head = sql.lstrip()[:7].upper()
    if head.startswith(_WRITES):
        return True
    return head.startswith("WITH") and _WRITE_WORD.search(sql) is not None


class QueuedWriterCursor(base.SQLiteCursorWrapper):
    """Django's cursor; a write statement in autocommit (outside any
    transaction) runs under the process's writer lock, like a transaction.

    With ``RETURNING`` the rows are read while the lock is held (sqlite3
    steps such a statement as its rows are fetched, and the write commits at
    the last one) and handed out from here afterwards."""

    def __init__(self, connection: Any, wrapper: DatabaseWrapper) -> None:
        super().__init__(connection)
        self.wrapper = wrapper
        self.returned: Iterator[Any] | None = None

    def alone(self, sql: str) -> bool:
        wrapper = self.wrapper
        return wrapper.autocommit and not wrapper.in_atomic_block and is_write(sql)

    def execute(self, query, params=None):
        self.returned = None
        if not self.alone(query):
            return super().execute(query, params)
        lock = self.wrapper.acquire_writer()
        try:
            super().execute(query, params)
            if self.description is not None:  # RETURNING: step it to the end
                self.returned = iter(super().fetchall())
        finally:
            if lock is not None:
                lock.release()
        return self

    def executemany(self, query, param_list):
        self.returned = None
        if not self.alone(query):
            return super().executemany(query, param_list)
        lock = self.wrapper.acquire_writer()
        try:
            return super().executemany(query, param_list)
        finally:
            if lock is not None:
                lock.release()

    def fetchone(self):
        if self.returned is None:
            return super().fetchone()
        return next(self.returned, None)

    def fetchmany(self, size=None):
        if self.returned is None:
            return super().fetchmany(self.arraysize if size is None else size)
        return list(itertools.islice(self.returned, self.arraysize if size is None else size))

    def fetchall(self):
        if self.returned is None:
            return super().fetchall()
        return list(self.returned)

    def __iter__(self):
        return self

    def __next__(self):
        if self.returned is None:
            return super().__next__()
        return next(self.returned)
