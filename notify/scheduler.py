"""The scheduler: APScheduler ticks, the database says what is due.

Jobs hold no state of their own: each tick asks the tables what is due, so a
scheduler that was down catches up when it returns and nothing runs twice.
Only the leader (see ``notify.leader``) runs jobs; the others wait and take
over within ``STANDBY_INTERVAL`` seconds when the leader goes away.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from django.db import close_old_connections
from django.utils import timezone

from . import conf
from .leader import leader_lock

log = logging.getLogger("notify.scheduler")

STANDBY_INTERVAL = 5.0


def purge_old_records() -> int:
    """Delete events (and with them notifications, deliveries, attempts) past retention."""
    from .models import Event

    days = conf.get("RETENTION_DAYS")
    if not days:
        return 0
    cutoff = timezone.now() - timedelta(days=days)
    deleted, _ = Event.objects.filter(received_at__lt=cutoff, status=Event.State.PROCESSED).delete()
    return deleted


# (name, function, seconds between runs). Later features add their jobs here.
JOBS: list[tuple[str, Callable[[], object], float]] = [
    ("purge_old_records", purge_old_records, 3600.0),
]


def _run_job(name: str, func: Callable[[], object]) -> None:
    close_old_connections()
    try:
        result = func()
        log.debug("job %s done: %s", name, result)
    except Exception:
        log.exception("job %s failed; it runs again at its next tick", name)
    finally:
        close_old_connections()


class SchedulerService:
    """Stand by until leader, then run the jobs; give way if the lock is lost."""

    def __init__(self, jobs: list[tuple[str, Callable[[], object], float]] | None = None):
        self.jobs = jobs if jobs is not None else JOBS
        self.lock = leader_lock(conf.get("SCHEDULER_LOCK_FILE"))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._scheduler: BackgroundScheduler | None = None
        self.is_leader = False

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.run_forever, name="notify-scheduler", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run_forever(self) -> None:
        try:
            while not self._stop.is_set():
                if not self.is_leader and self.lock.acquire():
                    self._become_leader()
                elif self.is_leader and not self.lock.still_held():
                    log.warning("scheduler lost the leader lock; standing by")
                    self._step_down()
                self._stop.wait(STANDBY_INTERVAL)
        finally:
            self._step_down()

    def _become_leader(self) -> None:
        log.info("scheduler is the leader")
        scheduler = BackgroundScheduler(
            timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1}
        )
        for name, func, seconds in self.jobs:
            scheduler.add_job(
                _run_job,
                "interval",
                seconds=seconds,
                args=[name, func],
                id=name,
                next_run_time=timezone.now(),
                misfire_grace_time=None,
            )
        scheduler.start()
        self._scheduler = scheduler
        self.is_leader = True

    def _step_down(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        if self.is_leader:
            self.lock.release()
        self.is_leader = False
