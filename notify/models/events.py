from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone


class Event(models.Model):
    """Something that happened. Stored before anyone hears "accepted"."""

    class Source(models.TextChoices):
        PYTHON = "python"
        SIGNAL = "signal"
        API = "api"
        CLI = "cli"

    class State(models.TextChoices):
        RECEIVED = "received"  # stored, waiting for fan-out
        PROCESSING = "processing"  # claimed by a worker
        PROCESSED = "processed"  # fan-out written
        FAILED = "failed"  # fan-out raised; see ``error``
        CANCELLED = "cancelled"  # a scheduled event cancelled before it was due

    type = models.CharField(max_length=200, db_index=True)
    payload = models.JSONField(default=dict, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Explicit recipients: user ids or email addresses, resolved at fan-out.
    recipients = models.JSONField(default=list, blank=True)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.PYTHON)
    # "app_label.model:pk" for events made from model signals.
    object_ref = models.CharField(max_length=200, blank=True)
    idempotency_scope = models.CharField(max_length=80, blank=True)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    request_hash = models.CharField(max_length=64, blank=True)
    api_key = models.ForeignKey("ApiKey", null=True, blank=True, on_delete=models.SET_NULL)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    # A scheduled event is fanned out at this time, not before.
    scheduled_for = models.DateTimeField(null=True, blank=True)
    # Tags set by event middleware (enrich, redact, drop...).
    tags = models.JSONField(default=list, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=12, choices=State.choices, default=State.RECEIVED)
    attempts = models.PositiveIntegerField(default=0)
    claimed_until = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-received_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["idempotency_scope", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="event_idempotency_key_unique",
            )
        ]
        indexes = [models.Index(fields=["status", "received_at"], name="event_status_idx")]

    def __str__(self) -> str:
        return f"{self.type} #{self.pk}"


class RuleError(models.Model):
    """A rule that failed for one event (its condition or deduplication key
    could not be evaluated): that rule wrote nothing for the event, the other
    rules went on. Shown per rule on the event in admin, counted in /metrics
    and on the delivery-health dashboard."""

    class Kind(models.TextChoices):
        CONDITION = "condition"
        DEDUP_KEY = "dedup_key", "deduplication key"
        SEND_AT = "send_at", "send time"

    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="rule_errors")
    rule = models.ForeignKey("rules.Rule", null=True, on_delete=models.SET_NULL, related_name="+")
    rule_name = models.CharField(max_length=200, blank=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    message = models.TextField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["event", "rule_id"]
        constraints = [
            models.UniqueConstraint(fields=["event", "rule", "kind"], name="rule_error_unique")
        ]

    def __str__(self) -> str:
        return (
            f"rule {self.rule_name or self.rule_id}: {self.kind} failed for event {self.event_id}"
        )


class ApiKey(models.Model):
    """A credential for the HTTP API. Only a SHA-256 of the secret is kept.

    The token is ``nfy_<prefix>_<secret>``: the prefix finds the row, the secret
    (256 random bits, so a fast hash is enough) is compared in constant time.
    """

    name = models.CharField(max_length=100, unique=True)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"

    @staticmethod
    def hash_secret(secret: str) -> str:
        return hashlib.sha256(secret.encode()).hexdigest()

    @classmethod
    def issue(cls, name: str) -> tuple[ApiKey, str]:
        """Create a key; return it and the token, which is never shown again."""
        prefix = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        key = cls.objects.create(name=name, prefix=prefix, secret_hash=cls.hash_secret(secret))
        return key, f"nfy_{prefix}_{secret}"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
