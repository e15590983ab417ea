"""Provider status reports (webhooks) applied to deliveries.

Every provider's webhook view parses its own format, checks its own
signature, then hands the normalised report here. The report is kept
(``ProviderEvent``) whether or not a delivery matches it, and the view answers
2xx only after it is stored (DESIGN.md, 8: no report is lost).

A report can arrive before the send is recorded: Twilio and ESPs post their
first callbacks within milliseconds of accepting a message, while our worker
is still writing the outcome. Such a report is stored unattached ("waiting")
and applied when the send is recorded (``apply_waiting_reports``, called by
``notify.outbox.rows.record_outcomes`` once the provider's id is committed).
Both sides write, commit, then look for the other: the report after storing
itself looks for the delivery again, the recorder after committing looks for
waiting reports; whichever commits second sees the other, and the delivery's
row lock makes applying a report happen once.

Reports may come in any order. A delivery's status only moves forward through
``sent`` → ``delivered`` → ``bounced`` / ``failed`` (a bounce after delivery is
still bad news; a late "delivered" or "sent" never undoes a bounce), so the
final state does not depend on the order the reports arrived in.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from notify.models import Delivery, ProviderEvent
from notify.models.status import Status
from notify.outbox import engagement
from notify.preferences.suppressions import suppress

log = logging.getLogger("notify.outbox.status_reports")

# Normalised report types, mapped by each provider from its own codes.
QUEUED, SENT, DELIVERED, DEFERRED, BOUNCED, FAILED, COMPLAINED, REJECTED = (
    "queued",
    "sent",
    "delivered",
    "deferred",
    "bounced",
    "failed",
    "complained",
    "rejected",
)

# Engagement reports (ESP open and click tracking): recorded on the
# notification, not a delivery status (``notify.outbox.engagement``).
OPENED, CLICKED = "opened", "clicked"

# What each report makes of the delivery (None: record only).
STATUS_FOR = {
    OPENED: None,
    CLICKED: None,
    QUEUED: None,
    SENT: None,
    DEFERRED: None,
    DELIVERED: Status.DELIVERED,
    BOUNCED: Status.BOUNCED,
    COMPLAINED: None,  # delivered, then marked as spam: suppress, keep the status
    REJECTED: Status.FAILED,
    FAILED: Status.FAILED,
}
# A final status is not overwritten by a late or out-of-order report, except
# that bad news after "delivered" (a bounce arriving late) is still recorded.
OVERRIDABLE = {Status.SENDING, Status.SENT, Status.DELIVERED, Status.PENDING}


@dataclass(frozen=True, slots=True)
class StatusReport:
    provider: str
    event_type: str  # one of the constants above
    message_id: str
    error_code: str = ""
    detail: str = ""
    recipient: str = ""
    suppress_reason: str = ""  # a Suppression.Reason, when the report should suppress
    suppress_kind: str = ""  # the contact kind of ``recipient``
    payload: dict[str, Any] = field(default_factory=dict)


def by_provider_id(*message_ids: str) -> Q:
    """Deliveries with these provider ids, in the terms of the partial index
    ``delivery_provider_id_idx`` (SQLite uses it only if its condition is
    repeated; fan-out's rows, with no id yet, are left out of it)."""
    return Q(provider_message_id__gt="", provider_message_id__in=message_ids)


def apply_status(report: StatusReport) -> Delivery | None:
    """Record the report, move the delivery it names, suppress if it says so.

    Returns the delivery the report was applied to; ``None`` when no send with
    that provider id is recorded yet (the report waits for it)."""
    with transaction.atomic():
        delivery = (
            Delivery.objects.select_for_update().filter(by_provider_id(report.message_id)).first()
            if report.message_id
            else None
        )
        stored = ProviderEvent.objects.create(
            provider=report.provider,
            event_type=report.event_type,
            provider_message_id=report.message_id[:255],
            delivery=delivery,
            error_code=report.error_code[:50],
            detail=report.detail[:2000],
            payload=report.payload,
        )
        if delivery is not None:
            move_delivery(delivery, stored)
        if report.suppress_reason and report.recipient and report.suppress_kind:
            suppress(
                report.suppress_kind,
                report.recipient,
                report.suppress_reason,
                source=report.provider,
                detail=report.detail or report.event_type,
            )
    if delivery is None and report.message_id:
        # The send may have been recorded after our look-up and before we
        # committed: look again now that the report is stored.
        apply_waiting_reports([report.message_id])
        delivery = Delivery.objects.filter(by_provider_id(report.message_id)).first()
    return delivery


def move_delivery(delivery: Delivery, report: ProviderEvent) -> bool:
    """Apply one stored report to a delivery locked by the caller; True if it moved."""
    if report.event_type in (OPENED, CLICKED):
        engagement.record([delivery.notification_id], report.event_type, report.received_at)
        return False
    new_status = STATUS_FOR.get(report.event_type)
    if not new_status or delivery.status not in OVERRIDABLE or delivery.status == new_status:
        return False
    delivery.status = new_status
    fields = ["status", "updated_at"]
    if new_status == Status.DELIVERED:
        delivery.delivered_at = report.received_at or timezone.now()
        fields.append("delivered_at")
    else:
        delivery.error_code = report.error_code[:50]
        delivery.error_message = (report.detail or report.event_type)[:2000]
        fields += ["error_code", "error_message"]
    delivery.save(update_fields=fields)
    return True


def any_waiting(message_ids: list[str]) -> bool:
    """Whether a stored report waits for one of these provider ids: the check
    every recorded send makes, in SQL (the ORM's ``exists()`` compiled a query
    per tick, ~0.2 ms of a worker's time per delivery)."""
    table = connection.ops.quote_name(ProviderEvent._meta.db_table)
    marks = ", ".join(["%s"] * len(message_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT 1 FROM {table} WHERE provider_message_id IN ({marks}) "
            "AND delivery_id IS NULL LIMIT 1",
            message_ids,
        )
        return cursor.fetchone() is not None


def apply_waiting_reports(message_ids: Iterable[str]) -> int:
    """Apply the stored reports that arrived before their send was recorded.

    Called with the provider ids of sends just recorded (committed); one
    indexed query when nothing waits. Returns how many reports were applied."""
    ids = sorted({m[:255] for m in message_ids if m})
    if not ids or not any_waiting(ids):
        return 0
    waiting = ProviderEvent.objects.filter(delivery__isnull=True, provider_message_id__in=ids)
    applied = 0
    with transaction.atomic():
        # Lock the deliveries first: a concurrent apply_status or another
        # recorder waits here, then finds these reports attached.
        deliveries = {
            d.provider_message_id: d
            for d in Delivery.objects.select_for_update()
            .filter(by_provider_id(*ids))
            .order_by("pk")
        }
        if not deliveries:
            return 0
        reports = list(
            waiting.filter(provider_message_id__in=list(deliveries)).order_by("received_at", "pk")
        )
        for report in reports:
            delivery = deliveries[report.provider_message_id]
            move_delivery(delivery, report)
            report.delivery = delivery
        ProviderEvent.objects.bulk_update(reports, ["delivery"])
        applied = len(reports)
    if applied:
        log.info("%d status report(s) applied on arriving before their send was recorded", applied)
    return applied
