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

**Its folder.** The embedded default keeps its database in ``var/``;
creating that folder here, at the first connection, keeps the settings
module free of side effects on disk (``import notify.project.settings``
creates nothing). A ``DATABASE_URL``'s folder must exist:
``NOTIFY_CREATE_FOLDER`` in the settings dict says which.
"""

from __future__ import annotations

import threading
from pathlib import Path

from django.db.backends.sqlite3 import base

_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def writer_lock(database: str) -> threading.RLock:
    """The lock the connections of this process to ``database`` write under."""
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

    def _start_transaction_under_autocommit(self):
        if self._writer is None and not self.is_in_memory_db():
            lock = writer_lock(str(self.settings_dict["NAME"]))
            timeout = float(self.settings_dict.get("OPTIONS", {}).get("timeout", 5))
            if lock.acquire(timeout=timeout):
                self._writer = lock
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
