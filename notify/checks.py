"""System checks: bad configuration fails at start-up and says what to set.

Ids: E001-E006 the channels, E007 unknown ``NOTIFY`` keys, E008 unknown channel
options, E009 no secret key, E070-E071 workflow settings. Production (``production_reasons``): E020 a user
with a known demo password, E021 an http ``SITE_URL`` (W021 one on this machine), E022 a provider whose
status reports would come in unauthenticated. (E1xx are the webhooks', E2xx
observability's.) W010 links in messages to a host this service refuses.
E090 a channel's ``CONCURRENCY``, E091 ``SENDS_IN_FLIGHT`` (``notify.delivery.inflight``).
E040 ``API_KEY_CACHE_SECONDS`` not a number of seconds (W040 one so long that a
revoked key stays usable for over a minute).
"""

import difflib
from datetime import time
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError
from django.http.request import validate_host
from django.utils.module_loading import import_string

from channels.base import Channel, ChannelConfigurationError, describe_unknown_options
from notify import conf, registry
from notify.registry import build_channel
from rules.windows import WindowError, make_window


@checks.register()
def check_notify_keys(app_configs=None, **kwargs):
    """Every key of ``settings.NOTIFY`` is one that ``notify.conf.SETTINGS`` documents."""
    given = getattr(settings, "NOTIFY", {})
    if not isinstance(given, dict):
        return [checks.Error("settings.NOTIFY must be a dict.", id="notify.E007")]
    valid = sorted(conf.SETTINGS)
    errors = []
    for key in sorted(set(given) - set(valid), key=str):
        close = difflib.get_close_matches(str(key), valid, n=1)
        errors.append(
            checks.Error(
                f"NOTIFY[{key!r}] is not a notify setting"
                + (f"; did you mean {close[0]!r}?" if close else "."),
                hint=f"Valid keys (notify.conf.SETTINGS): {', '.join(valid)}.",
                id="notify.E007",
            )
        )
    return errors


@checks.register()
def check_site_url_host(app_configs=None, **kwargs):
    """Warn when the links in messages name a host that ALLOWED_HOSTS refuses:
    every unsubscribe and preferences link would answer 400."""
    site_url = conf.get("SITE_URL") or ""
    host = urlsplit(site_url).hostname
    if not host:
        return [
            checks.Warning(
                f"NOTIFY['SITE_URL'] ({site_url!r}) is not an absolute URL: links in messages "
                "will not work.",
                hint="Set NOTIFY_SITE_URL to the public address, e.g. https://notify.example.com.",
                id="notify.W010",
            )
        ]
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]  # what Django allows then
    if validate_host(f"[{host}]" if ":" in host else host, allowed):
        return []
    return [
        checks.Warning(
            f"NOTIFY['SITE_URL'] is {site_url!r} but ALLOWED_HOSTS ({', '.join(allowed) or 'empty'})"
            f" does not allow {host!r}: every link in messages would answer 400.",
            hint="Set NOTIFY_SITE_URL to the address users reach this service at, and add its "
            "host to DJANGO_ALLOWED_HOSTS.",
            id="notify.W010",
        )
    ]


@checks.register()
def check_secret_key(app_configs=None, **kwargs):
    """Refuse to start without a secret key (signed links and sessions need one),
    and in production with one made up for this process alone (links would
    break at every restart and differ between machines)."""
    try:
        if settings.SECRET_KEY:
            reasons = production_reasons()
            if not (getattr(settings, "SECRET_KEY_IS_EPHEMERAL", False) and reasons):
                return []
            return [
                checks.Error(
                    "SECRET_KEY was made up for this process alone, and this instance is "
                    f"production ({'; '.join(reasons)}): signed links and sessions would "
                    "break at every restart and differ between machines.",
                    hint="Set DJANGO_SECRET_KEY to one long random value shared by every "
                    "process (python -c 'import secrets; print(secrets.token_urlsafe(50))').",
                    id="notify.E009",
                )
            ]
    except ImproperlyConfigured:  # Django refuses to read an empty key
        pass
    return [
        checks.Error(
            "SECRET_KEY is empty: signed links, sessions and CSRF cannot work.",
            hint="Set DJANGO_SECRET_KEY (the embedded default keeps one in var/secret_key, "
            "written by `manage.py notify run`).",
            id="notify.E009",
        )
    ]


@checks.register()
def check_channels(app_configs=None, **kwargs):
    errors = []
    channels = conf.get("CHANNELS")
    if not isinstance(channels, dict) or not channels:
        return [
            checks.Error(
                "NOTIFY['CHANNELS'] must be a non-empty dict of alias -> {'BACKEND': ..., 'OPTIONS': {...}}.",
                id="notify.E001",
            )
        ]
    for alias, config in channels.items():
        backend = config.get("BACKEND") if isinstance(config, dict) else None
        if not backend:
            errors.append(
                checks.Error(f"NOTIFY['CHANNELS']['{alias}'] has no 'BACKEND'.", id="notify.E002")
            )
            continue
        try:
            cls = import_string(backend)
        except ImportError as exc:
            errors.append(
                checks.Error(
                    f"NOTIFY['CHANNELS']['{alias}']['BACKEND'] = {backend!r} cannot be imported: {exc}",
                    hint="Set it to the dotted path of a channels.base.Channel subclass.",
                    id="notify.E003",
                )
            )
            continue
        errors += check_unknown_options(alias, cls, config.get("OPTIONS") or {})
        problem = registry.concurrency_problem(alias, config)
        if problem:
            errors.append(checks.Error(problem, id="notify.E090"))
    if not errors:
        errors += check_channel_options(channels)
    for alias in conf.get("DEFAULT_CHANNELS"):
        if alias not in channels:
            errors.append(
                checks.Error(
                    f"NOTIFY['DEFAULT_CHANNELS'] names '{alias}', which is not in NOTIFY['CHANNELS'].",
                    id="notify.E004",
                )
            )
    in_flight = conf.get("SENDS_IN_FLIGHT")
    if isinstance(in_flight, bool) or not isinstance(in_flight, int) or in_flight < 1:
        errors.append(
            checks.Error(
                f"NOTIFY['SENDS_IN_FLIGHT'] must be a whole number, at least 1 (got {in_flight!r}).",
                id="notify.E091",
            )
        )
    if conf.get("MAX_ATTEMPTS") < 1:
        errors.append(checks.Error("NOTIFY['MAX_ATTEMPTS'] must be at least 1.", id="notify.E005"))
    return errors


def check_unknown_options(alias: str, cls: type, options: dict) -> list:
    """A channel's OPTIONS name only what its class reads (``Channel.accepted_options``)."""
    if not (isinstance(cls, type) and issubclass(cls, Channel)):
        return []  # building it fails, and says so (notify.E006)
    problem = describe_unknown_options(f"NOTIFY['CHANNELS']['{alias}']['OPTIONS']", cls, options)
    return [checks.Error(problem, id="notify.E008")] if problem else []


def check_channel_options(channels: dict) -> list:
    """Build each channel and let it say whether its options can work."""
    errors = []
    for alias in channels:
        try:
            build_channel(alias).check_configuration()
        except ChannelConfigurationError as exc:
            errors.append(checks.Error(str(exc), id="notify.E006"))
        except Exception as exc:  # a constructor that cannot even start
            errors.append(
                checks.Error(
                    f"NOTIFY['CHANNELS']['{alias}'] cannot be built: {type(exc).__name__}: {exc}",
                    id="notify.E006",
                )
            )
    return errors


# -- production ------------------------------------------------------------------

# Channel backends and Django mail backends that send nothing to anyone.
NOT_REAL = (
    "channels.sandbox.",
    "channels.inapp.",
    "django.core.mail.backends.locmem.",
    "django.core.mail.backends.console.",
    "django.core.mail.backends.dummy.",
    "django.core.mail.backends.filebased.",
)
# The passwords notify's demo data used to publish in README (before they were
# random per database): a user that still has one can be signed in by anyone.
KNOWN_DEMO_PASSWORDS = {
    "admin": "notify-admin",
    "alice": "notify-alice",
    "bob": "notify-bob",
    "carol": "notify-carol",
}


def embedded_database() -> bool:
    """The embedded default's store: SQLite (``settings.EMBEDDED`` when the
    project's settings say it, else the engine)."""
    embedded = getattr(settings, "EMBEDDED", None)
    if embedded is not None:
        return bool(embedded)
    return "sqlite" in settings.DATABASES["default"]["ENGINE"]


def provider_configs(config) -> list[dict]:
    """The leaf channel configs of one alias (a failover channel has several)."""
    if not isinstance(config, dict):
        return []
    providers = (config.get("OPTIONS") or {}).get("PROVIDERS")
    if isinstance(providers, list):
        return [leaf for provider in providers for leaf in provider_configs(provider)]
    return [config]


def is_real_provider(config: dict) -> bool:
    backend = str(config.get("BACKEND", ""))
    if backend.startswith(NOT_REAL):
        return False
    if backend == "channels.email.EmailChannel":
        mailer = (config.get("OPTIONS") or {}).get("MAILER", "default")
        mailer_backend = getattr(settings, "MAILERS", {}).get(mailer, {}).get("BACKEND", "")
        return not (mailer_backend.startswith(NOT_REAL) or mailer_backend.endswith("Sandbox"))
    return True


def real_providers() -> list[str]:
    """Channel aliases that reach real people (not the sandbox, not in-app)."""
    channels = conf.get("CHANNELS")
    if not isinstance(channels, dict):
        return []
    return [
        str(alias)
        for alias, config in channels.items()
        if any(is_real_provider(leaf) for leaf in provider_configs(config))
    ]


def production_reasons() -> list[str]:
    """Why this instance is production: [] with DEBUG on, or on the embedded
    default (SQLite and sandbox providers)."""
    if settings.DEBUG:
        return []
    reasons = []
    if not embedded_database():
        vendor = settings.DATABASES["default"]["ENGINE"].rpartition(".")[2]
        reasons.append(f"the database is {vendor} (DATABASE_URL), not the embedded SQLite")
    providers = real_providers()
    if providers:
        reasons.append(f"real providers are configured for {', '.join(providers)}")
    return reasons


def users_with_known_passwords() -> list[str]:
    """Usernames that still sign in with a published demo password."""
    User = get_user_model()
    found = []
    for user in User.objects.filter(username__in=KNOWN_DEMO_PASSWORDS, is_active=True):
        if user.check_password(KNOWN_DEMO_PASSWORDS[user.get_username()]):
            found.append(user.get_username())
    return sorted(found)


@checks.register()
def check_known_passwords(app_configs=None, **kwargs):
    """In production, refuse to start while a user has a published demo password."""
    reasons = production_reasons()
    if not reasons:
        return []
    try:
        found = users_with_known_passwords()
    except DatabaseError:  # not migrated yet, or not reachable: nothing to tell
        return []
    if not found:
        return []
    return [
        checks.Error(
            f"User(s) {', '.join(found)} still have the published demo password, and this "
            f"instance is production ({'; '.join(reasons)}).",
            hint="Set a new password (`manage.py changepassword USERNAME`) or delete the "
            "user. Demo data belongs to the embedded default only.",
            id="notify.E020",
        )
    ]


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@checks.register()
def check_site_url(app_configs=None, **kwargs):
    """Links in messages go out over https in production (RFC 8058 one-click
    needs it): an http URL is refused; one on this machine (the default, left
    unset) is a warning, as recipients cannot follow it either."""
    reasons = production_reasons()
    site = str(conf.get("SITE_URL"))
    parts = urlsplit(site)
    if not reasons or (parts.scheme == "https" and parts.hostname not in LOOPBACK):
        return []
    hint = (
        "Set NOTIFY_SITE_URL to the https URL users reach this service at, e.g. "
        "https://notify.example.com. Gmail and Yahoo ignore http one-click links."
    )
    where = f"this instance is production ({'; '.join(reasons)})"
    if parts.hostname in LOOPBACK:
        return [
            checks.Warning(
                f"NOTIFY['SITE_URL'] is {site!r}: links in messages point at this machine, "
                f"and {where}.",
                hint=hint,
                id="notify.W021",
            )
        ]
    return [
        checks.Error(
            f"NOTIFY['SITE_URL'] is {site!r}: links in messages (unsubscribe, settings) would "
            f"be plain http, and {where}.",
            hint=hint,
            id="notify.E021",
        )
    ]


@checks.register()
def check_webhook_credentials(app_configs=None, **kwargs):
    """A provider that reports delivery status needs its webhook's credentials:
    without them the webhook refuses every report (so bounces are never seen)."""
    errors = []
    providers = [
        leaf
        for config in (conf.get("CHANNELS") or {}).values()
        for leaf in provider_configs(config)
        if is_real_provider(leaf)
    ]
    esp = [
        leaf
        for leaf in providers
        if leaf.get("BACKEND") == "channels.email.EmailChannel"
        and getattr(settings, "MAILERS", {})
        .get((leaf.get("OPTIONS") or {}).get("MAILER", "default"), {})
        .get("BACKEND", "")
        .startswith("anymail.")
    ]
    if esp and not getattr(settings, "ANYMAIL", {}).get("WEBHOOK_SECRET"):
        errors.append(
            checks.Error(
                "An anymail ESP sends email, but its tracking webhook has no credentials: "
                "bounces and complaints would be refused (or, worse, forged).",
                hint="Set NOTIFY_WEBHOOK_BASIC_AUTH to 'user:password' and give the same "
                "credentials in the ESP's webhook URL "
                "(https://user:password@your-host/webhooks/anymail/<esp>/tracking/).",
                id="notify.E022",
            )
        )
    twilio = [leaf for leaf in providers if leaf.get("BACKEND") == "channels.sms.TwilioSmsChannel"]
    if any(not (leaf.get("OPTIONS") or {}).get("AUTH_TOKEN") for leaf in twilio):
        errors.append(
            checks.Error(
                "Twilio sends SMS, but without its auth token status callbacks and STOP "
                "replies cannot be verified.",
                hint="Set TWILIO_AUTH_TOKEN (the account's auth token signs every callback).",
                id="notify.E022",
            )
        )
    return errors


@checks.register()
def check_workflow_settings(app_configs=None, **kwargs):
    """Workflows (issue 16): the runner's batch size and the working hours a
    delay step waits for must be usable, or every such run would fail."""
    errors = []
    size = conf.get("WORKFLOW_BATCH_SIZE")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        errors.append(
            checks.Error(
                f"NOTIFY['WORKFLOW_BATCH_SIZE'] must be a whole number of at least 1, not {size!r}.",
                id="notify.E070",
            )
        )
    hours = conf.get("WORKFLOW_WORKING_HOURS")
    try:
        if not isinstance(hours, dict):
            raise WindowError("expected a dict with 'days', 'from' and 'until'")
        make_window(
            hours.get("days", [0, 1, 2, 3, 4]),
            time.fromisoformat(str(hours.get("from", "09:00"))),
            time.fromisoformat(str(hours.get("until", "17:00"))),
            "UTC",
        )
    except (WindowError, ValueError, TypeError) as exc:
        errors.append(
            checks.Error(
                f"NOTIFY['WORKFLOW_WORKING_HOURS'] is not usable: {exc}.",
                hint='e.g. {"days": [0, 1, 2, 3, 4], "from": "09:00", "until": "17:00"}',
                id="notify.E071",
            )
        )
    return errors


# Past this a revoked API key would keep working for more than a minute.
API_KEY_CACHE_WARN_SECONDS = 60


@checks.register()
def check_api_key_cache(app_configs=None, **kwargs):
    """``API_KEY_CACHE_SECONDS`` (``notify.api.auth``): how long another
    process may still accept a revoked key."""
    value = conf.get("API_KEY_CACHE_SECONDS")
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        return [
            checks.Error(
                f"NOTIFY['API_KEY_CACHE_SECONDS'] must be a number of seconds, 0 or more, "
                f"not {value!r}.",
                hint="e.g. 5 (the default); 0 reads the key on every request.",
                id="notify.E040",
            )
        ]
    if value > API_KEY_CACHE_WARN_SECONDS:
        return [
            checks.Warning(
                f"NOTIFY['API_KEY_CACHE_SECONDS'] is {value:g}: a revoked API key keeps "
                f"working in other web processes for up to {value:g} s.",
                hint=f"Keep it at {API_KEY_CACHE_WARN_SECONDS} or less (default 5).",
                id="notify.W040",
            )
        ]
    return []
