"""Helpers of the scale-out tests: real worker, scheduler and server processes
on the test database, users seeded in bulk, and waiting for the outbox to drain.

Processes run with ``tests.settings_scaleout`` (the ``counting`` channel and
``NOTIFY_TEST_OVERRIDES``), each in a process group of its own so that
``kill()`` is a real ``kill -9`` of the worker and its pool children.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import Group
from django.db import connection
from django.db.models import Count

from notify.models import Delivery, DeliveryAttempt
from notify.models.status import Status

ROOT = Path(__file__).resolve().parent.parent
RABBITMQ_URL = os.environ.get("NOTIFY_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_SERVER = shutil.which("redis-server")


def reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unique_queue(prefix: str = "notify-test") -> str:
    """A queue of this test's own, so parallel runs and other engineers' never share one."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def database_url() -> str:
    """The test database, as a URL for the processes the test starts."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    password = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
    host = s["HOST"] or "127.0.0.1"
    return f"postgres://{s['USER']}{password}@{host}:{s['PORT'] or 5432}/{s['NAME']}"


def process_env(
    var_dir: Path,
    *,
    provider_url: str = "",
    broker_url: str | None = None,
    queue: str | None = None,
    overrides: dict[str, Any] | None = None,
    provider_timeout: float = 5.0,
    kill_on: str = "",
) -> dict[str, str]:
    drop = {
        "NOTIFY_EMAIL_BACKEND",
        "NOTIFY_EAGER",
        "NOTIFY_SANDBOX",
        "NOTIFY_BROKER_URL",
        "PYTHONDONTWRITEBYTECODE",
    }
    env = {k: v for k, v in os.environ.items() if k not in drop}
    # Workers are killed and started again every few seconds: let them keep
    # their compiled bytecode (outside the source tree), or each start compiles
    # Django and Celery anew (3 s of CPU instead of 1 s).
    env["PYTHONPYCACHEPREFIX"] = os.environ.get("PYTHONPYCACHEPREFIX") or str(
        Path(tempfile.gettempdir()) / "notify-test-pycache"
    )
    env.update(
        DATABASE_URL=database_url(),
        DJANGO_SETTINGS_MODULE="tests.settings_scaleout",
        DJANGO_SECRET_KEY="scale-out-tests",
        NOTIFY_VAR_DIR=str(var_dir),
        NOTIFY_LOG_LEVEL="INFO",
        NOTIFY_TEST_PROVIDER_URL=provider_url,
        NOTIFY_TEST_PROVIDER_TIMEOUT=str(provider_timeout),
        NOTIFY_TEST_KILL_ON=kill_on,
        NOTIFY_TEST_OVERRIDES=json.dumps(overrides or {}),
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
        PYTHONUNBUFFERED="1",
    )
    if broker_url:
        env["NOTIFY_BROKER_URL"] = broker_url
        env["NOTIFY_CELERY_QUEUE"] = queue or "notify"
    return env


class Proc:
    """A process with a log file; ``kill()`` is SIGKILL to its whole group."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], log_dir: Path, ready: str
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.ready = ready
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self.started_at = 0.0
        self.ready_at: float | None = None
        self._handle = None
        self._offset = 0

    def start(self) -> Proc:
        self.starts += 1
        self._handle = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop/kill
        self._offset = self.log_path.stat().st_size
        self._handle.write(f"\n--- start {self.starts} at {time.strftime('%X')} ---\n".encode())
        self._handle.flush()
        self.started_at = time.monotonic()
        self.ready_at: float | None = None
        self.process = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdout=self._handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill() reaches pool children
        )
        return self

    def text(self, since_start: bool = False) -> str:
        data = self.log_path.read_bytes() if self.log_path.exists() else b""
        return (
            data[self._offset :].decode(errors="replace")
            if since_start
            else data.decode(errors="replace")
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_ready():
                return
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited ({self.process.returncode}):\n{self.text()[-3000:]}"
                )
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{self.text()[-3000:]}")

    def is_ready(self) -> bool:
        """Whether this start has said it is ready (remembered once seen)."""
        if self.ready_at is None and self.ready in self.text(since_start=True):
            self.ready_at = time.monotonic()
        return self.ready_at is not None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """kill -9 the process and everything in its group."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)
        self._close()

    def stop(self, timeout: float = 15) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
            except ProcessLookupError:
                pass
        # Pool children left behind by a killed parent, if any.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._close()
        return self.process.returncode

    def _close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def celery_worker(
    name: str,
    env: dict[str, str],
    log_dir: Path,
    *,
    concurrency: int = 2,
    pool: str = "prefork",
    skip_checks: bool = False,
) -> Proc:
    """A real ``celery -A notify worker`` on the test's queue. ``skip_checks``
    leaves out Django's system checks at start-up (0.4 s of CPU), for tests
    that start workers again every few seconds."""
    celery = str(Path(sys.executable).with_name("celery"))
    if skip_checks:
        env = {**env, "CELERY_SKIP_CHECKS": "1"}
    argv = [
        celery,
        "-A",
        "notify",
        "worker",
        "-Q",
        env["NOTIFY_CELERY_QUEUE"],
        "-n",
        f"{name}-{uuid.uuid4().hex[:6]}@%h",
        "-c",
        str(concurrency),
        "-P",
        pool,
        "-l",
        "INFO",
        # No worker-to-worker chatter at start-up: these workers come and go.
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    return Proc(name, argv, env, log_dir, ready=" ready.")


def notify_worker(
    name: str, env: dict[str, str], log_dir: Path, *, threads: int = 2, skip_checks: bool = False
) -> Proc:
    """A real ``manage.py notify worker`` (the in-process pool)."""
    options = ["--skip-checks"] if skip_checks else []
    argv = [sys.executable, "manage.py", "notify", *options, "worker", "--threads", str(threads)]
    return Proc(name, argv, env, log_dir, ready="worker pool running")


def scheduler(name: str, env: dict[str, str], log_dir: Path, *, tick: float = 1.0) -> Proc:
    """A real ``manage.py notify scheduler`` (its relay job hands lost work off again)."""
    argv = [
        sys.executable,
        "manage.py",
        "notify",
        "scheduler",
        "--tick",
        str(tick),
        "--standby-interval",
        "1",
    ]
    return Proc(name, argv, env, log_dir, ready="scheduler running")


class RedisServer:
    """A redis-server of the test's own on a free port, to stop and start at will."""

    def __init__(self, work_dir: Path) -> None:
        self.port = free_port()
        self.work_dir = work_dir
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                REDIS_SERVER or "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.work_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not reachable("127.0.0.1", self.port, 0.2):
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        """Like a crash of the broker: no persistence, so its queues are gone too."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None


# -- data ------------------------------------------------------------------------------


def seed_group(name: str, count: int, prefix: str = "u") -> Group:
    """``count`` active users in group ``name`` (bulk: no password hashing)."""
    User = get_user_model()
    group = Group.objects.create(name=name)
    unusable = make_password(None)
    for start in range(0, count, 5000):
        users = User.objects.bulk_create(
            [
                User(
                    username=f"{prefix}{i:06d}", email=f"{prefix}{i}@example.com", password=unusable
                )
                for i in range(start, min(count, start + 5000))
            ]
        )
        User.groups.through.objects.bulk_create(
            [User.groups.through(user_id=u.pk, group_id=group.pk) for u in users]
        )
    return group


def final_count() -> int:
    return Delivery.objects.filter(status__in=Status.FINAL).count()


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def our_books() -> dict[str, Any]:
    """What our records say: statuses, and deliveries with more than one
    successful attempt (there must be none)."""
    statuses = dict(
        Delivery.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n")
    )
    sent_twice = list(
        DeliveryAttempt.objects.filter(outcome=DeliveryAttempt.Outcome.SENT)
        .values("delivery_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .values_list("delivery_id", "n")[:20]
    )
    sent_attempts = DeliveryAttempt.objects.filter(outcome=DeliveryAttempt.Outcome.SENT).count()
    return {"statuses": statuses, "sent_twice": sent_twice, "sent_attempts": sent_attempts}


@contextlib.contextmanager
def machine_to_ourselves(timeout: float = 900.0):
    """Hold an exclusive lock shared by every test that starts worker fleets, so
    two of them (another xdist worker's, another checkout's) never compete for
    the same cores: their time limits assume the machine is theirs."""
    path = Path(tempfile.gettempdir()) / "notify-scaleout-tests.lock"
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{path} stayed locked for {timeout:.0f} s") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def drop_broker_queue(url: str, queue: str) -> None:
    """Delete a test's queue and exchange (Celery declares both, durable, under
    the queue's name), so test runs leave nothing behind on a shared broker."""
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=3) as connection:
            channel = connection.channel()
            channel.queue_delete(queue)
            channel.exchange_delete(queue)
    except Exception:  # a broker that is gone has nothing left to clean
        pass


@contextlib.contextmanager
def postgres_admin():
    """A connection to the "postgres" database beside the test database (a
    database cannot refuse connections or end its sessions from inside), and
    this thread's own backend pid, which the caller spares."""
    import psycopg

    s = connection.settings_dict
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        ours = cursor.fetchone()[0]
    with psycopg.connect(
        dbname="postgres",
        user=s["USER"],
        password=s.get("PASSWORD") or None,
        host=s["HOST"] or "127.0.0.1",
        port=s["PORT"] or 5432,
        autocommit=True,
    ) as admin:
        yield admin, ours


TERMINATE_OTHERS = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s AND pid <> %s"
)
