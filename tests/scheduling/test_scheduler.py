"""The scheduler: stateless ticks that catch up after downtime, one leader at a
time, a bounded takeover, and nothing sent twice, in-process and as real
``manage.py notify scheduler`` processes on PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

import notify
from notify.models import (
    CategoryPreference,
    Delivery,
    Digest,
    Event,
    UserSettings,
)
from notify.models.status import Status
from notify.scheduling.scheduler import JOBS, SchedulerService, purge_old_records

ROOT = Path(__file__).resolve().parents[2]


def tick() -> None:
    """One scheduler tick: every job that runs each tick, as the leader runs them."""
    for name, func, seconds in JOBS:
        if seconds is None:
            func()


def digest_user(make_user, category, name, **settings):
    user = make_user(name, first_name=name.title())
    UserSettings.objects.create(user=user, **settings)
    CategoryPreference.objects.create(user=user, category=category, mode="daily")
    return user


# -- catching up ------------------------------------------------------------------------------


def test_a_scheduler_down_for_three_hours_sends_everything_due_once_on_restart(
    smtp_mailer, make_user, make_rule, category
):
    make_rule(name="digestible", event_type="order.shipped", channels=["email"])
    make_rule(name="reminder", event_type="order.reminder", channels=["email"])
    make_rule(name="later", event_type="order.later", channels=["email"], delay=timedelta(hours=1))
    dora = digest_user(make_user, category, "dora", timezone="Europe/Berlin", digest_hour=8)
    quiet = make_user("quinn")
    UserSettings.objects.create(
        user=quiet,
        timezone="UTC",
        quiet_start=datetime(2026, 1, 1, 22).time(),
        quiet_end=datetime(2026, 1, 1, 7).time(),
    )
    start = datetime(2026, 11, 21, 5, tzinfo=UTC)  # 06:00 in Berlin
    with time_machine.travel(start, tick=False) as clock:
        notify.trigger("order.shipped", {"order_id": "D1"}, recipients=[dora])
        notify.trigger("order.shipped", {"order_id": "Q1"}, recipients=[quiet])  # quiet until 07:00
        notify.trigger("order.later", {"order_id": "L1"}, recipients=[quiet])  # due 06:00
        notify.schedule(
            "order.reminder",
            {"order_id": "R1"},
            at=start + timedelta(hours=2),  # 07:00
            recipients=[quiet],
        )
        tick()
        clock.move_to(start + timedelta(minutes=15))
        tick()
        assert not smtp_mailer.messages  # everything is due later
        # Down from 05:15 to 08:15: the digest hour (07:00 UTC), the reminder,
        # the delayed send and the end of quiet hours all pass unseen.
        clock.move_to(start + timedelta(hours=3, minutes=15))
        tick()
        subjects = Counter(m.subject for m in smtp_mailer.messages)
        assert subjects == {
            "Your daily digest: 1 new notification": 1,
            "Your order Q1 has shipped": 1,
            "Your order L1 has shipped": 1,
            "Your order R1 has shipped": 1,
        }
        for minutes in range(30, 24 * 60, 15):  # the rest of the day: nothing twice
            clock.move_to(start + timedelta(hours=3, minutes=minutes))
            tick()
    assert len(smtp_mailer.messages) == 4
    digest = Digest.objects.get()
    assert (digest.period, digest.status) == ("2026-11-21", Status.SENT)
    assert set(Delivery.objects.values_list("status", flat=True)) == {Status.SENT}


def test_retention_purges_old_events_and_finished_digests(make_user):
    user = make_user("old")
    long_ago = timezone.now() - timedelta(days=400)
    Event.objects.create(type="x.y", status=Event.State.PROCESSED, received_at=long_ago)
    Event.objects.create(type="x.y", status=Event.State.PROCESSED)
    for period, status in (("2025-01-01", Status.SENT), ("2025-01-02", Status.PENDING)):
        Digest.objects.create(
            user=user,
            channel="email",
            frequency="daily",
            period=period,
            due_at=long_ago,
            status=status,
            created_at=long_ago,
        )
    assert purge_old_records() == 2
    assert Event.objects.count() == 1
    assert list(Digest.objects.values_list("status", flat=True)) == [Status.PENDING]


# -- one leader, in-process ---------------------------------------------------------------------


def wait_for(predicate, timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


@pytest.fixture
def lock_file(settings, tmp_path):
    settings.NOTIFY = {**settings.NOTIFY, "SCHEDULER_LOCK_FILE": str(tmp_path / "scheduler.lock")}


@pytest.mark.django_db(transaction=True)
def test_one_leader_runs_the_jobs_and_a_standby_takes_over(lock_file):
    runs: Counter = Counter()

    def job(name):
        return lambda: runs.update([name])

    first = SchedulerService([("job", job("first"), None)], tick=0.1, standby_interval=0.1)
    second = SchedulerService([("job", job("second"), None)], tick=0.1, standby_interval=0.1)
    first.start()
    assert wait_for(lambda: first.is_leader, 5)
    second.start()
    assert wait_for(lambda: runs["first"] >= 5, 5)
    assert not second.is_leader
    assert runs["second"] == 0
    first.stop()  # graceful: the lock is released at once
    assert not first.is_leader
    started = time.monotonic()
    assert wait_for(lambda: runs["second"] >= 1, 5)
    assert time.monotonic() - started < 2
    second.stop()
    assert not second.is_leader


@pytest.mark.django_db(transaction=True)
def test_the_leaders_jobs_send_digests_and_reminders(lock_file, make_user, make_rule, category):
    make_rule(channels=["email"])
    make_rule(name="reminder", event_type="order.reminder", channels=["email"])
    users = [digest_user(make_user, category, f"d{i}", digest_hour=0) for i in range(3)]
    notify.trigger("order.shipped", {"order_id": "A1"}, recipients=users)
    service = SchedulerService(tick=0.2, standby_interval=0.1)
    try:
        service.start()
        # The items arrive after today's digest hour (00:00 UTC): made due by
        # moving them into yesterday, as if they had waited since then.
        assert wait_for(lambda: Delivery.objects.filter(status=Status.DIGEST).count() == 3, 10)
        Delivery.objects.filter(status=Status.DIGEST).update(
            updated_at=timezone.now() - timedelta(days=1)
        )
        notify.schedule(
            "order.reminder",
            {"order_id": "R1"},
            at=timezone.now() + timedelta(seconds=0.5),
            recipients=[make_user("rita")],  # no digests for her
        )
        assert wait_for(lambda: Digest.objects.filter(status=Status.SENT).count() == 3, 10)
        assert wait_for(
            lambda: Delivery.objects.filter(
                notification__event__type="order.reminder", status=Status.SENT
            ).exists(),
            10,
        )
    finally:
        service.stop()


# -- two processes on PostgreSQL, one killed ------------------------------------------------


def postgres_url() -> str:
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class SchedulerProcess:
    def __init__(self, name: str, env: dict[str, str], log_dir: Path):
        self.name = name
        self.log = log_dir / f"{name}.log"
        self._handle = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "notify",
                "scheduler",
                "--tick",
                "0.5",
                "--standby-interval",
                "1",
            ],
            cwd=ROOT,
            env=env,
            stdout=self._handle,
            stderr=subprocess.STDOUT,
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def is_leader(self) -> bool:
        return f"(pid {self.process.pid}) is the leader" in self.text()

    def ticks(self, job: str) -> int:
        return self.text().count(f"tick {job} (pid {self.process.pid})")

    def stop(self, sig=signal.SIGTERM, timeout: float = 15) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._handle.close()
        return self.process.returncode


def sandbox_records(var_dir: Path) -> list[dict]:
    path = var_dir / "sandbox" / "outbox.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_scheduler_processes_one_ticks_and_the_other_takes_over_after_kill_9(
    tmp_path, make_user, make_rule, category
):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (advisory lock shared by processes)")
    make_rule(channels=["email"])
    make_rule(
        name="reminder",
        event_type="order.reminder",
        channels=["email"],
        delay=timedelta(seconds=6),
    )
    first_batch = [digest_user(make_user, category, f"a{i}", digest_hour=0) for i in range(4)]
    second_batch = [digest_user(make_user, category, f"b{i}", digest_hour=0) for i in range(4)]
    notify.trigger("order.shipped", {"order_id": "A"}, recipients=first_batch)
    var_dir = tmp_path / "var"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"NOTIFY_EMAIL_BACKEND", "NOTIFY_EAGER", "NOTIFY_SANDBOX"}
    }
    env.update(
        DATABASE_URL=postgres_url(),
        NOTIFY_VAR_DIR=str(var_dir),
        NOTIFY_LOG_LEVEL="DEBUG",
        DJANGO_SECRET_KEY="scheduler-test",
        DJANGO_SETTINGS_MODULE="notify.project.settings",
    )
    leader = SchedulerProcess("one", env, tmp_path)
    standby = None
    try:
        assert wait_for(lambda: leader.is_leader, 20), leader.text()
        standby = SchedulerProcess("two", env, tmp_path)
        assert wait_for(lambda: "standing by" in standby.text(), 20), standby.text()
        rita = make_user("rita")  # no digests for her
        # The first batch: fanned out and held by the leader's dispatch job, then
        # made due (waiting since yesterday), then sent by its digest job.
        assert wait_for(lambda: Delivery.objects.filter(status=Status.DIGEST).count() == 4, 20)
        Delivery.objects.filter(status=Status.DIGEST).update(
            updated_at=timezone.now() - timedelta(days=1)
        )
        assert wait_for(lambda: Digest.objects.filter(status=Status.SENT).count() == 4, 20)
        # A reminder (6 s after its event) the leader fans out but will not live to send.
        reminder = notify.trigger("order.reminder", {"order_id": "R"}, recipients=[rita])
        assert wait_for(
            lambda: Event.objects.filter(pk=reminder.pk, status=Event.State.PROCESSED).exists(),
            20,
        )
        assert leader.ticks("send_due_digests") >= 1
        assert standby.ticks("send_due_digests") == 0
        assert standby.ticks("dispatch_due") == 0

        leader.stop(signal.SIGKILL)
        killed_at = time.monotonic()
        notify.trigger("order.shipped", {"order_id": "B"}, recipients=second_batch)
        assert wait_for(lambda: standby.is_leader, 30), standby.text()
        assert time.monotonic() - killed_at < 30
        assert wait_for(lambda: Delivery.objects.filter(status=Status.DIGEST).count() == 4, 20)
        Delivery.objects.filter(status=Status.DIGEST).update(
            updated_at=timezone.now() - timedelta(days=1)
        )
        assert wait_for(lambda: Digest.objects.filter(status=Status.SENT).count() == 8, 20)
        assert wait_for(
            lambda: Delivery.objects.filter(
                notification__event=reminder, status=Status.SENT
            ).exists(),
            20,
        )
        time.sleep(1.5)  # a few more ticks: nothing more may go out
        assert standby.stop() == 0  # graceful on SIGTERM
        assert "stopped" in standby.text()
    finally:
        leader.stop(signal.SIGKILL)
        if standby is not None:
            standby.stop(signal.SIGKILL)
    records = sandbox_records(var_dir)
    by_recipient = Counter(tuple(r["to"]) for r in records)
    for user in [*first_batch, *second_batch, rita]:
        assert by_recipient[(user.email,)] == 1, user
    subjects = Counter(r["subject"] for r in records)
    assert subjects == {"Your daily digest: 1 new notification": 8, "Your order R has shipped": 1}
    assert Digest.objects.filter(status=Status.SENT).count() == 8
