"""Threads of one process writing to the test database at once, for the
SQLite writer-lock tests (``test_sqlite_writers``, ``test_sqlite_single_writes``)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from django.db import connection, connections


class Writer(threading.Thread):
    """``work()`` in a thread of its own, on its own connection with SQLite's
    busy timeout at ``busy_timeout_ms`` (``None``: the default), after
    ``start_together`` if given; what it raised is kept in ``errors``."""

    def __init__(
        self,
        work: Callable[[], object],
        busy_timeout_ms: int | None,
        start_together: threading.Barrier | None = None,
    ) -> None:
        super().__init__()
        self.work, self.busy_timeout_ms, self.barrier = work, busy_timeout_ms, start_together
        self.errors: list[BaseException] = []

    def run(self) -> None:
        try:
            if self.busy_timeout_ms is not None:
                with connection.cursor() as cursor:
                    cursor.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
            if self.barrier is not None:
                self.barrier.wait()
            self.work()
        except BaseException as exc:  # reported to the test thread
            self.errors.append(exc)
        finally:
            connections.close_all()


def in_threads(
    work: Callable[[int], None], threads: int, busy_timeout_ms: int | None
) -> list[BaseException]:
    """Run ``work(n)`` in ``threads`` writers released together; return what
    they raised."""
    start = threading.Barrier(threads)
    writers = [Writer(lambda n=n: work(n), busy_timeout_ms, start) for n in range(threads)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(120)
    return [error for writer in writers for error in writer.errors]
