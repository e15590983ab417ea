"""SQLite: single write statements outside a transaction queue on the
process's writer lock like write transactions, and a claim round that finds
nothing due takes no write lock (``notify.project.sqlite3``,
``notify.outbox.rows.nothing_due``).

Proven without timing, as in ``test_sqlite_writers``: with SQLite's busy
timeout at 0, a statement that met another thread's write would fail at once
with "database is locked". The twin runs at the default busy timeout."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from notify.models import Category
from notify.outbox import rows, runs
from tests.sqlite_threads import Writer, in_threads

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's single writer"),
]

THREADS = 3
ROUNDS = 60


def _round(n: int, i: int) -> None:
    """One of each kind of write: autocommit INSERT ... RETURNING (``create``),
    UPDATE, DELETE, ``executemany``, and a write transaction among them."""
    key = f"s{n}-{i}"
    category = Category.objects.create(key=key, name=key)
    assert category.pk is not None
    Category.objects.filter(pk=category.pk).update(name=f"{key} updated")
    table = connection.ops.quote_name(Category._meta.db_table)
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {table} (key, name, description, critical, critical_reason, "
            "opt_in, default_mode, default_channels) "
            "VALUES (%s, %s, '', 0, '', 0, 'immediate', '[]')",
            [(f"{key}-m{j}", key) for j in range(2)],
        )
    Category.objects.filter(key=f"{key}-m1").delete()
    with transaction.atomic():
        Category.objects.filter(key=f"{key}-m0").update(description="in a transaction")


def _rounds(n: int) -> None:
    for i in range(ROUNDS):
        _round(n, i)


def _assert_every_round_written() -> None:
    assert Category.objects.filter(name__endswith=" updated").count() == THREADS * ROUNDS
    assert Category.objects.filter(description="in a transaction").count() == THREADS * ROUNDS
    assert not Category.objects.filter(key__endswith="-m1").exists()


def test_single_writes_never_meet_sqlites_lock():
    assert in_threads(_rounds, THREADS, busy_timeout_ms=0) == []
    _assert_every_round_written()


def test_at_the_default_busy_timeout_single_writes_all_succeed():
    assert in_threads(_rounds, THREADS, busy_timeout_ms=None) == []
    _assert_every_round_written()


@pytest.fixture
def other_thread_writes() -> Iterator[Callable[[], None]]:
    """Another thread's write transaction, open until the test calls the
    function it is given (or ends)."""
    holding, done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with transaction.atomic():
                Category.objects.create(key="held", name="held")
                holding.set()
                done.wait(60)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=writer)
    thread.start()
    assert holding.wait(30)

    def commit() -> None:
        done.set()
        thread.join(30)

    yield commit
    commit()
    assert errors == []


def _wait_for(work: Callable[[], object], busy_timeout_ms: int | None) -> Writer:
    """Run ``work`` in a thread of its own, started now."""
    writer = Writer(work, busy_timeout_ms)
    writer.start()
    return writer


@pytest.mark.parametrize("busy_timeout_ms", [0, None])
def test_an_autocommit_update_waits_for_the_writer_before_it(other_thread_writes, busy_timeout_ms):
    updater = _wait_for(
        lambda: Category.objects.filter(key="held").update(name="updated"), busy_timeout_ms
    )
    updater.join(0.3)
    assert updater.is_alive()  # waiting for the transaction, not failed at once
    other_thread_writes()
    updater.join(30)
    assert updater.errors == []
    assert Category.objects.get(key="held").name == "updated"  # ran after the commit


def test_returning_rows_are_all_read_and_the_write_committed_before_the_lock_is_given_back():
    table = connection.ops.quote_name(Category._meta.db_table)
    keys = [f"r{i}" for i in range(50)]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (key, name, description, critical, critical_reason, "
            "opt_in, default_mode, default_channels) "
            "SELECT j.value, j.value, '', 0, '', 0, 'immediate', '[]' FROM json_each(%s) AS j "
            "RETURNING key",
            ['["' + '","'.join(keys) + '"]'],
        )
        # Not read yet: sqlite3 steps a RETURNING statement as its rows are
        # fetched, and its write commits at the last one. Another writer may
        # write now all the same (busy timeout 0: it would fail at once).
        other = _wait_for(lambda: Category.objects.create(key="other", name="other"), 0)
        other.join(30)
        assert other.errors == []
        assert cursor.fetchone() is not None
        assert len(cursor.fetchmany(9)) == 9
        assert len(list(cursor)) == 40
        assert cursor.fetchone() is None
    assert set(Category.objects.filter(key__startswith="r").values_list("key", flat=True)) == set(
        keys
    )


def _claims() -> tuple[object, ...]:
    now = timezone.now()
    return (
        rows.claim_events(10, 60, now),
        rows.claim_due_deliveries(10, 60, now)[0],
        rows.claim_more(10, rows.claim_token(now, 60), "email", now),  # a batch that grows
        runs.claim_due_runs(10, 60, now)[0],
    )


@pytest.mark.parametrize("busy_timeout_ms", [0, None])
def test_a_claim_round_that_finds_nothing_takes_no_write_lock(other_thread_writes, busy_timeout_ms):
    found: list[tuple[object, ...]] = []
    worker = _wait_for(lambda: found.append(_claims()), busy_timeout_ms)
    worker.join(10)
    idle = not worker.is_alive()
    other_thread_writes()  # lets a claim that waited for it go on, then fail the test
    worker.join(30)
    assert idle  # it did not wait for the other thread's write
    assert worker.errors == []
    assert found == [([], [], [], [])]
