from __future__ import annotations

from typing import Any

from django.db import models, transaction


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


class EmailLayout(models.Model):
    """An ops-edited email layout: the page every email renders into (header
    with the brand, the message as ``{{ content }}``, the footer links), as
    HTML and as text kept in step.

    The default ships as files in ``templates/layouts/<name>/layout.html`` and
    ``layout.txt``; a row of the same name replaces it. The layout in use is
    the row marked active, else the one ``NOTIFY["EMAIL_LAYOUT"]`` names.
    """

    name = models.SlugField(
        max_length=100, unique=True, help_text="e.g. default (replaces the shipped layout)."
    )
    active = models.BooleanField(
        default=False, help_text="Every email renders into this layout (one at a time)."
    )
    html = models.TextField(help_text="The HTML layout: {{ content }} is the message.")
    text = models.TextField(help_text="The text layout, with the same links.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} (active)" if self.active else self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Marking a layout active takes the mark from the one that had it."""
        with transaction.atomic():
            if self.active:
                EmailLayout.objects.filter(active=True).exclude(pk=self.pk).update(active=False)
            super().save(*args, **kwargs)
