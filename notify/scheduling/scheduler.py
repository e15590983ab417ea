"""The scheduler: APScheduler ticks, the database says what is due.

Jobs hold no state of their own (APScheduler keeps its jobs in memory, no job
store): each tick asks the tables what is due, so a scheduler that was down
catches up when it returns, and claims make sure nothing runs twice.

Only the leader (see ``notify.runtime.leader``) runs jobs. The others stand by and try
the lock every ``SCHEDULER_STANDBY_INTERVAL`` seconds, so when the leader goes
away (stopped, crashed, killed) another takes over within that interval (on
PostgreSQL the server drops a dead leader's session, and its lock, as soon as
the connection closes; TCP keepalives bound it when a whole host vanishes).

The jobs:

* ``send_due_digests`` (every tick): digests at each user's local hour
  (``notify.scheduling.digests.send.build_and_send_due_digests``);
* ``dispatch_due`` (every tick): scheduled events, reminders, delayed sends,
  quiet-hours holds and retries that have come due, claimed and sent as a
  worker would (harmless beside a worker pool: claims are exclusive);
* ``wake_workflow_runs`` (every tick, with a broker): workflow runs that came
  due handed to Celery (``notify.advance_runs``); in-process, ``dispatch_due``
  advances them;
* ``purge_old_records`` (hourly): retention.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from datetime import timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from django.db import close_old_connections, connections
from django.utils import timezone

from notify import conf
from notify.models import Digest, Event
from notify.models.status import Status
from notify.runtime.handoff import uses_broker
from notify.runtime.leader import leader_lock
from notify.runtime.relay import relay
from notify.runtime.worker import run_until_idle
from notify.scheduling.digests.send import build_and_send_due_digests
from rules.dedup import prune

log = logging.getLogger("notify.scheduling.scheduler")


def purge_old_records() -> int:
    """Delete events (and with them notifications, deliveries, attempts) and
    digests past retention."""
    days = conf.get("RETENTION_DAYS")
    if not days:
        return 0
    cutoff = timezone.now() - timedelta(days=days)
    deleted, _ = Event.objects.filter(received_at__lt=cutoff, status=Event.State.PROCESSED).delete()
    digests, _ = Digest.objects.filter(created_at__lt=cutoff, status__in=Status.FINAL).delete()
    return deleted + digests + prune_dedup_records(timezone.now())


def prune_dedup_records(now) -> int:
    """Deduplication keys whose window has ended are no longer needed."""
    return prune(now)


def send_due_digests() -> object:
    """Build and send every digest that is due (see ``notify.scheduling.digests.send``)."""
    return build_and_send_due_digests()


def dispatch_due(max_rounds: int = 1000) -> int:
    """Fan out scheduled events and send deliveries that have come due.

    With a broker (``NOTIFY_BROKER_URL``) Celery workers do this work: the
    ``relay`` job hands it to them, and the scheduler sends nothing itself."""
    if uses_broker():
        return 0
    return run_until_idle(max_rounds=max_rounds)


def wake_workflow_runs() -> object:
    """With a broker, publish ``notify.advance_runs`` for the workflow runs that
    are due (without one, ``dispatch_due`` advances them in-process). The runs
    table is the truth: a lost message is published again at the next tick."""
    if not uses_broker():
        return 0
    from notify.runtime.tasks import publish_run_advances  # Celery only with a broker

    return publish_run_advances()


def relay_to_broker() -> object:
    """Re-publish work the broker lost or a dead worker left (see ``notify.runtime.relay``)."""
    return relay()


# (name, function, seconds between runs; None: every tick). Later features add their jobs here.
JOBS: list[tuple[str, Callable[[], object], float | None]] = [
    ("send_due_digests", send_due_digests, None),
    ("dispatch_due", dispatch_due, None),
    ("wake_workflow_runs", wake_workflow_runs, None),
    ("purge_old_records", purge_old_records, 3600.0),
    # With a broker: hand off again due work whose hand-off was lost (notify.runtime.relay).
    ("relay", relay_to_broker, float(conf.get("RELAY_INTERVAL"))),
]


def _run_job(name: str, func: Callable[[], object]) -> None:
    close_old_connections()
    try:
        result = func()
        log.debug("tick %s (pid %d): %s", name, os.getpid(), result)
    except Exception:
        log.exception("job %s failed; it runs again at its next tick", name)
    finally:
        # The executor's threads come and go: a connection left open by one
        # would linger until garbage collection. One connection per tick is cheap.
        connections.close_all()


class SchedulerService:
    """Stand by until leader, then run the jobs; give way if the lock is lost.

    ``tick`` (seconds between runs of the every-tick jobs) and
    ``standby_interval`` (seconds between two tries for the lock, and between
    two checks that the leader still holds it) default to the settings
    ``SCHEDULER_TICK`` and ``SCHEDULER_STANDBY_INTERVAL``.
    """

    def __init__(
        self,
        jobs: list[tuple[str, Callable[[], object], float | None]] | None = None,
        *,
        tick: float | None = None,
        standby_interval: float | None = None,
    ):
        self.jobs = jobs if jobs is not None else JOBS
        self.tick = float(tick if tick is not None else conf.get("SCHEDULER_TICK"))
        self.standby_interval = float(
            standby_interval
            if standby_interval is not None
            else conf.get("SCHEDULER_STANDBY_INTERVAL")
        )
        if self.tick <= 0 or self.standby_interval <= 0:
            raise ValueError("the scheduler's tick and standby interval must be positive")
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

    def stop(self, timeout: float = 30.0) -> None:
        """Stop ticking, let a running job finish (up to ``timeout``), release the lock."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("scheduler: a job is still running after %.0f s; leaving it", timeout)

    def run_forever(self) -> None:
        log.info(
            "scheduler (pid %d) standing by: tick %.1f s, lock retried every %.1f s",
            os.getpid(),
            self.tick,
            self.standby_interval,
        )
        try:
            while not self._stop.is_set():
                try:
                    if not self.is_leader and self.lock.acquire():
                        self._become_leader()
                    elif self.is_leader and not self.lock.still_held():
                        log.warning("scheduler lost the leader lock; standing by")
                        self._step_down()
                except Exception:  # never let the loop die: the next try may succeed
                    log.exception("scheduler: leader check failed")
                self._stop.wait(self.standby_interval)
        finally:
            self._step_down()
            log.info("scheduler (pid %d) stopped", os.getpid())

    def _become_leader(self) -> None:
        log.info("scheduler (pid %d) is the leader", os.getpid())
        scheduler = BackgroundScheduler(
            timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1}
        )
        for name, func, seconds in self.jobs:
            scheduler.add_job(
                _run_job,
                "interval",
                seconds=self.tick if seconds is None else seconds,
                args=[name, func],
                id=name,
                next_run_time=timezone.now(),  # catch up at once after a takeover
                misfire_grace_time=None,
            )
        scheduler.start()
        self._scheduler = scheduler
        self.is_leader = True

    def _step_down(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)  # a running job finishes first
            self._scheduler = None
        self.lock.release()  # (a standby's connection too)
        self.is_leader = False
