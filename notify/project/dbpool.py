"""The health check Django's PostgreSQL pool runs before it lends a connection.

psycopg_pool's own check finds a dead connection one at a time, and after each
failure the borrowing thread backs off (1 s, 2 s, 4 s …) before it tries the
next idle one. After PostgreSQL restarts, every idle connection of a pool that
a burst had grown is dead: with 40 of them a request tried four, backed off
for its whole time-out and failed ("couldn't get a connection after 10 sec"),
and so did the requests after it, until the dead ones were used up. Here the
first dead connection found makes the pool check all its idle ones at once
(``ConnectionPool.check``: the broken are discarded and replaced), so the
borrower's next try gets a live one."""

from __future__ import annotations

import threading

from psycopg import Connection
from psycopg_pool import ConnectionPool

_checking_all = threading.Lock()


def check_connection(conn: Connection) -> None:
    """``ConnectionPool.check_connection``; on failure, also check the whole pool."""
    try:
        ConnectionPool.check_connection(conn)
    except Exception:
        _check_idle_connections()
        raise


def _check_idle_connections() -> None:
    # One thread checks; the others found the same restart and just back off.
    if not _checking_all.acquire(blocking=False):
        return
    try:
        from django.db import connections

        for alias in connections:
            wrapper = connections[alias]
            # The pools already built (``wrapper.pool`` would build a missing one).
            built = getattr(type(wrapper), "_connection_pools", {})
            pool = built.get(alias) if wrapper.vendor == "postgresql" else None
            if pool is not None:
                pool.check()
    finally:
        _checking_all.release()
