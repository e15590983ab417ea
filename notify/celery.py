"""The Celery app: ``celery -A notify worker -Q notify`` runs notify's tasks.

``-A notify`` finds this module (Celery looks for ``notify.celery`` and its
``app``). The broker is ``NOTIFY["BROKER_URL"]`` (env ``NOTIFY_BROKER_URL``):
RabbitMQ (``amqp://``) or Redis (``redis://``). The tasks are thin
(``notify.runtime.tasks``): only ids cross the queue, and each task claims in the
database what it names before doing anything, so the database outbox stays
the truth and a message delivered twice does the work once.

The settings below follow Celery's own reliability guidance ("Should I use
retry or acks_late?", "Redis caveats", "Prefetch limits" in its docs); each
says why it is set.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery, signals
from django.db import close_old_connections
from kombu import pools

from notify import conf
from notify.runtime.heap import freeze_startup_heap

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "notify.project.settings")

log = logging.getLogger("notify.celery")

app = Celery("notify")


def is_redis(url: str | None) -> bool:
    return bool(url) and url.split(":", 1)[0] in ("redis", "rediss", "redis+socket")


def celery_config() -> dict[str, Any]:
    """Celery's settings, derived from ``NOTIFY`` (read when the app is configured)."""
    url = conf.get("BROKER_URL")
    queue = conf.get("CELERY_QUEUE")
    claim_ttl = float(conf.get("CLAIM_TTL"))
    batch_seconds = float(conf.get("WORKER_BATCH_SECONDS"))
    visibility = float(conf.get("BROKER_VISIBILITY_TIMEOUT"))
    if is_redis(url):
        transport_options = {
            # A message taken but not acknowledged (its worker was killed) goes
            # back to the queue after this long. It must outlast every task (the
            # time limit below is a batch's longest run) and every countdown (capped at
            # BROKER_MAX_COUNTDOWN, see notify.runtime.tasks.countdown_for), or a healthy
            # message would be handed to a second worker.
            "visibility_timeout": visibility,
            # Look for unacknowledged messages to restore every 10 s, not every 100.
            "unacked_restore_interval": 10,
            "unacked_restore_throttle": 1,
            # Fail a publish fast when Redis is down (the relay hands it off
            # later), instead of blocking the committing request.
            "socket_connect_timeout": 2,
            "socket_timeout": 10,
            "retry_on_timeout": True,
        }
    else:
        transport_options = {
            # RabbitMQ: a publish returns only once the broker has the message
            # (publisher confirms); a refused publish raises instead of
            # vanishing. Without it a message can be lost after "sent".
            "confirm_publish": True,
        }
    return {
        "broker_url": url,
        "broker_transport_options": transport_options,
        # Workers keep retrying a lost broker forever (and at start-up);
        # producers give up quickly (task_publish_retry_policy) and rely on the relay.
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "broker_connection_timeout": 4,
        "broker_heartbeat": 30,
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        # Only ids, as JSON: nothing pickled, nothing that goes stale in the queue.
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_backend": None,
        "task_ignore_result": True,
        "task_default_queue": queue,
        "task_default_exchange": queue,
        "task_default_routing_key": queue,
        # Persist messages (RabbitMQ durable queues, delivery mode 2).
        "task_default_delivery_mode": "persistent",
        # Acknowledge a message after its task ran, not when it was received:
        # a worker killed mid-task leaves the message to be delivered again.
        # Safe because every task starts by claiming its rows (idempotent).
        "task_acks_late": True,
        # ... and when a pool process dies under a task (kill -9, segfault,
        # out of memory), requeue the message instead of acknowledging it.
        # Redeliveries are bounded by the database, not the broker: each claim
        # is an attempt, and a delivery whose claim expired at its last
        # attempt ends dead (notify.outbox.rows.claim_due_deliveries), so a message
        # that keeps killing its worker stops after MAX_ATTEMPTS.
        "task_reject_on_worker_lost": True,
        # A task that raised is finished (its outcome is on record): acknowledge.
        "task_acks_on_failure_or_timeout": True,
        # Reserve one message per pool process at a time: a killed worker
        # holds few unacknowledged messages, and a long batch does not keep
        # others waiting behind it on a busy worker.
        "worker_prefetch_multiplier": 1,
        # A task never runs on past its batches: a batch starts no send after
        # WORKER_BATCH_SECONDS and its last send ends within its channel's
        # time-out, under a claim TTL (notify.W030); a task may run a suspect's
        # batch of one before the others (notify.runtime.tasks). Its heartbeat
        # keeps the claim meanwhile (notify.outbox.lease).
        # (Hard limit only, prefork pool: a soft limit's exception would be
        # taken for a provider error by dispatch's catch-all.)
        "task_time_limit": batch_seconds + 2 * claim_ttl,
        # On a lost broker connection let running tasks finish: their claims
        # keep the database right, and the redelivered message finds nothing
        # left to claim. (Cancelling would abandon half-sent batches.)
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        # Pool processes are recycled now and then (leaks in providers' SDKs).
        "worker_max_tasks_per_child": 10_000,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
    }


app.config_from_object(celery_config())
app.autodiscover_tasks(["notify.runtime"])  # notify.runtime.tasks


def configure() -> None:
    """Apply ``NOTIFY``'s current broker settings if they changed (tests change
    them per test; a process configured at start-up never does)."""
    wanted = celery_config()
    current = app.conf
    same_broker = (
        current.broker_url == wanted["broker_url"]
        and current.broker_transport_options == wanted["broker_transport_options"]
    )
    if same_broker and current.task_default_queue == wanted["task_default_queue"]:
        return
    app.conf.update(wanted)
    if not same_broker:
        # Drop the pooled connections to the old broker (kombu keeps them per
        # URL, process-wide), as Celery does after a fork.
        pools.reset()
        app._pool = None
        if "amqp" in app.__dict__:
            app.amqp._producer_pool = None


# Database connections: a task is a request. Before and after each one, drop
# connections that are broken or past CONN_MAX_AGE (CONN_HEALTH_CHECKS pings a
# reused one first), so a worker survives a database restart by itself.
@signals.task_prerun.connect
def _connections_before_task(**kwargs: Any) -> None:
    close_old_connections()


@signals.task_postrun.connect
def _connections_after_task(**kwargs: Any) -> None:
    close_old_connections()


# The start-up heap out of the cyclic collector's scans (notify.runtime.heap):
# in the main process once it is set up (the whole worker with the solo and
# threads pools; before the fork with prefork, so the children share those
# pages too), then in each prefork child for what it added after the fork.
@signals.worker_init.connect
@signals.worker_process_init.connect
def _freeze_heap(**kwargs: Any) -> None:
    freeze_startup_heap()
