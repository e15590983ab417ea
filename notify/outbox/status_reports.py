"""Provider status reports (webhooks) applied to deliveries.

Every provider's webhook view parses its own format, checks its own
signature, then hands the normalised report here. The report is kept
(``ProviderEvent``) whether or not a delivery matches it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from notify.models import Delivery, ProviderEvent
from notify.models.status import Status
from notify.preferences.suppressions import suppress

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

# What each report makes of the delivery (None: record only).
STATUS_FOR = {
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


def apply_status(report: StatusReport) -> Delivery | None:
    """Record the report, move the delivery it names, suppress if it says so."""
    with transaction.atomic():
        delivery = (
            Delivery.objects.select_for_update()
            .filter(provider_message_id=report.message_id)
            .first()
            if report.message_id
            else None
        )
        ProviderEvent.objects.create(
            provider=report.provider,
            event_type=report.event_type,
            provider_message_id=report.message_id[:255],
            delivery=delivery,
            error_code=report.error_code[:50],
            detail=report.detail[:2000],
            payload=report.payload,
        )
        if delivery is not None:
            new_status = STATUS_FOR.get(report.event_type)
            if new_status and delivery.status in OVERRIDABLE and delivery.status != new_status:
                delivery.status = new_status
                fields = ["status", "updated_at"]
                if new_status == Status.DELIVERED:
                    delivery.delivered_at = timezone.now()
                    fields.append("delivered_at")
                else:
                    delivery.error_code = report.error_code[:50]
                    delivery.error_message = (report.detail or report.event_type)[:2000]
                    fields += ["error_code", "error_message"]
                delivery.save(update_fields=fields)
        if report.suppress_reason and report.recipient and report.suppress_kind:
            suppress(
                report.suppress_kind,
                report.recipient,
                report.suppress_reason,
                source=report.provider,
                detail=report.detail or report.event_type,
            )
    return delivery
