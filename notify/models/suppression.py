from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Suppression(models.Model):
    """An address nothing may be sent to: hard bounce, spam complaint, SMS STOP.

    Applies to every category, critical ones included. Ops lift one in admin
    (``lifted_at``); an SMS START lifts an SMS STOP.
    """

    class Reason(models.TextChoices):
        HARD_BOUNCE = "hard_bounce", "hard bounce"
        COMPLAINT = "complaint", "spam complaint"
        SMS_STOP = "sms_stop", "SMS STOP"
        INVALID = "invalid", "invalid address"
        MANUAL = "manual", "added by ops"

    kind = models.CharField(max_length=20)  # a ContactPoint.Kind
    address = models.CharField(max_length=500)  # normalised: lower-case email, E.164 phone
    reason = models.CharField(max_length=20, choices=Reason.choices)
    source = models.CharField(max_length=50, blank=True, help_text="provider or 'admin'")
    detail = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    lifted_at = models.DateTimeField(null=True, blank=True)
    lifted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    lift_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "address"],
                condition=models.Q(lifted_at__isnull=True),
                name="suppression_active_unique",
            )
        ]
        indexes = [models.Index(fields=["kind", "address"], name="suppression_lookup_idx")]

    def __str__(self) -> str:
        return f"{self.kind}:{self.address} ({self.reason})"

    @property
    def active(self) -> bool:
        return self.lifted_at is None
