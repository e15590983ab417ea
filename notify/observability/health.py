"""Readiness (``/readyz``): can this deployment do its work right now?

``/healthz`` says the process is up; ``/readyz`` runs four checks and answers
200, or 503 naming each check that failed:

* ``database``: a ``SELECT 1`` on the default connection;
* ``broker``: with ``NOTIFY["BROKER_URL"]`` set, a TCP connection to the
  broker's host and port (2 s); skipped without a broker;
* ``scheduler``: some process holds the scheduler's leader lock. The lock is
  what makes a leader, so it cannot disagree with it: on PostgreSQL the
  advisory lock is looked up in ``pg_locks``; on SQLite the lock file is
  tried with a non-blocking ``flock`` (released at once) and its pid read;
* ``outbox``: the oldest due delivery (pending, ``next_attempt_at`` passed)
  and the oldest due event (received, not claimed) have waited less than
  ``READINESS_MAX_OUTBOX_LAG`` seconds (partial and status indexes: one seek).

Details never carry credentials: the broker is named by scheme, host and port.
"""

from __future__ import annotations

import fcntl
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.db import connections
from django.utils import timezone

from notify import conf
from notify.models import Delivery, Event
from notify.models.status import Status
from notify.observability.queries import adapt, fetch, table
from notify.runtime.leader import ADVISORY_KEY

BROKER_PORTS = {"amqp": 5672, "amqps": 5671, "pyamqp": 5672, "redis": 6379, "rediss": 6380}
BROKER_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool | None  # None: not checked (say why in detail)
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail, **self.data}


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def check_database(alias: str = "default") -> Check:
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means "not reachable"
        connections[alias].close_if_unusable_or_obsolete()
        return Check("database", False, f"cannot query the database: {first_line(exc)}")
    return Check("database", True, f"{connections[alias].vendor} answers")


def broker_address(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a broker URL, with the scheme's default port."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[0]
    return scheme, parts.hostname or "localhost", parts.port or BROKER_PORTS.get(scheme, 0)


def check_broker() -> Check | None:
    url = conf.get("BROKER_URL")
    if not url:
        return None
    scheme, host, port = broker_address(url)
    where = f"{scheme}://{host}:{port}"
    if not port:
        return Check("broker", None, f"{where}: not a network broker, not checked")
    try:
        with socket.create_connection((host, port), timeout=BROKER_TIMEOUT):
            pass
    except OSError as exc:
        return Check("broker", False, f"cannot connect to the broker at {where}: {first_line(exc)}")
    return Check("broker", True, f"{where} accepts connections")


@dataclass(frozen=True, slots=True)
class Leader:
    held: bool
    detail: str


def scheduler_leader() -> Leader:
    """Whether some process holds the scheduler's leader lock, and which."""
    if connections["default"].vendor == "postgresql":
        sql = (
            "SELECT l.pid, COALESCE(a.application_name, '') FROM pg_locks l "
            "LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND l.classid::bigint = %s AND l.objid::bigint = %s"
        )
        with connections["default"].cursor() as cursor:
            cursor.execute(sql, [ADVISORY_KEY >> 32, ADVISORY_KEY & 0xFFFFFFFF])
            row = cursor.fetchone()
        if row is None:
            return Leader(False, "no scheduler holds the leader lock (PostgreSQL advisory lock)")
        return Leader(True, f"the leader is PostgreSQL backend {row[0]} ({row[1] or 'unnamed'})")
    path = conf.get("SCHEDULER_LOCK_FILE")
    if not path:
        return Leader(False, "NOTIFY['SCHEDULER_LOCK_FILE'] is not set")
    return file_lock_holder(Path(path))


def file_lock_holder(path: Path) -> Leader:
    """Try the lock file without waiting: if we get it, nobody leads (and we let
    go at once); if not, the leader's pid is in the file."""
    if not path.exists():
        return Leader(False, f"no scheduler has run here ({path} does not exist)")
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pid = path.read_text().strip() or "?"
            return Leader(True, f"the leader is process {pid} (lock file {path})")
        fcntl.flock(fd, fcntl.LOCK_UN)
        return Leader(False, f"no scheduler holds the leader lock ({path})")
    finally:
        os.close(fd)


def check_scheduler() -> Check:
    leader = scheduler_leader()
    return Check("scheduler", leader.held, leader.detail)


@dataclass(frozen=True, slots=True)
class OutboxLag:
    due_deliveries: int
    delivery_seconds: float
    due_events: int
    event_seconds: float


def outbox_lag(now: datetime | None = None) -> OutboxLag:
    """How much due work waits, and for how long the oldest has waited."""
    now = now or timezone.now()
    stamp = adapt(now)
    # delivery_due_idx: (next_attempt_at) WHERE status IN ('pending', 'sending'),
    # repeated literally: SQLite matches a partial index's condition term by term.
    deliveries = fetch(
        f"SELECT COUNT(*), MIN(next_attempt_at) FROM {table(Delivery)} "
        f"WHERE status IN ('{Status.PENDING}', '{Status.SENDING}') "
        "AND next_attempt_at <= %s AND status = %s",
        [stamp, Status.PENDING],
    )[0]
    # event_status_idx: (status, received_at).
    events = fetch(
        f"SELECT COUNT(*), MIN(received_at) FROM {table(Event)} WHERE status = %s "
        "AND (claimed_until IS NULL OR claimed_until <= %s) "
        "AND (scheduled_for IS NULL OR scheduled_for <= %s)",
        [Event.State.RECEIVED, stamp, stamp],
    )[0]
    return OutboxLag(
        due_deliveries=deliveries[0],
        delivery_seconds=age(deliveries[1], now),
        due_events=events[0],
        event_seconds=age(events[1], now),
    )


def age(value: Any, now: datetime) -> float:
    """Seconds since a timestamp read with a raw cursor (a string on SQLite)."""
    if value is None:
        return 0.0
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if timezone.is_naive(value):
        value = timezone.make_aware(value, timezone.get_fixed_timezone(0))
    return max(0.0, (now - value).total_seconds())


def check_outbox() -> Check:
    limit = float(conf.get("READINESS_MAX_OUTBOX_LAG"))
    lag = outbox_lag()
    data = {
        "due_deliveries": lag.due_deliveries,
        "oldest_delivery_seconds": round(lag.delivery_seconds, 1),
        "due_events": lag.due_events,
        "oldest_event_seconds": round(lag.event_seconds, 1),
        "limit_seconds": limit,
    }
    late = [
        f"the oldest due {kind} has waited {seconds:.0f} s"
        for kind, seconds in (("delivery", lag.delivery_seconds), ("event", lag.event_seconds))
        if seconds > limit
    ]
    if late:
        return Check(
            "outbox", False, f"{' and '.join(late)} (limit {limit:.0f} s): workers behind?", data
        )
    return Check("outbox", True, "due work is being taken", data)


def guarded(name: str, check: Any) -> Check:
    """Run a check; an unexpected error fails it (a 503 naming it, never a 500)."""
    try:
        return check()
    except Exception as exc:
        return Check(name, False, f"the check raised {first_line(exc)}")


def readiness() -> tuple[bool, dict[str, Any]]:
    """Run every check; return (ready, the JSON body)."""
    checks = [guarded("database", check_database)]
    broker = guarded("broker", check_broker)
    if broker is not None:
        checks.append(broker)
    if checks[0].ok:
        checks += [guarded("scheduler", check_scheduler), guarded("outbox", check_outbox)]
    else:
        reason = "not checked: the database is unreachable"
        checks += [Check("scheduler", None, reason), Check("outbox", None, reason)]
    failing = [check.name for check in checks if check.ok is False]
    body = {
        "status": "failing" if failing else "ready",
        "failing": failing,
        "checks": {check.name: check.as_dict() for check in checks},
    }
    return not failing, body
