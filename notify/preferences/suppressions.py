"""The suppression list: addresses nothing may be sent to.

Webhooks (bounces, complaints), inbound SMS (STOP/START) and permanent
provider errors call these; ``notify.preferences.directory`` reads the list at fan-out and
again before sending.
"""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.utils import timezone

from notify.models import Suppression


def normalise(kind: str, address: str) -> str:
    address = address.strip()
    return address.lower() if kind == "email" else address


def suppress(
    kind: str, address: str, reason: str, *, source: str = "", detail: str = ""
) -> Suppression:
    """Add an active suppression (idempotent: an active one is returned as is)."""
    address = normalise(kind, address)
    existing = Suppression.objects.filter(
        kind=kind, address=address, lifted_at__isnull=True
    ).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            return Suppression.objects.create(
                kind=kind, address=address, reason=reason, source=source, detail=detail[:2000]
            )
    except IntegrityError:  # a concurrent suppress won
        return Suppression.objects.get(kind=kind, address=address, lifted_at__isnull=True)


def lift(
    kind: str, address: str, *, by=None, reason: str = "", only_reason: str | None = None
) -> int:
    """Lift active suppressions of an address; ``only_reason`` limits which (START
    lifts an SMS STOP, not a hard bounce)."""
    queryset = Suppression.objects.filter(
        kind=kind, address=normalise(kind, address), lifted_at__isnull=True
    )
    if only_reason is not None:
        queryset = queryset.filter(reason=only_reason)
    return queryset.update(lifted_at=timezone.now(), lifted_by=by, lift_reason=reason[:200])


def is_suppressed(kind: str, address: str) -> bool:
    return Suppression.objects.filter(
        kind=kind, address=normalise(kind, address), lifted_at__isnull=True
    ).exists()
