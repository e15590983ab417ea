"""System checks for the settings of this package and of the event middleware:
bad configuration fails at start-up and says what to set."""

from __future__ import annotations

import sys

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from notify import conf
from notify.fanout.middleware import build_chain
from notify.observability.metrics import allowed_networks


@checks.register()
def check_event_middleware(app_configs=None, **kwargs):
    config = conf.get("EVENT_MIDDLEWARE")
    if not isinstance(config, list | tuple):
        return [
            checks.Error(
                "NOTIFY['EVENT_MIDDLEWARE'] must be a list.",
                hint="Dotted paths of processors, or {'CLASS': path, 'OPTIONS': {...}}.",
                id="notify.E201",
            )
        ]
    try:
        build_chain(config)
    except ImproperlyConfigured as exc:
        return [
            checks.Error(
                str(exc),
                hint="See notify/fanout/middleware.py for the processor contract.",
                id="notify.E201",
            )
        ]
    return []


@checks.register()
def check_metrics_access(app_configs=None, **kwargs):
    errors = []
    entries = conf.get("METRICS_ALLOWED_IPS") or []
    if isinstance(entries, str):
        entries = [entries]
    for entry in entries:
        try:
            allowed_networks([entry])
        except ValueError as exc:
            errors.append(
                checks.Error(
                    f"NOTIFY['METRICS_ALLOWED_IPS'] has {entry!r}, not an address or network: {exc}",
                    hint="Use addresses or networks like 127.0.0.1, ::1 or 10.0.0.0/8.",
                    id="notify.E202",
                )
            )
    token = conf.get("METRICS_TOKEN")
    if token and len(token) < 24:
        errors.append(
            checks.Warning(
                "NOTIFY['METRICS_TOKEN'] is shorter than 24 characters.",
                hint="Use a long random value: python -c 'import secrets; print(secrets.token_urlsafe(32))'",
                id="notify.W203",
            )
        )
    return errors


# CVE-2024-6923: the email package let CR/LF inside RFC 2047 encoded words
# through into folded headers (header injection). Fixed in 3.12.5 and 3.13.0.
SAFE_INTERPRETER = (3, 12, 5)


@checks.register()
def check_interpreter(app_configs=None, *, version_info=None, **kwargs):
    """Refuse to start on a Python whose email package allows header injection."""
    version = tuple((version_info or sys.version_info)[:3])
    if version >= SAFE_INTERPRETER:
        return []
    found = ".".join(str(part) for part in version)
    return [
        checks.Critical(
            f"Python {found} lets payload text inject email headers (CVE-2024-6923).",
            hint="Run notify on Python 3.12.5 or newer (scripts/find-python picks one), "
            "then re-create the virtualenv: rm -rf .venv && make .venv/.installed",
            id="notify.E210",
        )
    ]
