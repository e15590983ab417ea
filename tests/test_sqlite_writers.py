"""SQLite: the write transactions of one process's threads queue on a lock
(``notify.project.sqlite3``) instead of sleeping in SQLite's busy handler.

Proven without timing: with SQLite's busy timeout at 0, a writer that met
another thread's open transaction would fail at once with "database is
locked"; queued on the process's lock, none ever meets it. The twin runs at
the default busy timeout."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections, transaction

from notify.models import Category
from tests.sqlite_threads import in_threads

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's single writer"),
]

THREADS = 3
TRANSACTIONS = 150


def _write_in_threads(busy_timeout_ms: int | None) -> tuple[list[BaseException], list[str]]:
    order: list[str] = []

    def writer(n: int) -> None:
        for i in range(TRANSACTIONS):
            with transaction.atomic():
                Category.objects.create(key=f"t{n}-{i}", name=f"t{n}-{i}")
                order.append(f"t{n}")

    return in_threads(writer, THREADS, busy_timeout_ms), order


def test_writers_of_one_process_never_meet_sqlites_lock():
    errors, _ = _write_in_threads(busy_timeout_ms=0)
    assert errors == []
    assert Category.objects.filter(key__startswith="t").count() == THREADS * TRANSACTIONS


def test_at_the_default_busy_timeout_every_writer_gets_its_turn():
    errors, order = _write_in_threads(busy_timeout_ms=None)
    assert errors == []
    assert Category.objects.filter(key__startswith="t").count() == THREADS * TRANSACTIONS
    assert {f"t{n}" for n in range(THREADS)} == set(order[: len(order) // 2])  # interleaved


def test_a_failed_transaction_gives_the_lock_back():
    with pytest.raises(RuntimeError), transaction.atomic():
        Category.objects.create(key="rolled-back", name="rolled back")
        raise RuntimeError("boom")
    done = threading.Event()

    def other() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("PRAGMA busy_timeout=0")
            with transaction.atomic():
                Category.objects.create(key="after", name="after")
            done.set()
        finally:
            connections.close_all()

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(30)
    assert done.is_set()
    assert not Category.objects.filter(key="rolled-back").exists()
