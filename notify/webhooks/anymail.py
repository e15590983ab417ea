"""ESP tracking webhooks, through django-anymail.

Anymail's view (routed in ``notify.webhooks.urls``) checks the HTTP basic auth
of ``ANYMAIL["WEBHOOK_SECRET"]`` — a forged or missing credential is a 400 and
nothing runs; with no secret configured the view is closed (403,
``notify.webhooks.closed``) — then parses the ESP's payload into a normalised
``AnymailTrackingEvent`` and sends the ``tracking`` signal. This module
receives it and turns it into a :class:`notify.outbox.status_reports.StatusReport`:

* the event type maps to a report type in :data:`REPORT_FOR` (opens and clicks
  are not delivery statuses: they are recorded on the notification as
  engagement, which workflow steps read);
* hard bounces and complaints suppress the address (:func:`suppression_for`);
* :func:`notify.outbox.status_reports.apply_status` records the report, moves the delivery
  whose ``provider_message_id`` is the ESP's message id, and suppresses.

An exception here makes the view answer 500, so the ESP retries later;
``apply_status`` is idempotent, so a retried report changes nothing twice.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from anymail.signals import AnymailTrackingEvent, EventType, RejectReason, tracking
from django.conf import settings
from django.core import checks
from django.dispatch import receiver

from notify.models import Suppression
from notify.outbox import status_reports as status
from notify.outbox.status_reports import StatusReport, apply_status

log = logging.getLogger("notify.webhooks.anymail")

# Anymail's normalised event type -> notify's report type. Anything else (opened,
# clicked, subscribed, autoresponded, inbound) is not about delivery: ignored.
REPORT_FOR: dict[str, str] = {
    EventType.QUEUED: status.QUEUED,
    EventType.SENT: status.SENT,
    EventType.DELIVERED: status.DELIVERED,
    EventType.DEFERRED: status.DEFERRED,
    EventType.BOUNCED: status.BOUNCED,
    EventType.COMPLAINED: status.COMPLAINED,
    EventType.REJECTED: status.REJECTED,
    EventType.FAILED: status.FAILED,
    # Engagement: a workflow's "opened" and "clicked" (a click also reads it).
    EventType.OPENED: status.OPENED,
    EventType.CLICKED: status.CLICKED,
    # The recipient unsubscribed at the ESP: recorded for ops; notify's own
    # preferences and one-click unsubscribe decide what is sent.
    EventType.UNSUBSCRIBED: "unsubscribed",
    EventType.UNKNOWN: "unknown",
}

# ESP bounce types that anymail reports as "bounced" but that do not make an
# address undeliverable for good (Postmark's SoftBounce may be followed by a
# HardBounce, which suppresses).
SOFT_BOUNCE_TYPES = frozenset({"SoftBounce"})


def suppression_for(event: AnymailTrackingEvent) -> str:
    """The :class:`Suppression.Reason` an event calls for, or ``""``."""
    reason = event.reject_reason
    if event.event_type == EventType.COMPLAINED or reason == RejectReason.SPAM:
        return Suppression.Reason.COMPLAINT
    if event.event_type == EventType.BOUNCED and reason in (
        RejectReason.BOUNCED,
        RejectReason.INVALID,
    ):
        return "" if _is_soft_bounce(event) else Suppression.Reason.HARD_BOUNCE
    if event.event_type == EventType.REJECTED:
        # The ESP refused to send: to an address it already knows bounced, or
        # to one it finds malformed.
        if reason == RejectReason.BOUNCED:
            return Suppression.Reason.HARD_BOUNCE
        if reason == RejectReason.INVALID:
            return Suppression.Reason.INVALID
    return ""


def report_from_event(event: AnymailTrackingEvent, esp_name: str) -> StatusReport | None:
    """The status report of one anymail tracking event, or ``None`` to ignore it."""
    report_type = REPORT_FOR.get(event.event_type)
    if report_type is None:
        return None
    # A soft bounce still bounced this message; it just does not suppress.
    reason = suppression_for(event) if event.recipient else ""
    detail = " — ".join(
        str(part) for part in (event.description, event.mta_response) if part
    ) or str(event.event_type)
    return StatusReport(
        provider=esp_name.lower().replace(" ", "_"),
        event_type=report_type,
        message_id=str(event.message_id or ""),
        error_code=str(event.reject_reason or ""),
        detail=detail,
        recipient=str(event.recipient or ""),
        suppress_reason=reason,
        suppress_kind="email" if reason else "",
        payload=_jsonable(event.esp_event),
    )


@receiver(tracking, dispatch_uid="notify.webhooks.anymail.on_tracking")
def on_tracking(sender: Any, event: AnymailTrackingEvent, esp_name: str, **kwargs: Any) -> None:
    report = report_from_event(event, esp_name)
    if report is None:
        return
    delivery = apply_status(report)
    log.info(
        "%s %s for message %s -> delivery %s%s",
        report.provider,
        report.event_type,
        report.message_id or "-",
        delivery.pk if delivery is not None else "none",
        f", suppressed ({report.suppress_reason})" if report.suppress_reason else "",
    )


def _is_soft_bounce(event: AnymailTrackingEvent) -> bool:
    raw = event.esp_event
    return isinstance(raw, dict) and raw.get("Type") in SOFT_BOUNCE_TYPES


def _jsonable(raw: Any) -> dict[str, Any]:
    """The ESP's payload as stored with the report (a JSON object)."""
    if isinstance(raw, dict):
        try:
            json.dumps(raw)
            return raw
        except (TypeError, ValueError):
            return {"raw": json.loads(json.dumps(raw, default=str))}
    if hasattr(raw, "dict"):  # a QueryDict (form-encoded ESPs)
        return {key: raw.getlist(key) for key in raw}
    return {"raw": json.loads(json.dumps(raw, default=str))}


@checks.register(checks.Tags.security)
def check_webhook_secret(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Without a secret anyone could post bounces and get addresses suppressed."""
    secret = (getattr(settings, "ANYMAIL", None) or {}).get("WEBHOOK_SECRET")
    uses_esp = any(
        str(config.get("BACKEND", "")).startswith("anymail.")
        for config in (getattr(settings, "MAILERS", None) or {}).values()
    )
    if secret or not uses_esp or settings.DEBUG:
        return []
    return [
        checks.Warning(
            "The ESP tracking webhooks under /webhooks/anymail/ are closed (every report is "
            "refused with a 403): no ANYMAIL['WEBHOOK_SECRET'] is set, so bounces and "
            "complaints never reach notify.",
            hint="Set NOTIFY_WEBHOOK_BASIC_AUTH='user:password' and give the ESP the webhook "
            "URL https://user:password@<host>/webhooks/anymail/postmark/tracking/.",
            id="notify.W101",
        )
    ]
