"""The ``NOTIFY`` setting: one dict, one table of documented defaults, read through ``get``.

Every key of :data:`SETTINGS` can be set in ``settings.NOTIFY``; a key that is
not in the table is refused at start-up by the system check ``notify.E007``.
``notify/project/settings.py`` feeds keys from environment variables and leaves a
key out when its variable is unset, so the default below applies. Nothing else in
the code base reads ``settings.NOTIFY`` directly: this module is the one place
that says what a missing key means.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from django.conf import settings


@dataclass(frozen=True, slots=True)
class Setting:
    """One key of ``NOTIFY``: its default and what it means, in one line."""

    default: Any
    doc: str


SETTINGS: Mapping[str, Setting] = MappingProxyType(
    {
        # -- channels and messages ---------------------------------------------------
        "CHANNELS": Setting(
            {
                "email": {"BACKEND": "channels.email.EmailChannel", "OPTIONS": {}},
                "inapp": {"BACKEND": "channels.inapp.InAppChannel", "OPTIONS": {}},
            },
            "alias -> {'BACKEND': dotted path of a channels.base.Channel, 'OPTIONS': {...}, "
            "optional 'CONCURRENCY': sends of it a batch has in flight at once}.",
        ),
        "DEFAULT_CHANNELS": Setting(
            ["email", "inapp"], "Channel aliases a rule gets when it names none."
        ),
        "TEMPLATE_DIRS": Setting(
            [], "Folders of the default message templates (one folder per message)."
        ),
        "DEFAULT_LOCALE": Setting("en", "Locale used when a recipient has none."),
        "RENDER_MAX_OUTPUT": Setting(
            256 * 1024, "Untrusted templates are stopped past this many characters per part."
        ),
        "RENDER_TIMEOUT": Setting(
            0.5, "Untrusted templates and conditions are stopped past this many seconds."
        ),
        "SITE_URL": Setting("http://127.0.0.1:8000", "Absolute base URL of links in messages."),
        "EMAIL_LAYOUT": Setting(
            "default",
            "The layout every email renders into: a folder of templates/layouts/ (or an "
            "admin-edited layout of that name); a layout marked active in admin wins.",
        ),
        "EMAIL_BRAND_NAME": Setting("notify", "The brand name in the email layout's header."),
        "EMAIL_BRAND_LOGO_URL": Setting(
            "", "An absolute https URL of the logo in the email layout's header (none if empty)."
        ),
        "EMAIL_BRAND_COLOR": Setting(
            "#3b5bdb", "The email layout's header and link colour, #rgb or #rrggbb."
        ),
        "UNSUBSCRIBE_MAILTO": Setting(
            None,
            "An address that takes unsubscribe requests by mail: emails then carry "
            "<mailto:ADDRESS?subject=unsubscribe-TOKEN> in List-Unsubscribe as well.",
        ),
        "USER_EMAIL_IS_CONTACT": Setting(
            True,
            "User.email counts as a verified address when the user has no email contact point.",
        ),
        "SANDBOX": Setting(
            False, "Sandbox providers record what would be sent (shown on /dev/outbox/)."
        ),
        "SANDBOX_DIR": Setting(None, "Folder where the sandbox providers record."),
        # -- fan-out and workers -----------------------------------------------------
        "FANOUT_CHUNK_SIZE": Setting(
            2000, "Recipients per fan-out chunk (one read and one insert per table)."
        ),
        "WORKER_BATCH_SIZE": Setting(
            10,
            "Deliveries a worker claims per batch (each is recorded as soon as it is sent; "
            "small batches share slow providers' work among all threads).",
        ),
        "DIGEST_BATCH_SIZE": Setting(
            50,
            "Digests the scheduler claims and sends per batch (one thread, through the send "
            "loop: up to the channel's CONCURRENCY in flight, capped by SENDS_IN_FLIGHT; "
            "recorded at each tick of the send loop; a batch shares its reads and the "
            "channel's sessions; a leader killed mid-batch costs the rest of its batch an "
            "attempt and may send again the digests it had in flight).",
        ),
        "WORKER_BATCH_SECONDS": Setting(
            60.0,
            "Longest a batch may run: past it no new send starts, the rest goes back "
            "to pending for any worker, and its claim is no longer extended.",
        ),
        "WORKFLOW_BATCH_SIZE": Setting(
            500, "Workflow runs a runner claims and advances per batch (notify.workflows)."
        ),
        "WORKFLOW_WORKING_HOURS": Setting(
            {"days": [0, 1, 2, 3, 4], "from": "09:00", "until": "17:00"},
            "A workflow delay 'until the user's next working hours': weekdays (0 = Monday) "
            "and wall-clock times in each user's time zone.",
        ),
        "WORKER_THREADS": Setting(2, "Threads of the in-process worker pool."),
        "SENDS_IN_FLIGHT": Setting(
            1,
            "Most sends one batch has in flight at once (notify.delivery.inflight): caps "
            "each channel's CONCURRENCY (its entry in CHANNELS; default 8 for email over "
            "SMTP or an ESP, 32 for HTTP webhooks, 1 otherwise). 1 by default: a worker "
            "killed mid-batch (kill -9, or a delivery that kills its process) may have sent "
            "up to this many per thread without recording them, and they are sent again, "
            "so only at 1 are a poison's batch mates sent exactly once. Raise it (e.g. 64, "
            "with WORKER_BATCH_SIZE) for slow providers, if receivers de-duplicate by "
            "X-Notify-Delivery.",
        ),
        "WEB_THREADS": Setting(
            8, "Threads serving requests in each web process (notify.project.asgi)."
        ),
        "CLAIM_TTL": Setting(
            120.0,
            "Seconds a claim lives unless its worker extends it: a live worker's "
            "heartbeat extends it every quarter of this, a dead worker's expires.",
        ),
        "POLL_INTERVAL": Setting(0.5, "Seconds between two polls of an idle worker."),
        "EAGER": Setting(
            False, "Process events in the committing thread instead of a worker (tests, scripts)."
        ),
        "EVENT_MIDDLEWARE": Setting(
            [],
            "Processors every event passes before the rules: dotted paths or "
            "{'CLASS': ..., 'OPTIONS': {...}}.",
        ),
        # -- retries -----------------------------------------------------------------
        "MAX_ATTEMPTS": Setting(10, "Attempts in all before a delivery is dead."),
        "MAX_WORKER_LOSSES": Setting(
            3,
            "Times a delivery may be in flight when its worker dies (killed, or crashed "
            "on it) before it is dead with 'worker lost'; after the first it is sent alone.",
        ),
        "RETRY_BASE_DELAY": Setting(120.0, "Seconds before the first retry."),
        "RETRY_FACTOR": Setting(2.0, "Growth factor of the delay between retries."),
        "RETRY_MAX_DELAY": Setting(6 * 3600.0, "Longest delay between two retries (seconds)."),
        "RETRY_JITTER": Setting(0.2, "Random share (+/-) added to each retry delay."),
        "MAX_FREE_RATE_LIMITS": Setting(
            5,
            "Provider 429 answers in a row a delivery may get without using an attempt "
            "(it is tried again after Retry-After); the next one counts as an attempt, "
            "with backoff. Our own pacing and an open circuit breaker never count.",
        ),
        # -- rules, bindings, admin --------------------------------------------------
        "CONFIG_CHECK_INTERVAL": Setting(
            1.0, "Seconds between two checks whether rules or templates changed."
        ),
        "BINDING_TRIGGER": Setting(
            "notify.intake.trigger.trigger",
            "What a signal binding calls to store its event (rules must not import notify).",
        ),
        "RULE_PREVIEW_VIEW": Setting(
            "notify.admin.preview.rule_preview",
            "The view behind a rule's 'Preview / dry run' button in admin.",
        ),
        # -- HTTP API ----------------------------------------------------------------
        "API_MAX_BODY_BYTES": Setting(256 * 1024, "Largest request body the events API reads."),
        "API_MAX_BATCH_BODY_BYTES": Setting(
            2 * 1024 * 1024,
            "Largest body POST /api/v1/events/batch reads (below Django's "
            "DATA_UPLOAD_MAX_MEMORY_SIZE, 2.5 MB by default).",
        ),
        "API_MAX_PAYLOAD_BYTES": Setting(64 * 1024, "Largest event payload (as JSON) accepted."),
        "API_KEY_CACHE_SECONDS": Setting(
            5.0,
            "Seconds a web process reuses an API key it looked up (notify.api.auth): a key "
            "revoked elsewhere (another process, the database) is refused within this "
            "delay, at once in the process that revoked it. 0 looks the key up on every request.",
        ),
        # -- the embeddable bell (notify.api.feed, notify.inbox.tokens) -------------
        "BELL_ALLOWED_ORIGINS": Setting(
            [],
            "Origins (scheme://host[:port]) whose pages may call the bell's feed API "
            "with a signed token (CORS); empty: same origin only.",
        ),
        "BELL_TOKEN_MAX_AGE": Setting(
            12 * 3600, "Seconds a bell token (notify.inbox.tokens.issue_token) stays valid."
        ),
        # -- scheduler and retention -------------------------------------------------
        "RETENTION_DAYS": Setting(
            90, "Events, notifications and deliveries older than this are deleted (0: keep)."
        ),
        "SCHEDULER_LOCK_FILE": Setting(
            None, "Scheduler leader lock file (SQLite; PostgreSQL uses an advisory lock)."
        ),
        "SCHEDULER_TICK": Setting(
            60.0, "Seconds between runs of the due-work jobs (digests, reminders, delayed sends)."
        ),
        "SCHEDULER_STANDBY_INTERVAL": Setting(
            5.0, "Seconds between a standby scheduler's tries for the leader lock."
        ),
        # -- scale-out (notify.runtime.handoff, notify.celery, notify.runtime.relay) -
        "BROKER_URL": Setting(
            None, "Celery broker (amqp://... or redis://...); None: the in-process pool."
        ),
        "CELERY_QUEUE": Setting("notify", "Celery queue of fan-out and delivery tasks."),
        "BROKER_VISIBILITY_TIMEOUT": Setting(
            600.0,
            "Redis only: seconds before an unacknowledged message goes to another worker "
            "(must exceed CLAIM_TTL and BROKER_MAX_COUNTDOWN).",
        ),
        "BROKER_MAX_COUNTDOWN": Setting(
            60.0, "Retries due within this many seconds go to the broker; later ones to the relay."
        ),
        "BROKER_BACKOFF": Setting(
            5.0, "Seconds hand-offs are left to the relay after a failed publish."
        ),
        "RELAY_INTERVAL": Setting(2.0, "Seconds between two runs of the relay."),
        "RELAY_GRACE": Setting(
            15.0, "Seconds due work may wait for its hand-off before the relay hands it off."
        ),
        "RELAY_GRACE_QUEUED": Setting(
            300.0, "The same while the queue holds messages (a backlog is not a lost hand-off)."
        ),
        "RELAY_MAX_ROWS": Setting(20_000, "Most rows one relay run hands off."),
        # -- operating it ------------------------------------------------------------
        "METRICS_TOKEN": Setting(
            None, "/metrics answers 'Authorization: Bearer <token>' (None: no token)."
        ),
        "METRICS_ALLOWED_IPS": Setting(
            ["127.0.0.1"], "/metrics answers these peer addresses or networks (never forwarded)."
        ),
        "READINESS_MAX_OUTBOX_LAG": Setting(
            300.0, "/readyz fails when due work has waited longer than this (seconds)."
        ),
        "TRUSTED_PROXIES": Setting(
            [], "Proxies (addresses or networks) whose X-Forwarded-For names the client."
        ),
        # -- rate limits ("N/s", "N/m", "N/15m", "N/h"; None turns one off) -------------
        "API_RATE_LIMIT_PER_KEY": Setting("600/m", "Events API requests per API key."),
        "API_RATE_LIMIT_PER_ADDRESS": Setting(
            "1200/m", "Events API requests per client address, counted before authentication."
        ),
        "LOGIN_FAILURES_PER_USERNAME": Setting("10/15m", "Failed sign-ins per username."),
        "LOGIN_FAILURES_PER_ADDRESS": Setting("30/15m", "Failed sign-ins per client address."),
        "PAGE_RATE_LIMIT_PER_ADDRESS": Setting(
            "30/m", "Verification, unsubscribe and send-test requests per client address."
        ),
    }
)

# The defaults alone, for code and tests that compare against them.
DEFAULTS: Mapping[str, Any] = MappingProxyType({key: s.default for key, s in SETTINGS.items()})


def get(key: str) -> Any:
    """Return ``settings.NOTIFY[key]``, or its documented default.

    An unknown key is a programming error (``KeyError``); an unknown key in
    ``settings.NOTIFY`` is reported by the system check ``notify.E007``.
    """
    user = getattr(settings, "NOTIFY", {})
    if key in user:
        return user[key]
    return SETTINGS[key].default
