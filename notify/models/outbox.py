from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from notify.models.status import Status


class Notification(models.Model):
    """One (event, rule, user): the anchor of its deliveries and the in-app item.

    Fan-out writes only the references; the in-app delivery fills ``title``,
    ``body`` and ``url`` and sets ``inbox_at`` when it is "sent".
    """

    # Fan-out writes a row per recipient, so every index here is paid for
    # per recipient. The event's rows are found through ``notification_unique``
    # (it leads with the event); rule and category have no index of their own:
    # only deleting a rule (SET NULL) or a category (PROTECT) looks rows up by
    # them, a rare ops action that may scan.
    #
    # Event, rule and category have no database constraint (``db_constraint=
    # False``, issue 14): a chunk's rows all name the same three, so fan-out
    # checks them once per chunk (``notify.outbox.rows.lock_fanout_parents``:
    # present, and on PostgreSQL locked ``FOR KEY SHARE`` until the commit, as
    # a constraint's check would) instead of once per row. PostgreSQL ran the
    # per-row checks at the commit: 26 % of a fan-out's time. Deletes go through
    # the ORM, which cascades (``on_delete``) whatever the database declares.
    # The user keeps its constraint: every row names another one.
    event = models.ForeignKey(
        "Event",
        on_delete=models.CASCADE,
        related_name="notifications",
        db_index=False,
        db_constraint=False,
    )
    rule = models.ForeignKey(
        "rules.Rule",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        db_index=False,
        db_constraint=False,
    )
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    category = models.ForeignKey(
        "Category", on_delete=models.PROTECT, db_index=False, db_constraint=False
    )
    created_at = models.DateTimeField(default=timezone.now)
    inbox_at = models.DateTimeField(null=True, blank=True)
    title = models.CharField(max_length=500, blank=True, default="", db_default="")
    body = models.TextField(blank=True, default="", db_default="")
    url = models.CharField(max_length=1000, blank=True, default="", db_default="")
    read_at = models.DateTimeField(null=True, blank=True)
    # Items with the same group key collapse into one inbox entry
    # ("Alice and 24 others commented on ...").
    group_key = models.CharField(max_length=200, blank=True, default="", db_default="")
    # Archived items leave the inbox's default views (and count as read).
    archived_at = models.DateTimeField(null=True, blank=True)
    # Buttons the in-app template defines: [{"label": ..., "url": ...}] (notify.inbox.actions).
    actions = models.JSONField(blank=True, default=list, db_default=[])
    # Engagement, in any channel (``notify.workflows.engagement``): the item was
    # shown, a message opened, a link clicked (a click also sets ``read_at``).
    seen_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    clicked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["event", "rule", "user"], name="notification_unique")
        ]
        indexes = [
            models.Index(
                fields=["user", "-inbox_at"],
                condition=models.Q(inbox_at__isnull=False),
                name="inbox_idx",
            ),
            models.Index(
                fields=["user"],
                condition=models.Q(inbox_at__isnull=False, read_at__isnull=True),
                name="inbox_unread_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"notification #{self.pk} to user {self.user_id}"


class Delivery(models.Model):
    """One notification on one channel: the unit the workers claim and send."""

    # Found through ``delivery_unique`` (it leads with the notification). No
    # database constraint (issue 14): fan-out inserts a delivery in the same
    # statement as its notification, or for one that statement found; other
    # writers create deliveries of notifications they hold; deleting a
    # notification (or its event) cascades through the ORM. The per-row
    # check cost PostgreSQL's fan-out two index probes per recipient.
    notification = models.ForeignKey(
        Notification,
        on_delete=models.CASCADE,
        related_name="deliveries",
        db_index=False,
        db_constraint=False,
    )
    channel = models.CharField(max_length=50)
    status = models.CharField(max_length=10, choices=Status.CHOICES, default=Status.PENDING)
    skip_reason = models.CharField(max_length=50, blank=True, default="", db_default="")
    # Why a pending delivery waits past its creation: "delayed", "scheduled",
    # "quiet_hours", "throttled"... (the record says why).
    hold_reason = models.CharField(max_length=50, blank=True, default="", db_default="")
    # Indexed only where set (``delivery_digest_idx``): fan-out writes none.
    digest = models.ForeignKey(
        "Digest",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="items",
        db_index=False,
    )
    attempts = models.PositiveIntegerField(default=0, db_default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    claimed_until = models.DateTimeField(null=True, blank=True)
    # Set while its send is in flight under a claim: if the worker dies, this is
    # the one that may have reached the provider, or killed it
    # (notify.outbox.rows.reap_lost).
    sending_since = models.DateTimeField(null=True, blank=True)
    provider = models.CharField(max_length=50, blank=True, default="", db_default="")
    provider_message_id = models.CharField(max_length=255, blank=True, default="", db_default="")
    error_code = models.CharField(max_length=50, blank=True, default="", db_default="")
    error_message = models.TextField(blank=True, default="", db_default="")
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    # A workflow's channel step may name its own template; empty: the rule's.
    template = models.CharField(max_length=100, blank=True, default="", db_default="")

    class Meta:
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(fields=["notification", "channel"], name="delivery_unique")
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(status__in=[Status.PENDING, Status.SENDING]),
                name="delivery_due_idx",
            ),
            # Indexes cost fan-out per row, so those of fields fan-out leaves
            # empty cover only the rows where they are set: a look-up by provider
            # id says ``provider_message_id__gt=""`` too (SQLite uses a partial
            # index only when the query repeats its condition).
            models.Index(
                fields=["provider_message_id"],
                condition=models.Q(provider_message_id__gt=""),
                name="delivery_provider_id_idx",
            ),
            models.Index(
                fields=["digest"],
                condition=models.Q(digest__isnull=False),
                name="delivery_digest_idx",
            ),
            # The dashboard and /metrics count ranges of these three without
            # reading rows (notify.observability.queries); the first also
            # serves every filter on status, or status and channel.
            models.Index(
                fields=["status", "channel", "provider", "skip_reason", "created_at"],
                name="delivery_stats_idx",
            ),
            models.Index(
                fields=["created_at", "status", "channel", "attempts"],
                condition=models.Q(attempts__gt=1),
                name="delivery_retried_idx",
            ),
            models.Index(
                fields=["created_at", "hold_reason", "status"],
                condition=models.Q(hold_reason__gt=""),
                name="delivery_held_idx",
            ),
            models.Index(
                fields=["channel", "created_at"],
                condition=models.Q(status="digest", digest__isnull=True),
                name="delivery_digest_pending_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"delivery #{self.pk} ({self.channel}, {self.status})"


class DeliveryAttempt(models.Model):
    """One try at sending a delivery, with exactly what was sent and the answer."""

    class Outcome(models.TextChoices):
        SENT = "sent"
        TRANSIENT = "transient", "transient error"
        PERMANENT = "permanent", "permanent error"
        SKIPPED = "skipped"
        LOST = "lost", "worker lost"

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    provider = models.CharField(max_length=50, blank=True)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    error_code = models.CharField(max_length=50, blank=True)
    error_message = models.TextField(blank=True)
    retry_at = models.DateTimeField(null=True, blank=True)
    sent = models.JSONField(default=dict, blank=True)
    response = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["delivery", "number"]

    def __str__(self) -> str:
        return f"attempt {self.number} of delivery #{self.delivery_id}: {self.outcome}"


class Digest(models.Model):
    """One digest per user, channel and period: the audit row that makes a
    digest run idempotent. Items are the deliveries that point at it."""

    class Frequency(models.TextChoices):
        DAILY = "daily"
        WEEKLY = "weekly"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    channel = models.CharField(max_length=50)
    frequency = models.CharField(max_length=10, choices=Frequency.choices)
    period = models.CharField(max_length=20, help_text="2026-11-21 (daily) or 2026-W47 (weekly)")
    due_at = models.DateTimeField()
    status = models.CharField(max_length=10, choices=Status.CHOICES, default=Status.PENDING)
    item_count = models.PositiveIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)
    provider = models.CharField(max_length=50, blank=True)
    provider_message_id = models.CharField(max_length=255, blank=True)
    error_message = models.TextField(blank=True)
    sent = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "channel", "frequency", "period"], name="digest_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.frequency} digest {self.period} for user {self.user_id} ({self.channel})"


class ProviderEvent(models.Model):
    """A status report from a provider (webhook), kept as received."""

    provider = models.CharField(max_length=50)
    event_type = models.CharField(max_length=50)
    provider_message_id = models.CharField(max_length=255, blank=True, db_index=True)
    delivery = models.ForeignKey(
        Delivery, null=True, blank=True, on_delete=models.SET_NULL, related_name="provider_events"
    )
    error_code = models.CharField(max_length=50, blank=True)
    detail = models.TextField(blank=True)
    payload = models.JSONField(default=dict, blank=True)
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.provider} {self.event_type} {self.provider_message_id}"
