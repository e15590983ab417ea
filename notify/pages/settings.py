"""The notification settings page (``/settings/notifications/``) and its test sends.

One page, several plain HTML forms: the grid and schedule (one save), each
contact point's actions (``contacts.py``), "send me a test". Every form
works without JavaScript: a POST that succeeds redirects back with a
message; one that fails renders the page again (status 400 or 429) with the
submitted values, an error next to each bad field and a summary at the top
that takes the focus.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta
from functools import cache
from typing import Any
from zoneinfo import available_timezones

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.timesince import timesince
from django.views.decorators.http import require_http_methods, require_POST

from channels.base import ChannelConfigurationError
from notify import conf
from notify.models import ContactPoint, DeliveryMode, Suppression
from notify.pages import addresses, contact_points, grid, sendtest
from notify.pages.forms import (
    cell_input,
    error_label,
    errors_by_input,
    input_id,
    mode_input,
    preferences_from_post,
    sentence,
)
from notify.pages.prefs import WEEKDAYS, Preferences, as_data, channel_label, read, save, validate

log = logging.getLogger("notify.pages")

SCHEDULE_FIELDS = ("timezone", "quiet_start", "quiet_end", "digest_hour", "digest_weekday")


@cache
def timezone_names() -> list[str]:
    """Zones worth offering: "Area/City" names and UTC (every IANA name is accepted)."""
    legacy = ("Etc/", "SystemV/", "US/", "posix", "right/")
    names = {
        z for z in available_timezones() if "/" in z and not z.startswith(legacy) and z[0].isupper()
    }
    return sorted(names | {"UTC"})


def page_url(fragment: str = "") -> str:
    url = reverse("notify-settings:page")
    return f"{url}#{fragment}" if fragment else url


def render_page(
    request: HttpRequest,
    *,
    submitted: dict[str, Any] | None = None,
    errors: list[dict[str, str]] | tuple = (),
    add_form: dict[str, Any] | None = None,
    contact_errors: dict[int, dict[str, list[str]]] | None = None,
    test_error: str = "",
    status: int = 200,
) -> HttpResponse:
    """The whole page; on error, with the submitted values and every message."""
    user = request.user
    now = timezone.now()
    current = read(user, now)
    values = submitted if submitted is not None else as_data(current)
    by_input = errors_by_input(list(errors))
    summary = [
        {"id": input_id(e["field"]), "text": f"{error_label(e['field'], current)}: {e['message']}"}
        for e in errors
    ]
    contacts, add = contacts_context(user, now, add_form, contact_errors or {})
    for item in contacts:
        for field, texts in item["errors"].items():
            where = f"{item['label']} {item['display']}"
            summary += [
                {"id": f"{field}-{item['point'].pk}", "text": f"{where}: {t}"} for t in texts
            ]
    for field, texts in add["errors"].items():
        label = {"kind": "Type", "address": "Address"}.get(field, field)
        summary += [{"id": f"id_{field}", "text": f"{label}: {t}"} for t in texts]
    if test_error:
        summary.append({"id": "test-sends", "text": test_error})
    paused = current.paused_until_date()
    shown = grid.user_grid(user, current)
    context = {
        "active": "settings",
        "columns": [
            {"label": c.label, "no_address": c.alias in shown.no_address} for c in shown.columns
        ],
        "rows": grid_rows(current, values, by_input, shown),
        "modes": [(value, label.capitalize()) for value, label in DeliveryMode.choices],
        "fields": schedule_fields(values, by_input),
        "guess_timezone": not current.saved and submitted is None,
        "timezones": timezone_names(),
        "hours": [(str(h), f"{h:02d}:00") for h in range(24)],
        "weekdays": [(str(i), name) for i, name in enumerate(WEEKDAYS)],
        "paused_until": paused,
        "pause_min": (now.astimezone(current.zone).date() + timedelta(days=1)).isoformat(),
        "contacts": contacts,
        "add": add,
        "account_email": account_email(user, contacts),
        "tests": tests_context(user, current, now),
        "tests_left": sendtest.tests_left(user),
        "tests_per_hour": sendtest.TESTS_PER_HOUR,
        "test_error": test_error,
        "error_summary": summary,
        "form_errors": bool(errors),
    }
    return render(request, "settings.html", context, status=status)


def grid_rows(
    current: Preferences,
    values: dict[str, Any],
    by_input: dict[str, list[str]],
    shown: grid.Grid,
) -> list[dict[str, Any]]:
    """One row per category; a cell its rules cannot send on, or that the user
    cannot reach, is drawn empty (``shown`` is False)."""
    rows = []
    submitted = values.get("categories") or {}
    for category in current.categories:
        entry = {} if category.critical else submitted.get(category.key) or {}
        chosen = entry.get("channels") or {}
        cells = []
        for column in shown.columns:
            cell_id = cell_input(category.key, column.alias)
            on = chosen.get(column.alias, current.cells[(category.pk, column.alias)])
            cells.append(
                {
                    "id": cell_id,
                    "label": column.label,
                    "shown": column.alias in shown.shown[category.pk],
                    "checked": True if category.critical else bool(on),
                    "errors": [sentence(m) for m in by_input.get(cell_id, [])],
                }
            )
        mode_id = mode_input(category.key)
        rows.append(
            {
                "category": category,
                "mode": entry.get("mode", current.modes[category.pk]),
                "mode_id": mode_id,
                "mode_errors": [sentence(m) for m in by_input.get(mode_id, [])],
                "cells": cells,
            }
        )
    return rows


def schedule_fields(values: dict[str, Any], by_input: dict[str, list[str]]) -> dict[str, Any]:
    fields = {}
    for name in (*SCHEDULE_FIELDS, "paused_until"):
        value = values.get(name)
        fields[name] = {
            "id": f"id_{name}",
            "value": "" if value is None else str(value),
            "errors": [sentence(m) for m in by_input.get(f"id_{name}", [])],
        }
    return fields


def contacts_context(
    user: Any,
    now: Any,
    add_form: dict[str, Any] | None,
    contact_errors: dict[int, dict[str, list[str]]],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    points = list(
        ContactPoint.objects.filter(user_id=user.pk).order_by(
            "kind", "-is_primary", "created_at", "pk"
        )
    )
    blocked = set(
        Suppression.objects.filter(
            lifted_at__isnull=True,
            kind__in={p.kind for p in points},
            address__in={a for p in points for a in (p.address, p.address.lower())},
        ).values_list("kind", "address")
    )
    items = []
    for point in points:
        state = contact_points.code_state(point, now)
        sent = point.verification_sent_at
        items.append(
            {
                "point": point,
                "label": addresses.LABELS.get(point.kind, point.kind),
                "display": addresses.display(point),
                "sent_ago": ago(sent, now) if sent else "",
                "method": contact_points.verification_method(point),
                "state": state,
                "minutes_left": minutes_until(sent + contact_points.CODE_TTL, now) if sent else 0,
                "tries_left": contact_points.CODE_ATTEMPTS - point.verification_attempts,
                "blocked": (point.kind, point.address) in blocked
                or (point.kind, point.address.lower()) in blocked,
                "errors": contact_errors.get(point.pk, {}),
            }
        )
    kinds = addresses.addable_kinds()
    add_form = add_form or {}
    add = {
        "kinds": [
            {
                "value": kind,
                "label": addresses.LABELS[kind],
                "hint": addresses.HINTS[kind],
            }
            for kind in kinds
        ],
        "kind": add_form.get("kind") or kinds[0],
        "address": add_form.get("address", ""),
        "errors": add_form.get("errors", {}),
    }
    return items, add


def minutes_until(moment: datetime, now: datetime) -> int:
    return max(1, math.ceil((moment - now).total_seconds() / 60))


def account_email(user: Any, contacts: list[dict[str, Any]]) -> str:
    """The account's email, when it is the email address in use (no email contact point)."""
    if not conf.get("USER_EMAIL_IS_CONTACT") or not getattr(user, "email", ""):
        return ""
    if any(item["point"].kind == ContactPoint.Kind.EMAIL for item in contacts):
        return ""
    return user.email


def tests_context(user: Any, current: Preferences, now: datetime) -> list[dict[str, Any]]:
    results = sendtest.last_results(user, current.timezone)
    return [
        {
            "alias": column.alias,
            "label": column.label,
            "result": results.get(column.alias),
            "when": ago(results[column.alias].at, now) if column.alias in results else "",
        }
        for column in current.columns
    ]


def ago(moment: datetime, now: datetime) -> str:
    if now - moment < timedelta(minutes=1):
        return "just now"
    return f"{timesince(moment, now, depth=1)} ago"


# -- views --------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def notification_settings(request: HttpRequest) -> HttpResponse:
    """Show the settings; on POST validate the whole form, then save it all or nothing."""
    if request.method != "POST":
        return render_page(request)
    current = read(request.user)
    data = preferences_from_post(request.POST, current, grid.user_grid(request.user, current).shown)
    changes, errors = validate(data, request.user, current=current)
    if errors:
        return render_page(request, submitted=data, errors=errors, status=400)
    save(request.user, changes)
    messages.success(request, "Your notification settings are saved.")
    return redirect(page_url())


@login_required
@require_POST
def send_test(request: HttpRequest) -> HttpResponse:
    """Send a test on the chosen channel and say what became of it."""
    alias = request.POST.get("channel", "")
    try:
        result = sendtest.send_test(request.user, alias)
    except sendtest.TestRefused as exc:
        return render_page(request, test_error=sentence(str(exc)), status=exc.status)
    except ChannelConfigurationError:
        log.exception("test send on channel %r: the channel is misconfigured", alias)
        return render_page(
            request,
            test_error="This channel is not set up correctly; the operators have been told.",
            status=500,
        )
    text = f"Test on {channel_label(alias)}: {result.text}."
    if result.ok:
        messages.success(request, text)
    else:
        messages.error(request, text)
    return redirect(page_url("test-sends"))
