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
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError

from .bindings import (
    bindable_models,
    is_sensitive,
    m2m_field_choices,
    tracked_field_choices,
    user_field_choices,
)
from .conditions import ConditionError, compile_condition, compile_expression
from .fallback import FallbackError, parse_fallback
from .models import Rule, SignalBinding, WorkflowStep
from .recipients import RecipientSpecError, parse_recipient_spec
from .windows import DAY_NAMES, WindowError, make_window
from .workflow import EDITABLE_STEP_FIELDS, STEP_FIELDS, compile_step, compile_steps

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


def _check_expression(value: str, compile_: Any = compile_condition) -> str:
    value = (value or "").strip()
    try:
        compile_(value)
    except ConditionError as exc:
        raise ValidationError(str(exc), code="invalid_condition") from exc
    except RecursionError as exc:  # the parser recurses once per nesting level
        raise ValidationError(
            "the expression is nested too deeply to compile", code="invalid_condition"
        ) from exc
    return value


class RuleForm(forms.ModelForm):
    recipients = RecipientSpecsField(
        help_text="One per line: explicit (the event's recipients), actor, staff, "
        "payload:order.customer_id (user ids or emails), group:Support, users:1,2, "
        "followers (of the event's object), topic:releases.",
    )
    active_days = forms.TypedMultipleChoiceField(
        choices=list(enumerate(DAY_NAMES)),
        coerce=int,
        required=False,
        widget=forms.CheckboxSelectMultiple(attrs={"class": "inline-days"}),
        help_text="None ticked: every day.",
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
            "exclude_actor",
            "stop_processing",
            "dry_run",
            "delay",
            "send_at_path",
            "send_at_offset",
            "cancel_condition",
            "active_days",
            "active_from",
            "active_until",
            "active_timezone",
            "throttle_limit",
            "throttle_window",
            "throttle_scope",
            "throttle_action",
            "dedup_key",
            "dedup_window",
            "fallback",
        ]
        widgets = {
            "condition": forms.Textarea(attrs={"rows": 3, "cols": 80}),
            "cancel_condition": forms.Textarea(attrs={"rows": 2, "cols": 80}),
            "dedup_key": forms.Textarea(attrs={"rows": 1, "cols": 80}),
            "fallback": forms.Textarea(attrs={"rows": 1, "cols": 40}),
        }

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
        for name in ("throttle_scope", "throttle_action"):
            if name in self.fields:  # empty: the model's default
                self.fields[name].required = False
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
        return _check_expression(self.cleaned_data.get("condition") or "")

    def clean_cancel_condition(self) -> str:
        return _check_expression(self.cleaned_data.get("cancel_condition") or "")

    def clean_dedup_key(self) -> str:
        return _check_expression(self.cleaned_data.get("dedup_key") or "", compile_expression)

    def clean_throttle_scope(self) -> str:
        return self.cleaned_data.get("throttle_scope") or Rule.ThrottleScope.RULE

    def clean_throttle_action(self) -> str:
        return self.cleaned_data.get("throttle_action") or Rule.ThrottleAction.DIGEST

    def clean_active_days(self) -> list[int]:
        return sorted(set(self.cleaned_data.get("active_days") or []))

    def clean_fallback(self) -> dict[str, str]:
        value = self.cleaned_data.get("fallback")
        try:
            return parse_fallback(value)
        except FallbackError as exc:
            raise ValidationError(str(exc), code="invalid_fallback") from exc

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        pairs = (
            ("throttle_limit", "throttle_window", "a throttle needs both a limit and a window"),
            ("dedup_key", "dedup_window", "deduplication needs both a key and a window"),
        )
        for first, second, message in pairs:
            if first in self.errors or second in self.errors:
                continue
            if bool(cleaned.get(first)) != bool(cleaned.get(second)):
                self.add_error(second if cleaned.get(first) else first, message)
        for name in ("throttle_window", "dedup_window"):
            window = cleaned.get(name)
            if window is not None and window.total_seconds() <= 0:
                self.add_error(name, "the window must be longer than zero")
        if not {"active_days", "active_from", "active_until", "active_timezone"} & set(self.errors):
            try:
                make_window(
                    cleaned.get("active_days"),
                    cleaned.get("active_from"),
                    cleaned.get("active_until"),
                    cleaned.get("active_timezone") or "UTC",
                )
            except WindowError as exc:
                self.add_error("active_timezone", str(exc))
        if "fallback" not in self.errors and cleaned.get("fallback"):
            channels = cleaned.get("channels") or notify_setting("DEFAULT_CHANNELS", [])
            try:
                parse_fallback(cleaned["fallback"], list(channels))
            except FallbackError as exc:
                self.add_error("fallback", str(exc))
        if not cleaned.get("active_timezone"):
            cleaned["active_timezone"] = "UTC"
        return cleaned

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


# -- workflow steps --------------------------------------------------------------------------


class WorkflowStepForm(forms.ModelForm):
    """One step, checked alone (the formset checks the steps as a whole)."""

    channels = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple(attrs={"class": "inline-days"})
    )

    class Meta:
        model = WorkflowStep
        fields = EDITABLE_STEP_FIELDS
        widgets = {
            "condition": forms.Textarea(attrs={"rows": 2, "cols": 40}),
            "batch_key": forms.TextInput(attrs={"size": 24}),
            "position": forms.HiddenInput(attrs={"class": "step-position"}),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        configured = configured_channels()
        current = list(self.initial.get("channels") or [])
        self.fields["channels"].choices = [(a, a) for a in dict.fromkeys([*configured, *current])]
        self.fields["position"].required = False

    def clean_message(self) -> str:
        value = (self.cleaned_data.get("message") or "").strip()
        if value and not message_exists(value):
            raise ValidationError(
                "no message template '%(value)s' (available: %(available)s)",
                code="unknown_message",
                params={"value": value, "available": ", ".join(available_messages()) or "none"},
            )
        return value

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        row = {name: cleaned.get(name) for name in STEP_FIELDS if name in cleaned}
        unknown = sorted(set(row.get("channels") or ()) - set(configured_channels()))
        if unknown:
            self.add_error("channels", f"not configured: {', '.join(unknown)}")
        try:
            compile_step(row, int(cleaned.get("position") or 0))
        except ValueError as exc:
            raise ValidationError(str(exc).split(": ", 1)[-1]) from exc
        return cleaned


class WorkflowStepFormSet(forms.BaseInlineFormSet):
    """The steps in the order shown, checked as a whole (``rules.workflow``):
    a batch first, each channel in one step, at least one channel step."""

    def clean(self) -> None:
        super().clean()
        if any(form.errors for form in self.forms):
            return
        kept = [
            form for form in self.forms if form.cleaned_data and not form.cleaned_data.get("DELETE")
        ]
        kept.sort(key=lambda form: form.cleaned_data.get("position") or 0)
        for number, form in enumerate(kept):  # positions renumbered 0, 1, 2… as shown
            form.instance.position = form.cleaned_data["position"] = number
        try:
            compile_steps([{**form.cleaned_data, "id": None} for form in kept])
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc


# -- signal bindings ---------------------------------------------------------------------------


class FieldCheckboxes(forms.CheckboxSelectMultiple):
    """Checkboxes where secret fields are shown but cannot be ticked."""

    def create_option(
        self, name: str, value: Any, label: Any, selected: Any, index: int, **kw: Any
    ):
        option = super().create_option(name, value, label, selected, index, **kw)
        if value and is_sensitive(str(value)):
            option["attrs"]["disabled"] = True
            option["label"] = f"{value} (secret)"
        return option


def model_field_map() -> dict[str, dict[str, list[str]]]:
    """Per bindable model (content type id): its fields, for the admin page's
    script that redraws the field lists when the model changes."""
    out = {}
    for model in bindable_models():
        ct = ContentType.objects.get_for_model(model)
        out[str(ct.pk)] = {
            "fields": tracked_field_choices(model),
            "m2m": m2m_field_choices(model),
            "users": user_field_choices(model),
        }
    return out


class SignalBindingForm(forms.ModelForm):
    payload_fields = forms.MultipleChoiceField(
        choices=(),
        required=False,
        widget=FieldCheckboxes(attrs={"class": "field-list"}),
        help_text="The fields that go into the payload. Passwords, tokens, secrets, keys and "
        "hashes can never be chosen.",
    )
    changed_fields = forms.MultipleChoiceField(
        label="Only when these fields changed",
        choices=(),
        required=False,
        widget=forms.CheckboxSelectMultiple(attrs={"class": "field-list"}),
        help_text="Updated: an event only when one of these changed (none ticked: any save). "
        "Many-to-many changed: the relations to watch (none ticked: all).",
    )
    actor_field = forms.ChoiceField(
        choices=(),
        required=False,
        help_text="The model's field pointing at the user who acted: the event's actor.",
    )

    class Meta:
        model = SignalBinding
        fields = [
            "content_type",
            "signal",
            "event_type",
            "changed_fields",
            "payload_fields",
            "actor_field",
            "description",
            "is_active",
        ]
        widgets = {"description": forms.Textarea(attrs={"rows": 2, "cols": 80})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        models_ = bindable_models()
        ids = [ContentType.objects.get_for_model(m).pk for m in models_]
        field = self.fields["content_type"]
        field.queryset = ContentType.objects.filter(pk__in=ids).order_by("app_label", "model")
        field.label_from_instance = lambda ct: f"{ct.app_label}.{ct.model} ({ct.name})"
        model = self._chosen_model()
        fields = tracked_field_choices(model) if model else []
        relations = m2m_field_choices(model) if model else []
        self.fields["payload_fields"].choices = [(f, f) for f in fields]
        self.fields["changed_fields"].choices = [(f, f) for f in fields + relations]
        users = user_field_choices(model) if model else []
        self.fields["actor_field"].choices = [("", "(none)")] + [(f, f) for f in users]

    def _chosen_model(self) -> Any:
        ct_id = None
        if self.is_bound:
            ct_id = self.data.get(self.add_prefix("content_type"))
        elif self.instance.content_type_id:
            ct_id = self.instance.content_type_id
        else:
            ct_id = self.initial.get("content_type")
        try:
            ct = ContentType.objects.get_for_id(int(ct_id)) if ct_id else None
        except (ValueError, TypeError, ContentType.DoesNotExist):
            return None
        return ct.model_class() if ct else None

    def clean_event_type(self) -> str:
        return (self.cleaned_data.get("event_type") or "").strip()

    def clean_payload_fields(self) -> list[str]:
        return list(self.cleaned_data.get("payload_fields") or [])

    def clean_changed_fields(self) -> list[str]:
        return list(self.cleaned_data.get("changed_fields") or [])

    def _post_clean(self) -> None:
        # A secret in the payload is refused here, on the form, before the
        # model's own clean() says it again (validate_binding).
        for name in self.cleaned_data.get("payload_fields") or []:
            if is_sensitive(name):
                self.add_error(
                    "payload_fields",
                    f"'{name}' holds a secret (password, token, key, hash...) and can never "
                    "go into a payload",
                )
                return
        super()._post_clean()
