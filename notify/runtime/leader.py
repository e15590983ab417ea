"""Leader election: exactly one scheduler is active among many processes.

On PostgreSQL the leader holds a session-level advisory lock on a dedicated
connection; if the process dies, the server drops the connection and the lock
with it (at once when the process is killed, within TCP keepalive time when the
whole host vanishes). Advisory locks are per database, so schedulers of
different databases on one server never compete. On SQLite (one machine) the leader holds an exclusive ``flock`` on a
file, which the kernel releases when the process dies.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

from django.db import connections

log = logging.getLogger("notify.runtime.leader")

ADVISORY_KEY = 0x6E6F7469  # "noti"


class FileLeaderLock:
    def __init__(self, path: str):
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> bool:
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def still_held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class PostgresLeaderLock:
    """Holds ``pg_try_advisory_lock`` on its own connection (not Django's
    per-thread one, which may be closed between requests)."""

    def __init__(self, alias: str = "default", key: int = ADVISORY_KEY):
        self.alias = alias
        self.key = key
        self._conn = None
        self._held = False

    def _connect(self):
        import psycopg  # PostgreSQL only: SQLite deployments never load the driver

        params = connections[self.alias].get_connection_params()
        params.pop("cursor_factory", None)
        params.pop("context", None)
        params.pop("prepare_threshold", None)
        # Notice a vanished server (client side) within about 25 s ... (the
        # database's own OPTIONS win over these defaults).
        defaults = {
            "connect_timeout": 5,
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        }
        conn = psycopg.connect(**{**defaults, **params}, autocommit=True)
        try:
            # ... and let the server notice a vanished leader host as fast, so
            # its session, and the lock, do not outlive it. Named for pg_stat_activity.
            for statement in (
                "SET application_name = 'notify-scheduler'",
                "SET tcp_keepalives_idle = 10",
                "SET tcp_keepalives_interval = 5",
                "SET tcp_keepalives_count = 3",
            ):
                conn.execute(statement)
        except Exception:
            conn.close()
            raise
        return conn

    def acquire(self) -> bool:
        """Try for the lock; a standby keeps its connection between tries."""
        if self._held and self.still_held():
            return True
        try:
            if self._conn is None or self._conn.closed:
                self._conn = self._connect()
            got = self._conn.execute("SELECT pg_try_advisory_lock(%s)", [self.key]).fetchone()[0]
        except Exception as exc:
            log.warning("leader lock: cannot reach PostgreSQL: %s", exc)
            self.release()
            return False
        self._held = bool(got)
        return self._held

    def still_held(self) -> bool:
        """The session holding the lock is alive (a session-level lock lives as
        long as its session)."""
        if not self._held or self._conn is None:
            return False
        try:
            self._conn.execute("SELECT 1")
            return True
        except Exception:
            self.release()
            return False

    def release(self) -> None:
        """Close the session, which releases the lock with it."""
        self._held = False
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: S110 - already gone
                pass
            self._conn = None


def leader_lock(lock_file: str | None):
    if connections["default"].vendor == "postgresql":
        return PostgresLeaderLock()
    if not lock_file:
        raise ValueError(
            "NOTIFY['SCHEDULER_LOCK_FILE'] must be set when the database is not PostgreSQL"
        )
    return FileLeaderLock(lock_file)
