"""The admin form for rules: every field is checked at save time, so a rule that
saves is a rule the index can compile.

The rules app never imports the pipeline: channel aliases and template folders
are read from ``settings.NOTIFY``, template overrides through the app registry.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from django import forms
from django.apps import apps
from django.conf import settings
from django.core.exceptions import ValidationError

from .conditions import ConditionError, compile_condition
from .models import Rule
from .recipients import RecipientSpecError, parse_recipient_spec

# Like an event type (``order.shipped``), with ``*`` allowed as any part.
EVENT_TYPE_PATTERN = re.compile(r"^(\*|[a-z0-9][a-z0-9_\-]*)(\.(\*|[a-z0-9_\-]+))*$")


def notify_setting(key: str, default: Any) -> Any:
    return getattr(settings, "NOTIFY", {}).get(key, default)


def configured_channels() -> list[str]:
    """The channel aliases of ``NOTIFY["CHANNELS"]``, in their configured order."""
    return list(notify_setting("CHANNELS", {}))


def _message_template_model():
    return apps.get_model("notify", "MessageTemplate")


def _is_message_folder(path: Path, parts: set[str]) -> bool:
    """A folder holding a message part, directly or in a locale sub-folder."""
    if not path.is_dir():
        return False
    for child in path.iterdir():
        if child.is_file() and child.name in parts:
            return True
        if child.is_dir() and any((child / part).is_file() for part in parts):
            return True
    return False


def available_messages() -> list[str]:
    """Every message a rule may name: template folders, then admin overrides."""
    model = _message_template_model()
    parts = set(model.Part.values)
    names: set[str] = set()
    for directory in notify_setting("TEMPLATE_DIRS", []):
        base = Path(directory)
        if base.is_dir():
            names.update(p.name for p in base.iterdir() if _is_message_folder(p, parts))
    names.update(model.objects.values_list("message", flat=True).distinct())
    return sorted(names)


def message_exists(message: str) -> bool:
    model = _message_template_model()
    if model.objects.filter(message=message).exists():
        return True
    parts = set(model.Part.values)
    return any(
        _is_message_folder(Path(directory) / message, parts)
        for directory in notify_setting("TEMPLATE_DIRS", [])
    )


class RecipientSpecsField(forms.CharField):
    """One recipient spec per line in a textarea; a list of canonical specs in Python."""

    widget = forms.Textarea(attrs={"rows": 4, "cols": 40})

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return "\n".join(str(item) for item in value)
        return value

    def to_python(self, value: Any) -> list[str]:
        if isinstance(value, (list, tuple)):
            value = "\n".join(str(item) for item in value)
        text = super().to_python(value)
        specs: list[str] = []
        errors: list[ValidationError] = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                spec = str(parse_recipient_spec(line))
            except RecipientSpecError as exc:
                errors.append(
                    ValidationError(
                        "line %(number)s: %(error)s",
                        code="invalid_recipient",
                        params={"number": number, "error": exc},
                    )
                )
                continue
            if spec not in specs:
                specs.append(spec)
        if errors:
            raise ValidationError(errors)
        return specs

    def validate(self, value: list[str]) -> None:
        if self.required and not value:
            raise ValidationError(self.error_messages["required"], code="required")


class RuleForm(forms.ModelForm):
    recipients = RecipientSpecsField(
        help_text="One per line: explicit (the event's recipients), actor, staff, "
        "payload:order.customer_id (user ids or emails), group:Support, users:1,2.",
    )
    channels = forms.MultipleChoiceField(
        choices=(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: the default channels.",
    )

    class Meta:
        model = Rule
        fields = [
            "name",
            "description",
            "event_type",
            "condition",
            "category",
            "recipients",
            "channels",
            "message",
            "priority",
            "is_active",
        ]
        widgets = {"condition": forms.Textarea(attrs={"rows": 3, "cols": 80})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is None and not self.initial.get("recipients"):
            self.initial["recipients"] = ["explicit"]  # what an empty list means at fan-out
        aliases = configured_channels()
        choices = [(alias, alias) for alias in aliases]
        # A rule may name a channel that has since been removed from the
        # configuration: keep it visible (and removable) instead of dropping it.
        for alias in self.instance.channels or ():
            if alias not in aliases:
                choices.append((alias, f"{alias} (not configured)"))
        field = self.fields["channels"]
        field.choices = choices
        if not aliases:
            field.help_text = "No channels are configured in NOTIFY['CHANNELS']: defaults apply."

    def clean_event_type(self) -> str:
        value = self.cleaned_data["event_type"].strip()
        if not EVENT_TYPE_PATTERN.match(value):
            raise ValidationError(
                "'%(value)s' is not a valid event type: use lowercase dotted words "
                "(order.shipped); * matches any part (order.*).",
                code="invalid_event_type",
                params={"value": value},
            )
        return value

    def clean_condition(self) -> str:
        value = (self.cleaned_data.get("condition") or "").strip()
        try:
            compile_condition(value)
        except ConditionError as exc:
            raise ValidationError(str(exc), code="invalid_condition") from exc
        except RecursionError as exc:  # the parser recurses once per nesting level
            raise ValidationError(
                "the condition is nested too deeply to compile", code="invalid_condition"
            ) from exc
        return value

    def clean_message(self) -> str:
        value = self.cleaned_data["message"]
        if not message_exists(value):
            raise ValidationError(
                "no message template '%(value)s' (available: %(available)s)",
                code="unknown_message",
                params={"value": value, "available": ", ".join(available_messages()) or "none"},
            )
        return value

    def clean_channels(self) -> list[str]:
        return list(self.cleaned_data.get("channels") or [])
