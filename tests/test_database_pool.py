"""Database connections: Django's pool on PostgreSQL by default, sized from the
environment; SQLite connections kept by their thread (issue 14)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
PRINT = (
    "import json; from notify.project import settings as s; "
    "d = s.DATABASES['default']; "
    "print(json.dumps({'pool': d.get('OPTIONS', {}).get('pool'), 'age': d['CONN_MAX_AGE']},"
    " default=lambda f: f'{f.__module__}.{f.__qualname__}'))"
)
CHECK = "notify.project.dbpool.check_connection"


def database_settings(tmp_path, **environ: str) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("NOTIFY_", "DJANGO_")) and k not in {"DATABASE_URL", "PYTEST_VERSION"}
    }
    env.update(NOTIFY_VAR_DIR=str(tmp_path), **environ)
    completed = subprocess.run(
        [sys.executable, "-c", PRINT], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(completed.stdout)


PG = "postgres://nobody@127.0.0.1:1/none"


def test_postgresql_uses_djangos_pool_by_default(tmp_path):
    found = database_settings(tmp_path, DATABASE_URL=PG)
    assert found == {
        "pool": {
            "min_size": 2,
            "max_size": 50,
            "timeout": 10.0,
            "max_idle": 60.0,
            "check": CHECK,
        },
        "age": 0,
    }


def test_the_pool_is_sized_from_the_environment(tmp_path):
    found = database_settings(
        tmp_path,
        DATABASE_URL=PG,
        NOTIFY_DB_POOL_MIN_SIZE="1",
        NOTIFY_DB_POOL_MAX_SIZE="7",
        NOTIFY_DB_POOL_TIMEOUT="2.5",
        NOTIFY_DB_POOL_MAX_IDLE="5",
        NOTIFY_DB_CONN_MAX_AGE="600",  # ignored with a pool, which needs 0
    )
    assert found == {
        "pool": {"min_size": 1, "max_size": 7, "timeout": 2.5, "max_idle": 5.0, "check": CHECK},
        "age": 0,
    }


def test_without_the_pool_conn_max_age_applies(tmp_path):
    found = database_settings(
        tmp_path, DATABASE_URL=PG, NOTIFY_DB_POOL="0", NOTIFY_DB_CONN_MAX_AGE="600"
    )
    assert found == {"pool": None, "age": 600}


def test_sqlite_connections_are_kept_by_their_thread(tmp_path):
    assert database_settings(tmp_path) == {"pool": None, "age": None}


@pytest.mark.postgres
@pytest.mark.django_db
def test_on_postgresql_connections_come_from_the_pool():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (DATABASE_URL=postgres://…)")
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    assert connection.pool is not None
    assert connection.pool.max_size == 50


def test_a_worker_pool_too_big_for_the_connection_pool_is_named(caplog):
    """20 worker threads and their lease heartbeats need more than a pool of 20:
    heartbeats starved of a connection let live claims expire (issue 12)."""

    from notify.runtime.worker import warn_if_pool_too_small

    if connection.vendor != "postgresql":
        pytest.skip("the pool is PostgreSQL's")
    options = connection.settings_dict.setdefault("OPTIONS", {})
    saved = options.get("pool")
    options["pool"] = {"min_size": 1, "max_size": 20, "timeout": 10.0}
    try:
        with caplog.at_level("ERROR", logger="notify.runtime.worker"):
            warn_if_pool_too_small(20)
        assert "NOTIFY_DB_POOL_MAX_SIZE to 50 or more" in caplog.text
        caplog.clear()
        options["pool"]["max_size"] = 50
        warn_if_pool_too_small(20)
        assert caplog.text == ""
    finally:
        if saved is None:
            options.pop("pool")
        else:
            options["pool"] = saved


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_after_a_database_restart_the_pools_dead_connections_cost_no_request():
    """A burst grew the pool; PostgreSQL then dropped every session (a restart).
    psycopg_pool alone found the dead idle connections one by one, backing off
    after each, so the next request waited its whole 10 s time-out and failed
    ("couldn't get a connection", CI on PostgreSQL); ``notify.project.dbpool``
    checks them all at the first dead one, so a request gets a live one at once."""
    if connection.vendor != "postgresql":
        pytest.skip("the pool is PostgreSQL's")
    from django.db import connections

    from tests.scaleout import TERMINATE_OTHERS, postgres_admin

    burst = 12
    held = threading.Barrier(burst + 1)

    def borrow():  # a request thread holding its connection while the others borrow
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
            held.wait(timeout=30)
        connections["default"].close()  # back to the pool: idle

    threads = [threading.Thread(target=borrow) for _ in range(burst)]
    for thread in threads:
        thread.start()
    held.wait(timeout=30)
    for thread in threads:
        thread.join()
    assert connection.pool.get_stats()["pool_available"] >= burst

    with postgres_admin() as (admin, ours):
        admin.execute(TERMINATE_OTHERS, [connection.settings_dict["NAME"], ours])

    answers: list[object] = []

    def request():
        started = time.monotonic()
        try:
            with connections["default"].cursor() as cursor:
                cursor.execute("SELECT 1")
                answers.append((cursor.fetchone()[0], time.monotonic() - started))
        except Exception as exc:  # what the request would have failed with
            answers.append((exc, time.monotonic() - started))
        finally:
            connections["default"].close()

    thread = threading.Thread(target=request)
    thread.start()
    thread.join(30)
    ((answer, took),) = answers
    assert answer == 1, answer
    assert took < 5, took  # one back-off (about 1 s), not the pool's 10 s time-out
