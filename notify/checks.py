"""System checks: bad configuration fails at start-up and says what to set.

Ids: E001-E006 the channels, E007 unknown ``NOTIFY`` keys, E008 unknown channel
options, E009 no secret key; W010 links in messages to a host this service refuses. (E1xx are the webhooks', E2xx observability's.)
"""

import difflib
from urllib.parse import urlsplit

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.http.request import validate_host
from django.utils.module_loading import import_string

from channels.base import Channel, ChannelConfigurationError, describe_unknown_options
from notify import conf
from notify.registry import build_channel


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
    """Refuse to start without a secret key (signed links and sessions need one)."""
    try:
        if settings.SECRET_KEY:
            return []
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
