"""The in-process worker pool: threads that fan out events and send deliveries.

Each thread loops: claim due events and fan them out; claim a batch of due
deliveries and ``deliver`` it; sleep until woken (a commit in this process) or
until the poll interval passes (work committed by another process). Stopping
lets every thread finish the send it is in and puts the rest of its batch back;
a thread killed mid-batch leaves claims that expire (no heartbeat extends
them) and are sorted out by the next claim (``notify.outbox.rows.reap_lost``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from django.db import connection, connections

from notify import conf
from notify.delivery.inflight import close_pools
from notify.delivery.send import deliver
from notify.fanout.pipeline import process_event
from notify.outbox.rows import claim_due_deliveries, claim_events
from notify.workflows.runner import advance_due_runs

log = logging.getLogger("notify.runtime.worker")

_wakeup = threading.Condition()
_generation = 0
# After a wake-up from idle, a thread waits this long before it claims, so that a
# burst of commits (an API under load: one per request) is claimed and marked in
# one round instead of one round per event; each round is a few write
# transactions, which on SQLite queue behind the requests' own writes.
WAKE_GATHER = 0.02


def wake(everyone: bool = False) -> None:
    """Tell this process's worker threads there is new work.

    One thread is enough for a commit (a busy thread sees the new generation
    and goes round again anyway): waking them all made every idle thread run
    an empty claim per commit, which cost the API's latency in ``notify run``.
    Stopping wakes them all."""
    global _generation
    with _wakeup:
        _generation += 1
        if everyone:
            _wakeup.notify_all()
        else:
            _wakeup.notify()


def drop_broken_connections() -> None:
    """Close this thread's database connections that failed (the database
    restarted, a network cut) so the next round connects anew; keep the others.

    Not ``close_old_connections``: a pool thread lives as long as its process,
    so its connection is worth keeping whatever ``CONN_MAX_AGE`` says (0 by
    default, for web requests, which under ASGI each run in a thread of their
    own); closing it every round cost a connection per batch."""
    for conn in connections.all(initialized_only=True):
        if conn.connection is not None and conn.errors_occurred:
            if conn.is_usable():
                conn.errors_occurred = False
            else:
                conn.close()


def run_once(batch_size: int | None = None, stopping: Callable[[], bool] | None = None) -> int:
    """Fan out due events, advance one batch of due workflow runs and send one
    batch of due deliveries; return work done. ``stopping``: the batch starts
    no send once it is true (the pool stops)."""
    done = 0
    ttl = conf.get("CLAIM_TTL")
    for event_id in claim_events(limit=10, ttl=ttl):
        process_event(event_id)
        done += 1
    # Workflow runs due (their channel steps write deliveries due now: sent below).
    done += advance_due_runs(ttl=ttl).runs
    ids, token = claim_due_deliveries(limit=batch_size or conf.get("WORKER_BATCH_SIZE"), ttl=ttl)
    if ids:
        stats = deliver(ids, token, stopping=stopping, grow=True)
        done += len(ids) + stats.grown
    return done


def run_until_idle(max_rounds: int = 10_000) -> int:
    """Run ``run_once`` until nothing is due (tests, EAGER mode, scripts); the
    provider sessions it opened are closed at the end (a worker thread keeps
    them for its life instead)."""
    total = 0
    try:
        for _ in range(max_rounds):
            done = run_once()
            if not done:
                break
            total += done
    finally:
        close_pools()
    return total


def warn_if_pool_too_small(threads: int) -> None:
    """A PostgreSQL connection pool smaller than this process's threads need
    starves the lease heartbeats (each busy worker thread's heartbeat borrows a
    connection): claims would expire under a live worker. Say so at start."""
    from django.db import connection

    pool = (connection.settings_dict.get("OPTIONS") or {}).get("pool")
    if connection.vendor != "postgresql" or not isinstance(pool, dict):
        return
    web = conf.get("WEB_THREADS")
    needed = 2 * threads + web + 2
    if pool.get("max_size", 0) < needed:
        log.error(
            "the database pool holds at most %s connections, but %d worker threads "
            "(and their lease heartbeats), %d web threads and the scheduler need %d: "
            "set NOTIFY_DB_POOL_MAX_SIZE to %d or more",
            pool.get("max_size"),
            threads,
            web,
            needed,
            needed,
        )


class WorkerPool:
    def __init__(self, threads: int | None = None, poll_interval: float | None = None):
        self.size = threads or conf.get("WORKER_THREADS")
        self.poll_interval = (
            poll_interval if poll_interval is not None else conf.get("POLL_INTERVAL")
        )
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        warn_if_pool_too_small(self.size)
        for number in range(self.size):
            thread = threading.Thread(
                target=self._loop, name=f"notify-worker-{number}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        log.info("worker pool started with %d threads", self.size)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        wake(everyone=True)
        for thread in self._threads:
            thread.join(timeout)
        log.info("worker pool stopped")

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                drop_broken_connections()
                generation = _generation
                try:
                    done = run_once(stopping=self._stop.is_set)
                except Exception:
                    log.exception("worker round failed; retrying after the poll interval")
                    done = 0
                if done:
                    continue
                woken = False
                with _wakeup:
                    if generation == _generation and not self._stop.is_set():
                        woken = _wakeup.wait(self.poll_interval)
                if woken:
                    self._stop.wait(WAKE_GATHER)
        finally:
            close_pools()  # this thread's provider sessions (notify.delivery.inflight)
            connection.close()
