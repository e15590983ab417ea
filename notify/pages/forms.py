"""The settings form: its POST parsed into ``prefs``' document, and errors mapped
back onto the inputs they belong to.

Validation itself is ``prefs.validate``, shared with the API; this module
only knows how the page names its inputs:

* ``timezone``, ``quiet_start``, ``quiet_end``, ``digest_hour``,
  ``digest_weekday``, ``paused_until`` as in the document;
* ``mode-<category>`` and ``cell-<category>-<alias>`` (a checkbox) for the grid.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping
from typing import Any

from django.http import QueryDict

from notify.pages.prefs import SCALARS, Preferences

FIELD_LABELS = {
    "timezone": "Time zone",
    "quiet_start": "Quiet hours from",
    "quiet_end": "Quiet hours to",
    "digest_hour": "Digest time",
    "digest_weekday": "Weekly digest day",
    "paused_until": "Pause until",
}


def mode_input(key: str) -> str:
    return f"mode-{key}"


def cell_input(key: str, alias: str) -> str:
    return f"cell-{key}-{alias}"


def preferences_from_post(
    post: QueryDict, current: Preferences, shown: Mapping[int, Collection[str]] | None = None
) -> dict[str, Any]:
    """The submitted form as the document ``prefs.validate`` checks.

    An unticked checkbox sends nothing, so for an ordinary category a missing
    cell means "off". A critical category's controls are disabled, so a
    browser sends nothing for it and nothing is read but a mode (only a forged
    POST has one, and validation refuses it). Only the cells ``shown`` (category
    id -> aliases; all when None) are read: a hidden cell keeps its value.
    """
    data: dict[str, Any] = {name: post.get(name, "") for name in SCALARS}
    categories: dict[str, Any] = {}
    for category in current.categories:
        name = mode_input(category.key)
        if category.critical:
            if name in post:
                categories[category.key] = {"mode": post[name]}
            continue
        categories[category.key] = {
            "mode": post.get(name, ""),
            "channels": {
                column.alias: cell_input(category.key, column.alias) in post
                for column in current.columns
                if shown is None or column.alias in shown.get(category.pk, ())
            },
        }
    data["categories"] = categories
    return data


def input_id(path: str) -> str:
    """The id of the input an error path belongs to."""
    parts = path.split(".")
    if parts[0] == "categories" and len(parts) >= 2:
        if len(parts) >= 4 and parts[2] == "channels":
            return cell_input(parts[1], parts[3])
        return mode_input(parts[1])
    return f"id_{parts[0]}" if parts[0] else "settings-form"


def error_label(path: str, current: Preferences) -> str:
    """What the error summary calls a field: "Time zone", "Orders: SMS"."""
    parts = path.split(".")
    if parts[0] == "categories" and len(parts) >= 2:
        names = {c.key: c.name for c in current.categories}
        name = names.get(parts[1], parts[1])
        if len(parts) >= 4 and parts[2] == "channels":
            labels = {c.alias: c.label for c in current.columns}
            return f"{name}: {labels.get(parts[3], parts[3])}"
        return f"{name}: how often"
    return FIELD_LABELS.get(parts[0], parts[0] or "Settings")


def errors_by_input(errors: list[dict[str, str]]) -> dict[str, list[str]]:
    by_input: dict[str, list[str]] = defaultdict(list)
    for item in errors:
        by_input[input_id(item["field"])].append(item["message"])
    return dict(by_input)


def sentence(message: str) -> str:
    """Validation messages are phrases ("must be ..."); pages show sentences."""
    return message[:1].upper() + message[1:] + ("" if message.endswith((".", "?", "!")) else ".")
