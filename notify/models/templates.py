from __future__ import annotations

from django.db import models


class MessageTemplate(models.Model):
    """An ops-edited override of one part of a message template.

    The defaults ship as files in ``templates/<message>/<part>``; a row here
    replaces one part for one locale ("" = every locale).
    """

    class Part(models.TextChoices):
        EMAIL_SUBJECT = "email.subject"
        EMAIL_TEXT = "email.txt"
        EMAIL_HTML = "email.html"
        SMS = "sms"
        CHAT = "chat"
        INAPP = "inapp"
        PUSH = "push"

    message = models.SlugField(max_length=100, help_text="The message name, e.g. order_shipped.")
    part = models.CharField(max_length=20, choices=Part.choices)
    locale = models.CharField(max_length=16, blank=True, help_text="Empty: the default language.")
    body = models.TextField()
    sample_payload = models.JSONField(
        default=dict, blank=True, help_text="Used for the preview and for validation at save time."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["message", "part", "locale"]
        constraints = [
            models.UniqueConstraint(fields=["message", "part", "locale"], name="template_unique")
        ]

    def __str__(self) -> str:
        suffix = f" [{self.locale}]" if self.locale else ""
        return f"{self.message}/{self.part}{suffix}"
