"""Rules: which events become which notifications, for whom, on which channels."""

from __future__ import annotations

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import F
from django.utils import timezone


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
    ``staff``, ``users:<id>,<id>``, ``followers`` (of the event's object),
    ``topic:<name>``.

    The ops controls (``rules.throttle``, ``rules.windows``, ``rules.dedup``,
    ``rules.fallback``) are applied at fan-out by ``notify.fanout.policies``.
    """

    class ThrottleScope(models.TextChoices):
        RULE = "rule", "this rule"
        CATEGORY = "category", "this rule's category"

    class ThrottleAction(models.TextChoices):
        DIGEST = "digest", "fold into the next digest"
        DROP = "drop", "drop (skipped, recorded)"

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
    # Who, continued: subscriptions.
    exclude_actor = models.BooleanField(
        default=True,
        help_text="Leave the person who caused the event out of the followers and topic "
        "subscribers (they know already).",
    )
    # Matching order.
    stop_processing = models.BooleanField(
        "stop after this rule",
        default=False,
        help_text="When this rule matches, the rules after it (lower priority) are not matched "
        "for the event.",
    )
    dry_run = models.BooleanField(
        default=False,
        help_text="Record what would have been sent (deliveries skipped with reason dry_run, "
        "the rendered text kept with them); send nothing.",
    )
    # How often: throttling and deduplication.
    throttle_limit = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="At most this many notifications per user per window. Empty: no limit.",
    )
    throttle_window = models.DurationField(
        null=True, blank=True, help_text="e.g. 01:00:00 for an hour, 1 00:00:00 for a day."
    )
    throttle_scope = models.CharField(
        max_length=10, choices=ThrottleScope.choices, default=ThrottleScope.RULE
    )
    throttle_action = models.CharField(
        max_length=10,
        choices=ThrottleAction.choices,
        default=ThrottleAction.DIGEST,
        help_text="What happens to a notification over the limit (either way it is recorded "
        "with skip reason 'throttled').",
    )
    dedup_key = models.TextField(
        blank=True,
        help_text="A Jinja2 expression over payload, event and actor, e.g. payload.order_id. "
        "A second event with the same key within the window notifies nobody again.",
    )
    dedup_window = models.DurationField(null=True, blank=True)
    # Which channel: fallbacks.
    fallback = models.JSONField(
        default=dict,
        blank=True,
        help_text='{"sms": "email"}: send the SMS only when the email is skipped for a '
        "missing, unverified or suppressed address.",
    )
    # When: an active window (e.g. business hours); outside it deliveries are held.
    active_days = models.JSONField(
        default=list, blank=True, help_text="Weekdays, 0 = Monday. Empty: every day."
    )
    active_from = models.TimeField(null=True, blank=True)
    active_until = models.TimeField(null=True, blank=True)
    active_timezone = models.CharField(max_length=64, blank=True, default="UTC")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-priority", "id"]

    def __str__(self) -> str:
        return self.name


class SignalBinding(models.Model):
    """A model signal turned into an event, configured by ops instead of code.

    One generic receiver per Django signal consults the cached binding index
    (``rules.bindings``), so a new or edited binding applies in every running
    process at its next configuration check, with no reconnecting. Only saves
    and deletes through the ORM send signals: ``QuerySet.update()``,
    ``bulk_create()`` and raw SQL make no events.
    """

    class Signal(models.TextChoices):
        CREATED = "created"
        UPDATED = "updated"
        DELETED = "deleted"
        M2M_CHANGED = "m2m_changed", "many-to-many changed"

    content_type = models.ForeignKey(
        "contenttypes.ContentType", on_delete=models.CASCADE, verbose_name="model"
    )
    signal = models.CharField(max_length=20, choices=Signal.choices)
    event_type = models.CharField(max_length=200, help_text="e.g. order.shipped")
    changed_fields = models.JSONField(
        "only when these fields changed",
        default=list,
        blank=True,
        help_text="Updated: an event only when one of these fields changed (empty: any save). "
        "Many-to-many changed: the relations to watch (empty: all).",
    )
    payload_fields = models.JSONField(
        default=list,
        blank=True,
        help_text="The fields that go into the payload (an allow-list). Passwords, tokens, "
        "secrets, keys and hashes can never be chosen.",
    )
    actor_field = models.CharField(
        max_length=100,
        blank=True,
        help_text="A field of the model pointing at the user who acted (e.g. author): "
        "the event's actor.",
    )
    description = models.TextField(blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["content_type__app_label", "content_type__model", "signal", "event_type"]
        constraints = [
            models.UniqueConstraint(
                fields=["content_type", "signal", "event_type"], name="signal_binding_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.model_label} {self.signal} -> {self.event_type}"

    @property
    def model_label(self) -> str:
        ct = self.content_type if self.content_type_id else None
        return f"{ct.app_label}.{ct.model}" if ct else "?"

    def clean(self) -> None:
        from .bindings import validate_binding

        validate_binding(self)


class AuditEntry(models.Model):
    """One change to ops configuration: who, when, and the item before and after.

    ``before`` and ``after`` are items in the export format
    (``rules.portability``), so an entry can be restored as it is."""

    class Kind(models.TextChoices):
        RULE = "rule"
        TEMPLATE = "template"
        CATEGORY = "category"
        BINDING = "binding"

    class Action(models.TextChoices):
        CREATED = "created"
        CHANGED = "changed"
        DELETED = "deleted"

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    actor_name = models.CharField(max_length=150, blank=True)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    object_id = models.CharField(max_length=64)
    object_repr = models.CharField(max_length=200)
    action = models.CharField(max_length=10, choices=Action.choices)
    source = models.CharField(max_length=20, blank=True, help_text="admin, import, restore, code")
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    note = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit entries"
        indexes = [models.Index(fields=["kind", "object_id"], name="audit_object_idx")]

    def __str__(self) -> str:
        return f"{self.kind} {self.object_repr} {self.action} at {self.at:%Y-%m-%d %H:%M:%S}"


class DedupRecord(models.Model):
    """The first event per (rule, key) of the current deduplication window."""

    rule = models.ForeignKey(Rule, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=64, help_text="SHA-256 of the key's JSON")
    key_text = models.CharField(max_length=200, blank=True)
    event_id = models.BigIntegerField()
    first_seen_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["rule", "key"], name="dedup_unique")]

    def __str__(self) -> str:
        return f"rule {self.rule_id} key {self.key_text!r} (event {self.event_id})"


class WorkflowStep(models.Model):
    """One step of a rule's workflow, in ``position`` order (``rules.workflow``).

    A rule without steps is the one-step workflow it always was: its channels
    at once (or after its delay), with no run rows. A rule with steps makes one
    ``notify.WorkflowRun`` per (event, rule, user), or per open batch, that the
    runner advances step by step (``notify.workflows``).
    """

    class Kind(models.TextChoices):
        CHANNEL = "channel", "send on channels"
        DELAY = "delay", "wait"
        BATCH = "batch", "collect into one notification"

    class DelayMode(models.TextChoices):
        FIXED = "fixed", "a fixed time"
        PAYLOAD = "payload", "until a time from the payload"
        WORKING_HOURS = "working_hours", "until the user's next working hours"

    rule = models.ForeignKey(Rule, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveIntegerField(default=0)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.CHANNEL)
    condition = models.TextField(
        blank=True,
        help_text="Evaluated when the step runs; false skips the step. Sees payload, event, "
        "actor, seen, read, clicked, delivered, opened, prefs, category, batch "
        "(e.g. not read and category.critical).",
    )
    channels = models.JSONField(default=list, blank=True, help_text="Channel steps: the aliases.")
    message = models.SlugField(
        max_length=100, blank=True, help_text="Channel steps: the template; empty: the rule's."
    )
    delay_mode = models.CharField(
        max_length=15, choices=DelayMode.choices, default=DelayMode.FIXED, blank=True
    )
    delay = models.DurationField(
        null=True,
        blank=True,
        help_text="Delay steps: how long (fixed), or the offset added to the payload time.",
    )
    delay_until_path = models.CharField(
        max_length=200, blank=True, help_text="Delay steps: payload path of an ISO date-time."
    )
    batch_window = models.DurationField(
        null=True, blank=True, help_text="Batch steps: how long events are collected."
    )
    batch_key = models.TextField(
        blank=True,
        help_text="Batch steps: an expression over payload, event and actor "
        "(e.g. payload.document_id); events with the same key for the same user join one batch.",
    )
    batch_max = models.PositiveIntegerField(
        null=True, blank=True, help_text="Batch steps: a full batch is sent at once; empty: no cap."
    )

    class Meta:
        ordering = ["rule", "position", "id"]

    def __str__(self) -> str:
        return f"step {self.position + 1} ({self.kind}) of {self.rule}"
