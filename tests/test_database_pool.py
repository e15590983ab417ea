"""Database connections: Django's pool on PostgreSQL by default, sized from the
environment; SQLite connections kept by their thread (issue 14)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
PRINT = (
    "import json; from notify.project import settings as s; "
    "d = s.DATABASES['default']; "
    "print(json.dumps({'pool': d.get('OPTIONS', {}).get('pool'), 'age': d['CONN_MAX_AGE']}))"
)


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
    assert found == {"pool": {"min_size": 2, "max_size": 50, "timeout": 10.0}, "age": 0}


def test_the_pool_is_sized_from_the_environment(tmp_path):
    found = database_settings(
        tmp_path,
        DATABASE_URL=PG,
        NOTIFY_DB_POOL_MIN_SIZE="1",
        NOTIFY_DB_POOL_MAX_SIZE="7",
        NOTIFY_DB_POOL_TIMEOUT="2.5",
        NOTIFY_DB_CONN_MAX_AGE="600",  # ignored with a pool, which needs 0
    )
    assert found == {"pool": {"min_size": 1, "max_size": 7, "timeout": 2.5}, "age": 0}


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
