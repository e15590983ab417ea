"""``/healthz`` (the process is up) and ``/readyz`` (it can work): database,
broker, scheduler leader and outbox lag, answering 503 with the failing check
named. A stopped database is a settings override in a subprocess (a port where
nothing listens, or a path that cannot exist); a stopped broker is
``NOTIFY["BROKER_URL"]`` on a closed port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from notify.models import Delivery, Event
from notify.observability.health import broker_address, file_lock_holder
from notify.runtime.leader import FileLeaderLock, leader_lock

ROOT = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def leader(settings, tmp_path):
    """A scheduler leader holds the lock (file lock on SQLite, advisory on PostgreSQL)."""
    settings.NOTIFY = {**settings.NOTIFY, "SCHEDULER_LOCK_FILE": str(tmp_path / "scheduler.lock")}
    lock = leader_lock(settings.NOTIFY["SCHEDULER_LOCK_FILE"])
    assert lock.acquire()
    yield lock
    lock.release()


def readyz(client):
    response = client.get("/readyz")
    assert response["Content-Type"] == "application/json"
    assert "no-cache" in response["Cache-Control"]
    return response.status_code, response.json()


@pytest.mark.django_db
def test_healthz_is_always_up(client):
    assert client.get("/healthz").json() == {"status": "ok"}


@pytest.mark.django_db
def test_ready_when_every_check_passes(client, leader):
    status, body = readyz(client)
    assert status == 200, body
    assert body["status"] == "ready" and body["failing"] == []
    assert set(body["checks"]) == {"database", "scheduler", "outbox"}  # no broker configured
    assert all(check["ok"] for check in body["checks"].values())
    assert body["checks"]["outbox"]["due_deliveries"] == 0
    assert "leader" in body["checks"]["scheduler"]["detail"]


@pytest.mark.django_db
def test_no_scheduler_leader_is_named(client, settings, tmp_path):
    settings.NOTIFY = {**settings.NOTIFY, "SCHEDULER_LOCK_FILE": str(tmp_path / "none.lock")}
    status, body = readyz(client)
    assert status == 503
    assert body["failing"] == ["scheduler"]
    assert body["checks"]["database"]["ok"] is True


def test_a_lock_file_held_by_another_descriptor_names_its_pid(tmp_path):
    path = tmp_path / "scheduler.lock"
    assert not file_lock_holder(path).held  # never ran
    lock = FileLeaderLock(str(path))
    assert lock.acquire()
    try:
        held = file_lock_holder(path)
        assert held.held and str(os.getpid()) in held.detail
    finally:
        lock.release()
    assert not file_lock_holder(path).held
    assert lock.acquire()  # looking did not take it
    lock.release()


@pytest.mark.django_db
def test_a_stopped_broker_is_named_without_its_credentials(client, settings, leader):
    port = closed_port()
    settings.NOTIFY = {**settings.NOTIFY, "BROKER_URL": f"amqp://user:s3cret@127.0.0.1:{port}//"}
    status, body = readyz(client)
    assert status == 503
    assert body["failing"] == ["broker"]
    detail = body["checks"]["broker"]["detail"]
    assert f"amqp://127.0.0.1:{port}" in detail and "refused" in detail.lower()
    assert "s3cret" not in json.dumps(body) and "user" not in detail


@pytest.mark.django_db
def test_a_reachable_broker_passes(client, settings, leader):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        settings.NOTIFY = {**settings.NOTIFY, "BROKER_URL": f"redis://127.0.0.1:{port}/0"}
        status, body = readyz(client)
    assert status == 200, body
    assert body["checks"]["broker"]["ok"] is True


def test_broker_addresses_default_their_ports():
    assert broker_address("amqp://guest:guest@mq//") == ("amqp", "mq", 5672)
    assert broker_address("redis://127.0.0.1/0") == ("redis", "127.0.0.1", 6379)
    assert broker_address("rediss://cache:6390/1") == ("rediss", "cache", 6390)


@pytest.mark.django_db
def test_an_outbox_that_falls_behind_is_named(client, settings, leader, make_user, make_rule):
    settings.NOTIFY = {**settings.NOTIFY, "READINESS_MAX_OUTBOX_LAG": 300}
    from notify import trigger
    from notify.fanout.pipeline import process_event

    make_rule()
    event = trigger("order.shipped", {"order_id": "L-1"}, recipients=[make_user("ann")])
    assert readyz(client)[0] == 200  # just received: no lag yet
    ten_minutes_ago = timezone.now() - timedelta(minutes=10)
    Event.objects.filter(pk=event.pk).update(received_at=ten_minutes_ago)
    status, body = readyz(client)
    assert (status, body["failing"]) == (503, ["outbox"])
    assert "oldest due event has waited 600 s" in body["checks"]["outbox"]["detail"]

    process_event(event.pk)  # fanned out: the deliveries are due and waiting now
    Delivery.objects.update(next_attempt_at=ten_minutes_ago)
    status, body = readyz(client)
    assert (status, body["failing"]) == (503, ["outbox"])
    outbox = body["checks"]["outbox"]
    assert outbox["due_deliveries"] == 2 and outbox["due_events"] == 0
    assert outbox["oldest_delivery_seconds"] >= 600
    Delivery.objects.update(next_attempt_at=timezone.now() + timedelta(hours=1))  # a retry later
    assert readyz(client)[0] == 200


def readyz_in_a_process(database_url: str, tmp_path: Path) -> tuple[int, dict]:
    """GET /readyz in a fresh process whose settings point at ``database_url``."""
    code = (
        "import json, django; django.setup(); "
        "from django.test import Client; "
        "r = Client().get('/readyz'); "
        "print(json.dumps({'status': r.status_code, 'body': r.json()}))"
    )
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_SETTINGS_MODULE": "notify.project.settings",
        "NOTIFY_VAR_DIR": str(tmp_path),
        "NOTIFY_LOG_LEVEL": "CRITICAL",
    }
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["status"], result["body"]


@pytest.mark.parametrize("engine", ["postgres", "sqlite"])
def test_a_stopped_database_is_named(engine, tmp_path):
    if engine == "postgres":
        url = f"postgres://notify:pw@127.0.0.1:{closed_port()}/notify"
    else:
        url = f"sqlite:///{tmp_path}/no/such/directory/notify.sqlite3"
    status, body = readyz_in_a_process(url, tmp_path)
    assert status == 503
    assert body["failing"] == ["database"]
    assert body["checks"]["database"]["ok"] is False
    assert "cannot query the database" in body["checks"]["database"]["detail"]
    assert body["checks"]["scheduler"] == {
        "ok": None,
        "detail": "not checked: the database is unreachable",
    }
    assert "pw" not in body["checks"]["database"]["detail"].split()


@pytest.mark.django_db
def test_the_leader_is_seen_on_this_database(client, leader):
    detail = readyz(client)[1]["checks"]["scheduler"]["detail"]
    if connection.vendor == "postgresql":
        assert "PostgreSQL backend" in detail
    else:
        assert f"process {os.getpid()}" in detail
