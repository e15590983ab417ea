"""The ``NOTIFY`` setting: one dict, documented defaults, read through ``get``.

Every key can be overridden in ``settings.NOTIFY``; ``notify/project/settings.py`` feeds
the common ones from environment variables. Nothing else in the code base reads
``settings.NOTIFY`` directly, so this module is the one place that says what a
missing key means.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # alias -> {"BACKEND": dotted path of a channels.base.Channel, "OPTIONS": {...}}
    "CHANNELS": {
        "email": {"BACKEND": "channels.email.EmailChannel", "OPTIONS": {}},
        "inapp": {"BACKEND": "channels.inapp.InAppChannel", "OPTIONS": {}},
    },
    # Channels a rule gets when it names none.
    "DEFAULT_CHANNELS": ["email", "inapp"],
    # Where the default message templates live (one folder per message).
    "TEMPLATE_DIRS": [],
    "DEFAULT_LOCALE": "en",
    # Untrusted templates and conditions are stopped past these bounds.
    "RENDER_MAX_OUTPUT": 256 * 1024,  # characters per rendered part
    "RENDER_TIMEOUT": 0.5,  # seconds per message
    # Fan-out: recipients per chunk (one read per table and one insert per table).
    "FANOUT_CHUNK_SIZE": 2000,
    # Worker: deliveries claimed per batch, how long a claim lives, poll interval.
    "WORKER_BATCH_SIZE": 50,
    "WORKER_THREADS": 2,
    "CLAIM_TTL": 120.0,
    "POLL_INTERVAL": 0.5,
    # Retries: attempts in all, first delay, growth factor, cap, jitter (+/- share).
    "MAX_ATTEMPTS": 10,
    "RETRY_BASE_DELAY": 120.0,
    "RETRY_FACTOR": 2.0,
    "RETRY_MAX_DELAY": 6 * 3600.0,
    "RETRY_JITTER": 0.2,
    # How often each process checks whether rules or templates changed (seconds).
    "CONFIG_CHECK_INTERVAL": 1.0,
    # HTTP API.
    "API_MAX_BODY_BYTES": 256 * 1024,
    "API_MAX_PAYLOAD_BYTES": 64 * 1024,
    # Process events in the committing thread instead of a worker (tests, scripts).
    "EAGER": False,
    # A user's ``User.email`` counts as a verified email address when the user has
    # no email contact point of their own.
    "USER_EMAIL_IS_CONTACT": True,
    # The sandbox providers record here; the /dev/outbox/ page reads it.
    "SANDBOX": False,
    "SANDBOX_DIR": None,
    # Absolute base URL used in links inside messages.
    "SITE_URL": "http://127.0.0.1:8000",
    # Events, notifications and deliveries older than this are deleted (days; 0 = keep).
    "RETENTION_DAYS": 90,
    # What a signal binding calls to store its event (rules must not import the
    # pipeline, so it is named here).
    "BINDING_TRIGGER": "notify.intake.trigger.trigger",
    # The view behind a rule's "Preview / dry run" button in admin.
    "RULE_PREVIEW_VIEW": "notify.admin.preview.rule_preview",
    # Scheduler leader lock file (SQLite; PostgreSQL uses an advisory lock).
    "SCHEDULER_LOCK_FILE": None,
    # Seconds between two runs of the scheduler's due-work jobs (digests,
    # reminders, delayed sends), and between two tries of a standby scheduler
    # for the leader lock (the bound on a takeover).
    "SCHEDULER_TICK": 60.0,
    "SCHEDULER_STANDBY_INTERVAL": 5.0,
    # Scale-out (notify.runtime.handoff, notify.celery, notify.runtime.relay). With a broker URL
    # (amqp://... RabbitMQ, redis://... Redis), fan-out and deliveries are handed
    # to Celery workers after commit instead of the in-process pool.
    "BROKER_URL": None,
    "CELERY_QUEUE": "notify",
    # Redis only: seconds before a message a worker took but never acknowledged
    # is given to another worker. Must exceed the longest task (CLAIM_TTL, the
    # tasks' time limit) and the longest countdown (BROKER_MAX_COUNTDOWN).
    "BROKER_VISIBILITY_TIMEOUT": 600.0,
    # Retries due within this many seconds go back to the broker with a
    # countdown; later ones are left to the relay (no long ETAs in the broker).
    "BROKER_MAX_COUNTDOWN": 60.0,
    # After a failed publish, hand-offs are skipped (left to the relay) for this
    # many seconds, so requests do not wait on a broker that is down.
    "BROKER_BACKOFF": 5.0,
    # The relay (a scheduler job): seconds between runs, and how long due work
    # may wait for its hand-off before the relay hands it off again.
    "RELAY_INTERVAL": 2.0,
    "RELAY_GRACE": 15.0,
    # ... and how long while the queue holds messages (the work may be among
    # them: a backlog is not a lost hand-off).
    "RELAY_GRACE_QUEUED": 300.0,
    # Most rows one relay run hands off (the next run takes the rest).
    "RELAY_MAX_ROWS": 20_000,
    # Processors every event passes before the rules, in order: dotted paths, or
    # {"CLASS": dotted path, "OPTIONS": {...}} (notify.fanout.middleware).
    "EVENT_MIDDLEWARE": [],
    # /metrics answers "Authorization: Bearer <METRICS_TOKEN>" (None: no token),
    # or a request from an address in METRICS_ALLOWED_IPS (addresses or
    # networks, e.g. "10.0.0.0/8"; the socket's peer, never X-Forwarded-For).
    "METRICS_TOKEN": None,
    "METRICS_ALLOWED_IPS": ["127.0.0.1"],
    # /readyz fails its "outbox" check when the oldest due delivery or event has
    # waited longer than this (seconds).
    "READINESS_MAX_OUTBOX_LAG": 300.0,
}


def get(key: str) -> Any:
    """Return ``settings.NOTIFY[key]``, or its documented default."""
    user = getattr(settings, "NOTIFY", {})
    if key in user:
        return user[key]
    return DEFAULTS[key]
