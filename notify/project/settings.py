"""Settings for the notify service.

Everything is read from environment variables with embedded defaults, so that
``make run`` works on a fresh machine (SQLite in ``var/``, sandbox providers)
and production is configured without editing this file. See the README,
"Configuration", for the list.

The defaults of the ``NOTIFY`` dict live in one table, ``notify.conf.SETTINGS``:
this module only feeds environment variables into ``NOTIFY`` and leaves a key
out when its variable is unset. Importing it touches no file: ``var/`` is
created when the SQLite database is first opened (``notify.project.sqlite3``)
and the embedded default's secret key is written by ``notify run``.
"""

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dj_database_url

BASE_DIR = Path(__file__).resolve().parents[2]
VAR_DIR = Path(os.environ.get("NOTIFY_VAR_DIR", BASE_DIR / "var"))


def parse_bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def parse_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def parse_optional(value: str) -> str | None:
    return value or None


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else parse_bool(value)


def env_list(name: str, default: str = "") -> list[str]:
    return parse_list(os.environ.get(name, default))


DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

# HTTPS in production (README, "Production checklist"): all off by default, as
# the embedded default serves plain http on 127.0.0.1; with the documented
# production values `manage.py check --deploy` prints no warning.
# DJANGO_SECURE_HSTS_SECONDS=31536000 (with _INCLUDE_SUBDOMAINS and _PRELOAD when
# every subdomain is https), DJANGO_SECURE_SSL_REDIRECT=1, DJANGO_SECURE_COOKIES=1
# (session and CSRF cookies only over https), and behind a proxy that ends TLS
# DJANGO_SECURE_PROXY_SSL_HEADER=X-Forwarded-Proto (trusted only when the proxy
# always sets or strips that header).
SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_SECURE_HSTS_SECONDS", "0"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", False)
# Health and metrics answer over plain http inside the cluster.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]


def parse_proxy_ssl_header(value: str) -> tuple[str, str] | None:
    """ "X-Forwarded-Proto" (or "X-Forwarded-Proto: https") -> Django's form."""
    name, _, expected = value.partition(":")
    if not name.strip():
        return None
    return ("HTTP_" + name.strip().upper().replace("-", "_"), expected.strip() or "https")


SECURE_PROXY_SSL_HEADER = parse_proxy_ssl_header(
    os.environ.get("DJANGO_SECURE_PROXY_SSL_HEADER", "")
)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "anymail",
    "drf_spectacular_sidecar",  # Swagger UI's files for /api/docs/ (static only; no DRF)
    "notify",
    "rules",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "notify.project.urls"
# JSON under /api/, Django's page elsewhere.
CSRF_FAILURE_VIEW = "notify.api.errors.csrf_failure"
WSGI_APPLICATION = "notify.project.wsgi.application"
ASGI_APPLICATION = "notify.project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates" / "pages"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "notify.pages.context.unread_count",
            ],
        },
    },
]

# SQLite (WAL) in var/ unless DATABASE_URL says otherwise.
SQLITE_PATH = VAR_DIR / os.environ.get("NOTIFY_SQLITE_NAME", "notify.sqlite3")
# Connections. Web requests run on a fixed pool of threads (notify.project.asgi,
# NOTIFY_WEB_THREADS), worker pool threads live as long as their process.
# * PostgreSQL: Django's connection pool (psycopg_pool) by default
#   (NOTIFY_DB_POOL=0 turns it off): a request borrows a connection and gives it
#   back, instead of connecting per request (CONN_MAX_AGE=0 cost ~2 ms a
#   request). NOTIFY_DB_POOL_MIN_SIZE / _MAX_SIZE / _TIMEOUT / _MAX_IDLE size it per process:
#   max at least web threads + 2 x worker threads (a busy worker thread's lease
#   heartbeat borrows one too) + 2 (the scheduler); the worker pool warns if not. A pool needs
#   CONN_MAX_AGE = 0, so NOTIFY_DB_CONN_MAX_AGE applies only without one.
# * SQLite: each thread keeps its connection (opening one, its PRAGMAs and
#   reading the schema again cost several ms a request).
# CONN_HEALTH_CHECKS pings a reused connection before use (with the pool: before
# lending it), so a process outlives a database restart.
# An empty DATABASE_URL (``DATABASE_URL=`` in an env file) means "not set": the
# embedded SQLite default, rather than dj-database-url's KeyError: 'ENGINE'.
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", "").strip() or f"sqlite:///{SQLITE_PATH}",
        conn_max_age=int(os.environ.get("NOTIFY_DB_CONN_MAX_AGE", "0")),
        conn_health_checks=True,
    )
}
DB_POOL = env_bool("NOTIFY_DB_POOL", True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and DB_POOL:
    from notify.project import dbpool

    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": int(os.environ.get("NOTIFY_DB_POOL_MIN_SIZE", "2")),
        "max_size": int(os.environ.get("NOTIFY_DB_POOL_MAX_SIZE", "50")),
        "timeout": float(os.environ.get("NOTIFY_DB_POOL_TIMEOUT", "10")),
        # psycopg_pool closes one unused connection per max_idle (its default,
        # 10 min, kept a burst's 50 connections for hours: a few processes
        # then hold PostgreSQL's 100 max_connections while idle).
        "max_idle": float(os.environ.get("NOTIFY_DB_POOL_MAX_IDLE", "60")),
        # After a database restart, discard every dead idle connection at once.
        "check": dbpool.check_connection,
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = None
    DATABASES["default"]["OPTIONS"] = {
        # IMMEDIATE takes the write lock at BEGIN, so a transaction never fails
        # half-way when it upgrades from read to write under concurrency.
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": (
            "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL;"
            "PRAGMA busy_timeout=20000;PRAGMA cache_size=-64000;PRAGMA temp_store=MEMORY"
        ),
    }
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
    # Django's SQLite backend, with this process's writers queued on a lock
    # instead of SQLite's sleeping busy handler (notify/project/sqlite3).
    DATABASES["default"]["ENGINE"] = "notify.project.sqlite3"
    if "DATABASE_URL" not in os.environ:
        # The database in VAR_DIR: its folder is created when first opened (not
        # when these settings are imported). A DATABASE_URL's folder must
        # exist: a wrong path is an error, not a new one.
        DATABASES["default"]["NOTIFY_CREATE_FOLDER"] = True

# The embedded default: one machine, SQLite (README, "Running it").
EMBEDDED = DATABASES["default"]["ENGINE"] in {
    "django.db.backends.sqlite3",
    "notify.project.sqlite3",
}

# DJANGO_SECRET_KEY, or the key in SECRET_KEY_FILE: `notify run` (and so `make run`)
# writes one there for the embedded default, so sessions and signed links
# survive restarts. Without either, DEBUG, the embedded default and test runs
# (pytest sets PYTEST_VERSION) sign with a key made for this process alone;
# anything else is left without a key and refused at start-up (notify.E009).
SECRET_KEY_FILE = VAR_DIR / "secret_key"
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY and SECRET_KEY_FILE.is_file():
    SECRET_KEY = SECRET_KEY_FILE.read_text().strip()
SECRET_KEY_IS_EPHEMERAL = not SECRET_KEY and (DEBUG or EMBEDDED or "PYTEST_VERSION" in os.environ)
if SECRET_KEY_IS_EPHEMERAL:
    SECRET_KEY = secrets.token_urlsafe(50)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# What every worker shares: circuit breakers and send-rate counters
# (channels.failover, channels.ratelimit). Redis when NOTIFY_REDIS_URL is set
# (several processes); the embedded default is one process, so local memory.
if os.environ.get("NOTIFY_REDIS_URL"):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["NOTIFY_REDIS_URL"],
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "notify",
        }
    }

# Django's four validators: they run where a password is chosen (the admin,
# `changepassword`, the demo's random passwords), not in create_user().
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Filled by collectstatic; the embedded default serves from the apps (finders)
# and `notify run` creates the folder.
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

# Users sign in on the project's own page (the admin keeps its own login) and
# land on their notification settings.
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/settings/notifications/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

# Email goes through Django's MAILERS. The embedded default records to the
# sandbox; set NOTIFY_EMAIL_BACKEND to django.core.mail.backends.smtp.EmailBackend
# or an anymail ESP backend (anymail.backends.postmark.EmailBackend, ...) and
# NOTIFY_EMAIL_OPTIONS to the backend's options as JSON, e.g.
# {"host": "smtp.example.com", "port": 587, "use_tls": true} or {"server_token": "..."}.
EMAIL_BACKEND_PATH = os.environ.get("NOTIFY_EMAIL_BACKEND", "channels.sandbox.SandboxEmailBackend")
SANDBOX = env_bool("NOTIFY_SANDBOX", "NOTIFY_EMAIL_BACKEND" not in os.environ)
MAILERS = {
    "default": {
        "BACKEND": EMAIL_BACKEND_PATH,
        "OPTIONS": json.loads(os.environ.get("NOTIFY_EMAIL_OPTIONS", "{}")),
    }
}
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "notify@example.com")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
ANYMAIL = {
    key.removeprefix("ANYMAIL_"): value
    for key, value in os.environ.items()
    if key.startswith("ANYMAIL_")
}
# ESP tracking webhooks (/webhooks/anymail/<esp>/tracking/) require HTTP basic auth
# "user:password" (comma-separate several while rotating).
if os.environ.get("NOTIFY_WEBHOOK_BASIC_AUTH"):
    ANYMAIL["WEBHOOK_SECRET"] = env_list("NOTIFY_WEBHOOK_BASIC_AUTH")

# SMS goes through Twilio when TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_FROM
# (or TWILIO_MESSAGING_SERVICE_SID) are set; otherwise the sandbox records it.
# TWILIO_STATUS_CALLBACK defaults to NOTIFY_SITE_URL + /webhooks/twilio/status.
# TWILIO_WHATSAPP_FROM adds a "whatsapp" channel on the same account. README,
# "Channels from the environment", has one table per channel.
TWILIO_CONFIGURED = bool(
    os.environ.get("TWILIO_ACCOUNT_SID")
    and os.environ.get("TWILIO_AUTH_TOKEN")
    and (os.environ.get("TWILIO_FROM") or os.environ.get("TWILIO_MESSAGING_SERVICE_SID"))
)


def twilio_options() -> dict[str, Any]:
    """The Twilio account's options, shared by the SMS and WhatsApp channels."""
    site_url = os.environ.get("NOTIFY_SITE_URL", "").rstrip("/")
    options: dict[str, Any] = {
        "ACCOUNT_SID": os.environ["TWILIO_ACCOUNT_SID"],
        "AUTH_TOKEN": os.environ["TWILIO_AUTH_TOKEN"],
        "FROM": os.environ.get("TWILIO_FROM", ""),
        "STATUS_CALLBACK": os.environ.get("TWILIO_STATUS_CALLBACK")
        or (f"{site_url}/webhooks/twilio/status" if site_url else ""),
    }
    # Unset: the channel's own defaults (channels.sms).
    if os.environ.get("TWILIO_MESSAGING_SERVICE_SID"):
        options["MESSAGING_SERVICE_SID"] = os.environ["TWILIO_MESSAGING_SERVICE_SID"]
    if "TWILIO_MAX_SEGMENTS" in os.environ:
        options["MAX_SEGMENTS"] = int(os.environ["TWILIO_MAX_SEGMENTS"])
    if "TWILIO_TIMEOUT" in os.environ:
        options["TIMEOUT"] = float(os.environ["TWILIO_TIMEOUT"])
    return options


if TWILIO_CONFIGURED:
    SMS_CHANNEL = {"BACKEND": "channels.sms.TwilioSmsChannel", "OPTIONS": twilio_options()}
else:
    SMS_CHANNEL = {
        "BACKEND": "channels.sandbox.SandboxChannel",
        "OPTIONS": {"ADDRESS_KIND": "phone", "FORMAT": "sms"},
    }

# Options of every channel whose URLs come from users' contact points (signed
# webhooks, Slack incoming webhooks, Teams, Discord, Apprise): time-out and plain
# http or not. The hosts they may reach only for signed webhooks and Apprise:
# Slack, Teams and Discord keep their providers' hosts. Unset: the channels' defaults.
URL_CHANNEL_OPTIONS: dict[str, Any] = {}
ANY_HOST_OPTIONS: dict[str, Any] = {}
if "NOTIFY_WEBHOOK_TIMEOUT" in os.environ:
    URL_CHANNEL_OPTIONS["TIMEOUT"] = float(os.environ["NOTIFY_WEBHOOK_TIMEOUT"])
if "NOTIFY_WEBHOOK_ALLOWED_HOSTS" in os.environ:
    ANY_HOST_OPTIONS["ALLOWED_HOSTS"] = env_list("NOTIFY_WEBHOOK_ALLOWED_HOSTS")
if "NOTIFY_WEBHOOK_ALLOW_HTTP" in os.environ:
    URL_CHANNEL_OPTIONS["ALLOW_HTTP"] = env_bool("NOTIFY_WEBHOOK_ALLOW_HTTP", False)

# Chat goes to Slack (direct messages through the Web API) when SLACK_BOT_TOKEN is
# set, and signed JSON webhooks are sent when NOTIFY_WEBHOOK_SECRET is set;
# otherwise the sandbox records them.
if os.environ.get("SLACK_BOT_TOKEN"):
    CHAT_CHANNEL = {
        "BACKEND": "channels.chat.SlackChannel",
        "OPTIONS": {"BOT_TOKEN": os.environ["SLACK_BOT_TOKEN"]},
    }
    if "SLACK_TIMEOUT" in os.environ:
        CHAT_CHANNEL["OPTIONS"]["TIMEOUT"] = float(os.environ["SLACK_TIMEOUT"])
else:
    CHAT_CHANNEL = {
        "BACKEND": "channels.sandbox.SandboxChannel",
        "OPTIONS": {"ADDRESS_KIND": "slack", "FORMAT": "chat"},
    }
if os.environ.get("NOTIFY_WEBHOOK_SECRET"):
    WEBHOOK_CHANNEL = {
        "BACKEND": "channels.webhook.SignedWebhookChannel",
        "OPTIONS": {
            "SECRET": os.environ["NOTIFY_WEBHOOK_SECRET"],
            **URL_CHANNEL_OPTIONS,
            **ANY_HOST_OPTIONS,
        },
    }
else:
    WEBHOOK_CHANNEL = {
        "BACKEND": "channels.sandbox.SandboxChannel",
        "OPTIONS": {"ADDRESS_KIND": "webhook", "FORMAT": "chat"},
    }

# Channels added by a switch: their addresses (webhook URLs, Apprise URLs) are
# the users' contact points, so turning one on needs no secret here.
# variable -> (alias, backend)
OPTIONAL_URL_CHANNELS = {
    "NOTIFY_SLACK_WEBHOOKS": ("slack_webhook", "channels.chat.SlackWebhookChannel"),
    "NOTIFY_TEAMS_WEBHOOKS": ("teams", "channels.chat.TeamsWebhookChannel"),
    "NOTIFY_DISCORD_WEBHOOKS": ("discord", "channels.chat.DiscordWebhookChannel"),
    "NOTIFY_APPRISE": ("apprise", "channels.apprise.AppriseChannel"),
    # Group robots per user (README, "Group robots"): robot URLs as contact points.
    "NOTIFY_WECOM_ROBOTS": ("wecom", "channels.robots.WeComRobotChannel"),
    "NOTIFY_DINGTALK_ROBOTS": ("dingtalk", "channels.robots.DingTalkRobotChannel"),
    "NOTIFY_FEISHU_ROBOTS": ("feishu", "channels.robots.FeishuRobotChannel"),
}

# NOTIFY: what this project sets differently from notify.conf's defaults (five
# channels, sandbox providers, files in VAR_DIR), then the keys fed from
# environment variables (NOTIFY_FROM_ENV).
NOTIFY: dict[str, Any] = {
    "CHANNELS": {
        "email": {"BACKEND": "channels.email.EmailChannel", "OPTIONS": {"MAILER": "default"}},
        "inapp": {"BACKEND": "channels.inapp.InAppChannel", "OPTIONS": {}},
        "sms": SMS_CHANNEL,
        "chat": CHAT_CHANNEL,
        "webhook": WEBHOOK_CHANNEL,
    },
    "SANDBOX": SANDBOX,
    "SANDBOX_DIR": str(VAR_DIR / "sandbox"),
    "TEMPLATE_DIRS": [str(BASE_DIR / "templates")],
    "SCHEDULER_LOCK_FILE": str(VAR_DIR / "scheduler.lock"),
}
if TWILIO_CONFIGURED and os.environ.get("TWILIO_WHATSAPP_FROM"):
    NOTIFY["CHANNELS"]["whatsapp"] = {
        "BACKEND": "channels.whatsapp.TwilioWhatsAppChannel",
        "OPTIONS": {**twilio_options(), "FROM": os.environ["TWILIO_WHATSAPP_FROM"]},
    }
    if os.environ.get("TWILIO_WHATSAPP_CONTENT_SID"):
        NOTIFY["CHANNELS"]["whatsapp"]["OPTIONS"]["CONTENT_SID"] = os.environ[
            "TWILIO_WHATSAPP_CONTENT_SID"
        ]
for variable, (alias, backend) in OPTIONAL_URL_CHANNELS.items():
    if env_bool(variable, False):
        NOTIFY["CHANNELS"][alias] = {"BACKEND": backend, "OPTIONS": dict(URL_CHANNEL_OPTIONS)}
# Push (README, "Push"): each channel when its credentials are set; devices
# register themselves as contact points. Secrets come as files (/run/secrets).
if os.environ.get("NOTIFY_WEBPUSH_VAPID_PRIVATE_KEY_FILE"):
    NOTIFY["CHANNELS"]["browser"] = {
        "BACKEND": "channels.webpush.WebPushChannel",
        "OPTIONS": {
            "VAPID_PRIVATE_KEY_FILE": os.environ["NOTIFY_WEBPUSH_VAPID_PRIVATE_KEY_FILE"],
            "VAPID_SUBJECT": os.environ.get("NOTIFY_WEBPUSH_VAPID_SUBJECT", ""),
        },
    }
if os.environ.get("FCM_CREDENTIALS_FILE"):
    NOTIFY["CHANNELS"]["fcm"] = {
        "BACKEND": "channels.fcm.FcmChannel",
        "OPTIONS": {"CREDENTIALS_FILE": os.environ["FCM_CREDENTIALS_FILE"]},
    }
if os.environ.get("APNS_KEY_FILE"):
    NOTIFY["CHANNELS"]["apns"] = {
        "BACKEND": "channels.apns.ApnsChannel",
        "OPTIONS": {
            "KEY_FILE": os.environ["APNS_KEY_FILE"],
            "KEY_ID": os.environ.get("APNS_KEY_ID", ""),
            "TEAM_ID": os.environ.get("APNS_TEAM_ID", ""),
            "TOPIC": os.environ.get("APNS_TOPIC", ""),
        },
    }
    if os.environ.get("APNS_BASE_URL"):  # https://api.sandbox.push.apple.com for dev builds
        NOTIFY["CHANNELS"]["apns"]["OPTIONS"]["BASE_URL"] = os.environ["APNS_BASE_URL"]
if env_bool("NOTIFY_APPRISE", False):
    NOTIFY["CHANNELS"]["apprise"]["OPTIONS"].update(ANY_HOST_OPTIONS)
    if os.environ.get("NOTIFY_APPRISE_SCHEMES"):
        NOTIFY["CHANNELS"]["apprise"]["OPTIONS"]["SCHEMES"] = env_list("NOTIFY_APPRISE_SCHEMES")

# Environment variable -> (NOTIFY key, how to read its value). A variable that is
# not in the environment leaves its key out, so notify.conf's default applies.
# Scale-out: with NOTIFY_BROKER_URL (amqp://guest:guest@127.0.0.1:5672// or
# redis://127.0.0.1:6379/0) fan-out and deliveries go to Celery workers
# (`celery -A notify worker -Q $NOTIFY_CELERY_QUEUE`); README, "Scaling out".
# Operating it (README, "Operating it"): /metrics answers the bearer token
# NOTIFY_METRICS_TOKEN or the addresses in NOTIFY_METRICS_ALLOWED_IPS; /readyz
# fails when due work has waited NOTIFY_READINESS_MAX_OUTBOX_LAG seconds.
NOTIFY_FROM_ENV: dict[str, tuple[str, Callable[[str], Any]]] = {
    "NOTIFY_SITE_URL": ("SITE_URL", str),
    "NOTIFY_UNSUBSCRIBE_MAILTO": ("UNSUBSCRIBE_MAILTO", parse_optional),
    "NOTIFY_EMAIL_LAYOUT": ("EMAIL_LAYOUT", str),
    "NOTIFY_EMAIL_BRAND_NAME": ("EMAIL_BRAND_NAME", str),
    "NOTIFY_EMAIL_BRAND_LOGO_URL": ("EMAIL_BRAND_LOGO_URL", str),
    "NOTIFY_EMAIL_BRAND_COLOR": ("EMAIL_BRAND_COLOR", str),
    "NOTIFY_WORKER_THREADS": ("WORKER_THREADS", int),
    "NOTIFY_WEB_THREADS": ("WEB_THREADS", int),
    "NOTIFY_API_KEY_CACHE_SECONDS": ("API_KEY_CACHE_SECONDS", float),
    "NOTIFY_WORKER_BATCH_SIZE": ("WORKER_BATCH_SIZE", int),
    "NOTIFY_DIGEST_BATCH_SIZE": ("DIGEST_BATCH_SIZE", int),
    "NOTIFY_WORKER_BATCH_SECONDS": ("WORKER_BATCH_SECONDS", float),
    "NOTIFY_SENDS_IN_FLIGHT": ("SENDS_IN_FLIGHT", int),
    "NOTIFY_CLAIM_TTL": ("CLAIM_TTL", float),
    "NOTIFY_POLL_INTERVAL": ("POLL_INTERVAL", float),
    "NOTIFY_FANOUT_CHUNK_SIZE": ("FANOUT_CHUNK_SIZE", int),
    "NOTIFY_MAX_ATTEMPTS": ("MAX_ATTEMPTS", int),
    "NOTIFY_RETRY_BASE_DELAY": ("RETRY_BASE_DELAY", float),
    "NOTIFY_RETRY_FACTOR": ("RETRY_FACTOR", float),
    "NOTIFY_RETRY_MAX_DELAY": ("RETRY_MAX_DELAY", float),
    "NOTIFY_RETRY_JITTER": ("RETRY_JITTER", float),
    "NOTIFY_SCHEDULER_TICK": ("SCHEDULER_TICK", float),
    "NOTIFY_RETENTION_DAYS": ("RETENTION_DAYS", int),
    "NOTIFY_EAGER": ("EAGER", parse_bool),
    "NOTIFY_BROKER_URL": ("BROKER_URL", parse_optional),
    "NOTIFY_CELERY_QUEUE": ("CELERY_QUEUE", str),
    "NOTIFY_METRICS_TOKEN": ("METRICS_TOKEN", parse_optional),
    "NOTIFY_METRICS_ALLOWED_IPS": ("METRICS_ALLOWED_IPS", parse_list),
    "NOTIFY_READINESS_MAX_OUTBOX_LAG": ("READINESS_MAX_OUTBOX_LAG", float),
    # The embeddable bell (README, "Embedding the inbox bell").
    "NOTIFY_BELL_ALLOWED_ORIGINS": ("BELL_ALLOWED_ORIGINS", parse_list),
    "NOTIFY_BELL_TOKEN_MAX_AGE": ("BELL_TOKEN_MAX_AGE", float),
}
for variable, (key, read) in NOTIFY_FROM_ENV.items():
    if variable in os.environ:
        NOTIFY[key] = read(os.environ[variable])

# Email failover: NOTIFY_EMAIL_FALLBACK_BACKEND (and _OPTIONS, JSON) add a second
# mailer that takes a message when the first fails transiently; a circuit breaker
# per provider skips one that keeps failing (state in CACHES). NOTIFY_EMAIL_RATE_LIMIT
# ("10/s", "600/m") caps sends across all workers. See channels/failover.py.
if os.environ.get("NOTIFY_EMAIL_FALLBACK_BACKEND"):
    MAILERS["fallback"] = {
        "BACKEND": os.environ["NOTIFY_EMAIL_FALLBACK_BACKEND"],
        "OPTIONS": json.loads(os.environ.get("NOTIFY_EMAIL_FALLBACK_OPTIONS", "{}")),
    }
    NOTIFY["CHANNELS"]["email"] = {
        "BACKEND": "channels.failover.FailoverChannel",
        "OPTIONS": {
            "PROVIDERS": [
                {"BACKEND": "channels.email.EmailChannel", "OPTIONS": {"MAILER": mailer}}
                for mailer in ("default", "fallback")
            ],
        },
    }
    # Unset: the channel's own defaults (channels.failover).
    if "NOTIFY_FAILOVER_THRESHOLD" in os.environ:
        NOTIFY["CHANNELS"]["email"]["OPTIONS"]["FAILURE_THRESHOLD"] = int(
            os.environ["NOTIFY_FAILOVER_THRESHOLD"]
        )
    if "NOTIFY_FAILOVER_COOL_DOWN" in os.environ:
        NOTIFY["CHANNELS"]["email"]["OPTIONS"]["COOL_DOWN"] = float(
            os.environ["NOTIFY_FAILOVER_COOL_DOWN"]
        )
if os.environ.get("NOTIFY_EMAIL_RATE_LIMIT"):
    NOTIFY["CHANNELS"]["email"]["OPTIONS"]["RATE_LIMIT"] = os.environ["NOTIFY_EMAIL_RATE_LIMIT"]

# Signed webhooks (README, "Signed webhooks"): NOTIFY_WEBHOOK_INTERNAL_HOSTS names
# receivers (billing.internal,127.0.0.1) reachable over http and at private
# addresses; link-local and cloud metadata addresses stay refused. The sandbox
# stand-in (no NOTIFY_WEBHOOK_SECRET) posts nothing; it takes the webhook format,
# so data-only rules work in the demo.
_webhook = NOTIFY["CHANNELS"]["webhook"]
if _webhook["BACKEND"] == "channels.sandbox.SandboxChannel":
    _webhook["OPTIONS"]["FORMAT"] = "webhook"
elif os.environ.get("NOTIFY_WEBHOOK_INTERNAL_HOSTS"):
    _webhook["OPTIONS"]["INTERNAL_HOSTS"] = env_list("NOTIFY_WEBHOOK_INTERNAL_HOSTS")

# Logs: plain lines, or one JSON object per line with NOTIFY_LOG_FORMAT=json. Every
# record is redacted as it is made (notify.logs.configure): no
# address, phone number, token or secret reaches any handler, at any level.
LOG_FORMAT = os.environ.get("NOTIFY_LOG_FORMAT", "plain").strip().lower()
if LOG_FORMAT not in ("plain", "json"):
    raise ValueError(f"NOTIFY_LOG_FORMAT must be 'plain' or 'json', not {LOG_FORMAT!r}")
LOGGING_CONFIG = "notify.logs.configure"
LOG_LEVEL = os.environ.get("NOTIFY_LOG_LEVEL", "INFO").strip().upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"()": "notify.logs.PlainFormatter"},
        "json": {"()": "notify.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # SQL parameters and request bodies hold addresses and message text: these
        # loggers stay at WARNING whatever NOTIFY_LOG_LEVEL says.
        "django.db.backends": {"level": "WARNING"},
        "slack_sdk": {"level": "WARNING"},
        "twilio": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
        "apprise": {"level": "WARNING"},
        "mail.log": {"level": "WARNING"},
        # APScheduler says at INFO what is per-tick detail ("Running job ...",
        # "executed successfully" every SCHEDULER_TICK seconds): a console for
        # people shows it only at NOTIFY_LOG_LEVEL=DEBUG. Its warnings and errors
        # (a missed or failed job) always show.
        "apscheduler": {"level": "DEBUG" if LOG_LEVEL == "DEBUG" else "WARNING"},
    },
}
