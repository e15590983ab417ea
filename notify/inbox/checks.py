"""System checks of the embeddable bell's settings (ids notify.E085-E089).

E085 ``BELL_ALLOWED_ORIGINS`` is not a list of origins (``scheme://host[:port]``,
nothing after the host: browsers send exactly that in ``Origin``; ``*`` is
refused, a wildcard would let any site read a user's feed with a leaked token);
E086 ``BELL_TOKEN_MAX_AGE`` is not a positive number of seconds.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.core import checks

from notify import conf


def origin_problem(origin: Any) -> str | None:
    """Why ``origin`` is not what a browser sends in ``Origin``, or None."""
    if not isinstance(origin, str):
        return f"{origin!r} is not a string"
    try:
        parts = urlsplit(origin)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        return f"{origin!r}: {exc}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{origin!r} is not scheme://host[:port] with scheme http or https"
    if parts.path or parts.query or parts.fragment or parts.username or origin.endswith("/"):
        return f"{origin!r} has more than scheme://host[:port] (drop the path and the slash)"
    return None


@checks.register()
def check_bell_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    origins = conf.get("BELL_ALLOWED_ORIGINS")
    if not isinstance(origins, (list, tuple)):
        errors.append(
            checks.Error(
                "NOTIFY['BELL_ALLOWED_ORIGINS'] must be a list of origins, e.g. "
                "['https://app.example.com'].",
                id="notify.E085",
            )
        )
    else:
        for origin in origins:
            problem = origin_problem(origin)
            if problem:
                errors.append(
                    checks.Error(
                        f"NOTIFY['BELL_ALLOWED_ORIGINS']: {problem}.",
                        hint="List exact origins such as 'https://app.example.com:8443'.",
                        id="notify.E085",
                    )
                )
    max_age = conf.get("BELL_TOKEN_MAX_AGE")
    if isinstance(max_age, bool) or not isinstance(max_age, (int, float)) or max_age <= 0:
        errors.append(
            checks.Error(
                f"NOTIFY['BELL_TOKEN_MAX_AGE'] must be a positive number of seconds, not {max_age!r}.",
                id="notify.E086",
            )
        )
    return errors
