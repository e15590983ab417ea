"""A user's notification preferences as plain data: read, validate, write.

The settings page and ``GET/PUT /api/v1/preferences`` both go through this
module, so a value is accepted or refused with the same message in both.
``validate`` checks every field and returns every error before ``save`` writes
anything, in one transaction: bad input changes nothing.

What a missing row means is not decided here: ``read`` asks
``notify.preferences.decide`` (``category_mode``, ``channel_enabled``), the functions
fan-out and dispatch use, so the grid shows what will really happen.

The data, as the API's JSON and as the settings form is parsed into::

    {
      "timezone": "Europe/Paris",
      "quiet_start": "22:00", "quiet_end": "07:00",   # both, or both null
      "digest_hour": 8,                                # 0-23, in the user's zone
      "digest_weekday": 0,                             # 0 = Monday
      "paused_until": "2026-05-01",                    # the day sending resumes, or null
      "categories": {"orders": {"mode": "daily", "channels": {"email": true, "sms": false}}}
    }

A field left out keeps its value. Error fields are paths in this document:
``timezone``, ``categories.orders.mode``, ``categories.orders.channels.sms``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from channels.base import ChannelConfigurationError
from notify import conf
from notify.models import (
    Category,
    CategoryPreference,
    ChannelPreference,
    DeliveryMode,
    UserSettings,
)
from notify.models.preferences import validate_timezone
from notify.preferences.decide import CategoryInfo, UserPrefs, category_mode, channel_enabled
from notify.preferences.directory import category_info, load_preferences
from notify.registry import describe

# The hidden system category of "send me a test" (see ``sendtest``).
TEST_CATEGORY_KEY = "notify-test"

SCALARS = ("timezone", "quiet_start", "quiet_end", "digest_hour", "digest_weekday", "paused_until")
FIELDS = (*SCALARS, "categories")
# Sent by GET for clients to draw a grid; accepted and ignored by PUT, so a GET
# body can be edited and sent back as it is.
READ_ONLY = ("catalog",)
MODES = tuple(DeliveryMode.values)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MAX_PAUSE = timedelta(days=366)
TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,6})?)?$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
INTEGER = re.compile(r"^\s*[-+]?\d{1,9}\s*$")
# How channel aliases are shown; an alias's "LABEL" in NOTIFY["CHANNELS"] wins.
CHANNEL_LABELS = {
    "email": "Email",
    "sms": "SMS",
    "chat": "Chat",
    "slack": "Slack",
    "teams": "Teams",
    "discord": "Discord",
    "webhook": "Webhook",
    "inapp": "In-app",
    "push": "Push",
}

FieldError = dict[str, str]


def _default(name: str) -> Any:
    return UserSettings._meta.get_field(name).get_default()


@dataclass(frozen=True, slots=True)
class Column:
    """One channel of the grid."""

    alias: str
    label: str
    address_kind: str | None


def channel_label(alias: str) -> str:
    config = conf.get("CHANNELS").get(alias) or {}
    return config.get("LABEL") or CHANNEL_LABELS.get(alias) or alias.replace("_", " ").capitalize()


def channel_columns() -> list[Column]:
    """The configured channels, in settings order. A channel that cannot be
    built is left out: the start-up system checks report it to ops."""
    columns = []
    for alias in conf.get("CHANNELS"):
        try:
            kind = describe(alias)[0]
        except ChannelConfigurationError:
            continue
        columns.append(Column(alias, channel_label(alias), kind))
    return columns


def visible_categories() -> list[Category]:
    return list(Category.objects.exclude(key=TEST_CATEGORY_KEY).order_by("name", "pk"))


@dataclass(slots=True)
class Preferences:
    """A user's preferences with every default filled in."""

    timezone: str
    quiet_start: time | None
    quiet_end: time | None
    digest_hour: int
    digest_weekday: int
    paused_until: datetime | None  # None once it has passed
    saved: bool  # False: the user never saved settings (defaults throughout)
    categories: list[Category]
    columns: list[Column]
    modes: dict[int, str]  # category id -> effective mode
    cells: dict[tuple[int, str], bool]  # (category id, alias) -> effective on/off

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def paused_until_date(self) -> date | None:
        """The day sending resumes, in the user's zone."""
        if self.paused_until is None:
            return None
        return self.paused_until.astimezone(self.zone).date()


def read(user: Any, now: datetime | None = None) -> Preferences:
    """The user's preferences as they apply now (defaults where nothing is saved)."""
    now = now or timezone.now()
    categories = visible_categories()
    columns = channel_columns()
    row = UserSettings.objects.filter(user_id=user.pk).first()
    loaded = load_preferences([user.pk], [c.pk for c in categories], ()).get(user.pk)
    loaded = loaded or UserPrefs(user_id=user.pk)
    modes: dict[int, str] = {}
    cells: dict[tuple[int, str], bool] = {}
    for category in categories:
        info = category_info(category)
        # decide() sends a critical category whatever the rows say: show that.
        modes[category.pk] = (
            DeliveryMode.IMMEDIATE if info.critical else category_mode(info, loaded)
        )
        for column in columns:
            cells[(category.pk, column.alias)] = info.critical or channel_enabled(
                info, column.alias, loaded
            )
    paused_until = row.paused_until if row else None
    if paused_until is not None and paused_until <= now:
        paused_until = None
    return Preferences(
        timezone=row.timezone if row else _default("timezone"),
        quiet_start=row.quiet_start if row else None,
        quiet_end=row.quiet_end if row else None,
        digest_hour=row.digest_hour if row else _default("digest_hour"),
        digest_weekday=row.digest_weekday if row else _default("digest_weekday"),
        paused_until=paused_until,
        saved=row is not None,
        categories=categories,
        columns=columns,
        modes=modes,
        cells=cells,
    )


def format_time(value: time | None) -> str | None:
    return value.strftime("%H:%M") if value is not None else None


def as_data(prefs: Preferences) -> dict[str, Any]:
    """The preferences as the document described at the top of this module."""
    paused = prefs.paused_until_date()
    return {
        "timezone": prefs.timezone,
        "quiet_start": format_time(prefs.quiet_start),
        "quiet_end": format_time(prefs.quiet_end),
        "digest_hour": prefs.digest_hour,
        "digest_weekday": prefs.digest_weekday,
        "paused_until": paused.isoformat() if paused else None,
        "categories": {
            c.key: {
                "mode": prefs.modes[c.pk],
                "channels": {col.alias: prefs.cells[(c.pk, col.alias)] for col in prefs.columns},
            }
            for c in prefs.categories
        },
    }


def catalog(prefs: Preferences) -> dict[str, Any]:
    """What the grid is made of: channels and categories, for drawing it."""
    return {
        "channels": [{"alias": c.alias, "label": c.label} for c in prefs.columns],
        "categories": [
            {
                "key": c.key,
                "name": c.name,
                "description": c.description,
                "critical": c.critical,
                "critical_reason": c.critical_reason,
                "opt_in": c.opt_in,
                "default_mode": c.default_mode,
            }
            for c in prefs.categories
        ],
        "modes": list(MODES),
    }


# -- validation ---------------------------------------------------------------------


class Invalid(ValueError):
    """One value is wrong; the message says what is expected."""


@dataclass(slots=True)
class Changes:
    """What a valid submission changes; ``save`` writes it."""

    settings: dict[str, Any] = field(default_factory=dict)  # UserSettings fields
    modes: dict[int, str] = field(default_factory=dict)  # category id -> mode
    cells: dict[tuple[int, str], bool] = field(default_factory=dict)
    infos: dict[int, CategoryInfo] = field(default_factory=dict)


def parse_time(value: Any) -> time | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not TIME.match(value.strip()):
        raise Invalid("must be a time like 22:00 (24-hour clock), or empty")
    return time.fromisoformat(value.strip()).replace(second=0, microsecond=0)


def parse_int(value: Any, low: int, high: int, expected: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise Invalid(expected)
    if isinstance(value, str):
        if not INTEGER.match(value):
            raise Invalid(expected)
        value = int(value)
    if not low <= value <= high:
        raise Invalid(f"{expected} (got {value})")
    return value


def parse_date(value: Any) -> date:
    if not isinstance(value, str) or not DATE.match(value.strip()):
        raise Invalid("must be a date like 2026-05-01, or empty")
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise Invalid(f"{value.strip()} is not a date in the calendar") from None


def parse_timezone(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid("choose a time zone, e.g. Europe/Paris")
    value = value.strip()
    if len(value) > 64:
        raise Invalid("is too long for a time zone name (e.g. Europe/Paris)")
    try:
        validate_timezone(value)
    except ValidationError as exc:
        raise Invalid(exc.messages[0]) from None
    return value


def validate(
    data: Mapping[str, Any],
    user: Any,
    *,
    current: Preferences | None = None,
    now: datetime | None = None,
) -> tuple[Changes, list[FieldError]]:
    """Check a whole submission; return the changes and every error found.

    The changes may be written only when the error list is empty.
    """
    now = now or timezone.now()
    current = current or read(user, now)
    errors: list[FieldError] = []
    changes = Changes()

    def error(path: str, message: str) -> None:
        errors.append({"field": path, "message": message})

    if not isinstance(data, Mapping):
        return changes, [{"field": "", "message": "the preferences must be an object"}]
    for key in data:
        if key not in FIELDS and key not in READ_ONLY:
            error(str(key)[:100], f"unknown field; the fields are {', '.join(FIELDS)}")

    zone_name = current.timezone
    if "timezone" in data:
        try:
            zone_name = changes.settings["timezone"] = parse_timezone(data["timezone"])
        except Invalid as exc:
            error("timezone", str(exc))

    if "quiet_start" in data or "quiet_end" in data:
        ends: dict[str, time | None] = {}
        for name in ("quiet_start", "quiet_end"):
            try:
                ends[name] = parse_time(data[name]) if name in data else getattr(current, name)
            except Invalid as exc:
                error(name, str(exc))
        if len(ends) == 2:
            start, end = ends["quiet_start"], ends["quiet_end"]
            if start is not None and end is None:
                error("quiet_end", "set when quiet hours end too, or clear the start time")
            elif start is None and end is not None:
                error("quiet_start", "set when quiet hours start too, or clear the end time")
            elif start is not None and start == end:
                error("quiet_end", "must differ from the start time")
            else:
                changes.settings.update(quiet_start=start, quiet_end=end)

    if "digest_hour" in data:
        try:
            changes.settings["digest_hour"] = parse_int(
                data["digest_hour"], 0, 23, "must be a whole hour from 0 to 23"
            )
        except Invalid as exc:
            error("digest_hour", str(exc))

    if "digest_weekday" in data:
        try:
            changes.settings["digest_weekday"] = parse_int(
                data["digest_weekday"], 0, 6, "must be a day from 0 (Monday) to 6 (Sunday)"
            )
        except Invalid as exc:
            error("digest_weekday", str(exc))

    if "paused_until" in data:
        value = data["paused_until"]
        if value is None or value == "":
            changes.settings["paused_until"] = None
        else:
            try:
                day = parse_date(value)
                zone = ZoneInfo(zone_name)
                today = now.astimezone(zone).date()
                if day <= today:
                    raise Invalid(
                        f"must be a day after today ({today.isoformat()}): "
                        "sending resumes at the start of that day"
                    )
                if day - today > MAX_PAUSE:
                    raise Invalid("can be at most a year from today")
                changes.settings["paused_until"] = datetime.combine(day, time(0), tzinfo=zone)
            except Invalid as exc:
                error("paused_until", str(exc))

    if "categories" in data:
        _validate_categories(data["categories"], current, changes, error)
    return changes, errors


def _validate_categories(value: Any, current: Preferences, changes: Changes, error) -> None:
    if not isinstance(value, Mapping):
        error("categories", "must be an object: category key -> {mode, channels}")
        return
    by_key = {c.key: c for c in current.categories}
    aliases = [c.alias for c in current.columns]
    for key, entry in value.items():
        path = f"categories.{str(key)[:100]}"
        category = by_key.get(key)
        if category is None:
            error(path, f"there is no category '{str(key)[:100]}'")
            continue
        if not isinstance(entry, Mapping):
            error(path, "must be an object with mode and channels")
            continue
        info = changes.infos[category.pk] = category_info(category)
        reason = category.critical_reason or "it is critical"
        for extra in sorted(str(k) for k in entry.keys() - {"mode", "channels"}):
            error(f"{path}.{extra[:100]}", "unknown field; a category has mode and channels")
        if "mode" in entry:
            mode = entry["mode"]
            if not isinstance(mode, str) or mode not in MODES:
                error(f"{path}.mode", f"must be one of {', '.join(MODES)}")
            elif info.critical and mode != DeliveryMode.IMMEDIATE:
                error(f"{path}.mode", f"{category.name} is always sent immediately: {reason}")
            elif not info.critical:  # a critical category needs no row
                changes.modes[category.pk] = mode
        if "channels" in entry:
            cells = entry["channels"]
            if not isinstance(cells, Mapping):
                error(f"{path}.channels", "must be an object: channel -> true or false")
                continue
            for alias, on in cells.items():
                cell = f"{path}.channels.{str(alias)[:50]}"
                if alias not in aliases:
                    error(cell, f"there is no channel '{str(alias)[:50]}' ({', '.join(aliases)})")
                elif not isinstance(on, bool):
                    error(cell, "must be true or false")
                elif info.critical and not on:
                    error(cell, f"{category.name} cannot be turned off: {reason}")
                elif not info.critical:
                    changes.cells[(category.pk, alias)] = on


# -- writing ------------------------------------------------------------------------


def save(user: Any, changes: Changes) -> None:
    """Write validated changes in one transaction.

    A mode or cell equal to its category's default is stored as no row (the
    row is deleted), so a user who never chose follows the category's default.
    """
    blank = UserPrefs(user_id=user.pk)
    with transaction.atomic():
        if changes.settings:
            row, _ = UserSettings.objects.select_for_update().get_or_create(user_id=user.pk)
            for name, value in changes.settings.items():
                setattr(row, name, value)
            row.save()
        if changes.modes:
            custom = {
                cid: mode
                for cid, mode in changes.modes.items()
                if mode != changes.infos[cid].default_mode
            }
            CategoryPreference.objects.filter(
                user_id=user.pk, category_id__in=changes.modes.keys() - custom.keys()
            ).delete()
            CategoryPreference.objects.bulk_create(
                [
                    CategoryPreference(user_id=user.pk, category_id=cid, mode=mode)
                    for cid, mode in custom.items()
                ],
                update_conflicts=True,
                unique_fields=["user", "category"],
                update_fields=["mode"],
            )
        if changes.cells:
            custom_cells = {
                key: on
                for key, on in changes.cells.items()
                if on != channel_enabled(changes.infos[key[0]], key[1], blank)
            }
            for cid, alias in changes.cells.keys() - custom_cells.keys():
                ChannelPreference.objects.filter(
                    user_id=user.pk, category_id=cid, channel=alias
                ).delete()
            ChannelPreference.objects.bulk_create(
                [
                    ChannelPreference(user_id=user.pk, category_id=cid, channel=alias, enabled=on)
                    for (cid, alias), on in custom_cells.items()
                ],
                update_conflicts=True,
                unique_fields=["user", "category", "channel"],
                update_fields=["enabled"],
            )
