from __future__ import annotations

from zoneinfo import available_timezones

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import models

from notify.models.phone import normalise_phone


class DeliveryMode(models.TextChoices):
    IMMEDIATE = "immediate", "immediately"
    DAILY = "daily", "daily digest"
    WEEKLY = "weekly", "weekly digest"
    OFF = "off", "off"


class Category(models.Model):
    """What a notification is about, as users see it on their settings page."""

    key = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    critical = models.BooleanField(
        default=False, help_text="Cannot be turned off (security, billing, legal)."
    )
    critical_reason = models.CharField(max_length=200, blank=True)
    opt_in = models.BooleanField(default=False, help_text="Off until the user turns it on.")
    default_mode = models.CharField(
        max_length=10, choices=DeliveryMode.choices, default=DeliveryMode.IMMEDIATE
    )
    # Channel aliases on by default; empty means every channel.
    default_channels = models.JSONField(default=list, blank=True)

    class Meta:
        verbose_name_plural = "categories"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.critical and self.opt_in:
            raise ValidationError({"opt_in": "A critical category cannot be opt-in."})
        if self.critical and self.default_mode == DeliveryMode.OFF:
            raise ValidationError({"default_mode": "A critical category cannot default to off."})


def validate_timezone(value: str) -> None:
    if value not in _timezones():
        raise ValidationError(f"'{value}' is not a known time zone (IANA name, e.g. Europe/Paris).")


_TZ_CACHE: frozenset[str] | None = None


def _timezones() -> frozenset[str]:
    global _TZ_CACHE
    if _TZ_CACHE is None:
        _TZ_CACHE = frozenset(available_timezones())
    return _TZ_CACHE


class UserSettings(models.Model):
    """A user's notification-wide settings. A missing row means the defaults."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="notify_settings",
    )
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])
    locale = models.CharField(max_length=16, blank=True)
    quiet_start = models.TimeField(null=True, blank=True)
    quiet_end = models.TimeField(null=True, blank=True)
    digest_hour = models.PositiveSmallIntegerField(default=8)
    digest_weekday = models.PositiveSmallIntegerField(default=0, help_text="0 = Monday")
    paused_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "user settings"
        verbose_name_plural = "user settings"

    def __str__(self) -> str:
        return f"settings of {self.user}"


class CategoryPreference(models.Model):
    """How a user wants one category: immediately, in a digest, or not at all."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    category = models.ForeignKey(Category, on_delete=models.CASCADE)
    mode = models.CharField(max_length=10, choices=DeliveryMode.choices)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "category"], name="category_pref_unique")
        ]

    def __str__(self) -> str:
        return f"{self.category_id}: {self.mode}"


class ChannelPreference(models.Model):
    """One cell of the category x channel grid, where it differs from the default."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    category = models.ForeignKey(Category, on_delete=models.CASCADE)
    channel = models.CharField(max_length=50)
    enabled = models.BooleanField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "category", "channel"], name="channel_pref_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.category_id}/{self.channel}: {'on' if self.enabled else 'off'}"


class ContactPoint(models.Model):
    """Where a user can be reached on one kind of channel."""

    class Kind(models.TextChoices):
        EMAIL = "email"
        PHONE = "phone", "phone (E.164)"
        SLACK = "slack", "Slack member id"
        SLACK_WEBHOOK = "slack_webhook", "Slack incoming webhook"
        TEAMS = "teams", "Microsoft Teams webhook"
        DISCORD = "discord", "Discord webhook"
        WEBHOOK = "webhook", "signed JSON webhook"
        APPRISE = "apprise", "Apprise URL"
        WECOM = "wecom", "WeCom group robot"
        DINGTALK = "dingtalk", "DingTalk group robot"
        FEISHU = "feishu", "Feishu/Lark group robot"
        FCM = "fcm", "FCM registration token"
        APNS = "apns", "APNs device token"
        WEBPUSH = "webpush", "Web Push subscription"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="contact_points"
    )
    kind = models.CharField(max_length=20, choices=Kind.choices)
    # 1000: a Web Push subscription (JSON: endpoint and keys) can pass 500.
    address = models.CharField(max_length=1000)
    verified_at = models.DateTimeField(null=True, blank=True)
    is_primary = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    # Verification by code (phone): only a hash is kept; attempts are limited.
    verification_hash = models.CharField(max_length=128, blank=True)
    verification_sent_at = models.DateTimeField(null=True, blank=True)
    verification_attempts = models.PositiveSmallIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "kind", "address"], name="contact_point_unique")
        ]
        indexes = [models.Index(fields=["kind", "address"], name="contact_kind_address_idx")]

    def __str__(self) -> str:
        return f"{self.kind}: {self.address}"

    def clean(self) -> None:
        """Phone numbers are stored in E.164; email addresses must be valid."""
        if not self.address:
            return  # the field's own "required" error says it
        if self.kind == self.Kind.PHONE:
            try:
                self.address = normalise_phone(self.address)
            except ValidationError as exc:
                raise ValidationError({"address": exc.error_list}) from exc
        elif self.kind == self.Kind.EMAIL:
            self.address = self.address.strip()
            try:
                validate_email(self.address)
            except ValidationError as exc:
                raise ValidationError(
                    {"address": f"'{self.address}' is not a valid email address."}
                ) from exc

    @property
    def verified(self) -> bool:
        return self.verified_at is not None
