from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Subscription(models.Model):
    """A user follows an object ("app_label.model:pk") or a topic ("topic:<name>")."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    target = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["target", "user"], name="subscription_unique")
        ]

    def __str__(self) -> str:
        return f"user {self.user_id} follows {self.target}"
