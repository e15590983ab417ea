"""Rules: which events become which notifications, for whom, on which channels."""

from __future__ import annotations

from django.db import IntegrityError, models, transaction
from django.db.models import F


class ConfigRevision(models.Model):
    """A counter per kind of ops-edited configuration ("rules", "templates").

    Every process caches what it compiled together with the number it saw; an
    edit bumps the number in the same transaction, and each process notices at
    its next check (``NOTIFY["CONFIG_CHECK_INTERVAL"]``) without a restart.
    """

    name = models.CharField(max_length=50, primary_key=True)
    number = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name} r{self.number}"

    @classmethod
    def bump(cls, name: str) -> None:
        with transaction.atomic():
            if not cls.objects.filter(name=name).update(number=F("number") + 1):
                try:
                    with transaction.atomic():
                        cls.objects.create(name=name, number=1)
                except IntegrityError:
                    cls.objects.filter(name=name).update(number=F("number") + 1)

    @classmethod
    def current(cls, name: str) -> int:
        return cls.objects.filter(name=name).values_list("number", flat=True).first() or 0


class Rule(models.Model):
    """Maps an event type (and a condition) to a notification.

    ``recipients`` is a list of specs, one per line in admin: ``explicit``,
    ``actor``, ``payload:<dotted.path>`` (user ids or emails), ``group:<name>``,
    ``staff``, ``users:<id>,<id>``.
    """

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    event_type = models.CharField(
        max_length=200,
        db_index=True,
        help_text="The event type, e.g. order.shipped; * matches any part (order.*).",
    )
    condition = models.TextField(
        blank=True,
        help_text="A Jinja2 expression over payload, event and actor, e.g. "
        "payload.total > 100 and actor.is_staff. Empty: always.",
    )
    category = models.ForeignKey("notify.Category", on_delete=models.PROTECT)
    recipients = models.JSONField(default=list)
    channels = models.JSONField(default=list, blank=True, help_text="Empty: the default channels.")
    message = models.SlugField(
        max_length=100, help_text="The message template, e.g. order_shipped."
    )
    is_active = models.BooleanField(default=True)
    priority = models.IntegerField(default=0, help_text="Higher runs first.")
    # When: at once, after a delay, or at a time read from the payload plus an
    # offset ("24 hours before payload.starts_at": path starts_at, offset -24h).
    delay = models.DurationField(null=True, blank=True, help_text="Send this long after the event.")
    send_at_path = models.CharField(
        max_length=200,
        blank=True,
        help_text="Payload path of an ISO date-time to send at, e.g. starts_at.",
    )
    send_at_offset = models.DurationField(
        null=True, blank=True, help_text="Added to the payload time; negative for 'before'."
    )
    cancel_condition = models.TextField(
        blank=True,
        help_text="Evaluated just before sending against the current data; true cancels "
        "(e.g. payload.status == 'paid').",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-priority", "id"]

    def __str__(self) -> str:
        return self.name
