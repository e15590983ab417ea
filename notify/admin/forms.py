"""Admin forms of the core app.

Templates are untrusted code: ``MessageTemplateForm`` checks and trial-renders
each one against its sample payload at save time, so a template that saves is
one the workers can render, and a refused one says why and on which line.

An email body (``email.txt``, ``email.html``) is the message only: every email
renders into the email layout (``notify.delivery.layouts``), which carries the
footer every non-critical email promises (``{{ unsubscribe_url }}`` and
``{{ settings_url }}``); a layout without them is refused at save time
(``notify.admin.layouts``).
"""

from __future__ import annotations

import re
import traceback
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from jinja2 import TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError, TemplateError

from notify import conf
from notify.delivery.rendering import validate_template_source
from notify.models import ApiKey, Category, MessageTemplate
from rules.sandbox import TemplateCheckError, TemplateLimitError

MAX_TEMPLATE_SOURCE = 100_000  # characters; a message template is far smaller
LOCALE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})*$")


def channel_choices(selected: Any = ()) -> list[tuple[str, str]]:
    """Configured channel aliases, plus any stale alias still ``selected``."""
    aliases = list(conf.get("CHANNELS"))
    choices = [(alias, alias) for alias in aliases]
    for alias in selected or ():
        if alias not in aliases:
            choices.append((alias, f"{alias} (not configured)"))
    return choices


def _template_line(exc: BaseException | None) -> int | None:
    """The template line Jinja put in the traceback (the innermost one)."""
    if exc is None:
        return None
    if isinstance(exc, TemplateSyntaxError) and exc.lineno:
        return exc.lineno
    lines = [
        f.lineno for f in traceback.extract_tb(exc.__traceback__) if f.filename == "<template>"
    ]
    return lines[-1] if lines else None


def template_error_message(exc: BaseException) -> str:
    """A form error for a refused template: what went wrong, and where."""
    message = str(exc)
    if isinstance(exc, TemplateCheckError):
        return message  # static checks already name the line
    if isinstance(exc, TemplateSyntaxError):
        return f"syntax error on line {exc.lineno}: {exc.message}"
    if isinstance(exc, TemplateLimitError):
        message = f"refused, too costly: {message}"
    elif isinstance(exc, SecurityError):
        message = f"refused by the sandbox: {message}"
    elif isinstance(exc, UndefinedError):
        message = (
            f"undefined value: {message} (add it to the sample payload, "
            "or guard it with 'is defined')"
        )
    line = _template_line(exc) or _template_line(exc.__cause__)
    return f"line {line}: {message}" if line else message


def check_template(part: str, body: str, sample_payload: dict[str, Any]) -> str:
    """Return the rendered preview or raise ``ValidationError`` for ``body``."""
    if len(body) > MAX_TEMPLATE_SOURCE:
        raise ValidationError(
            f"the template is {len(body)} characters long; the limit is {MAX_TEMPLATE_SOURCE}."
        )
    try:
        return validate_template_source(part, body, sample_payload)
    except TemplateError as exc:
        raise ValidationError(template_error_message(exc), code="invalid_template") from exc
    except RecursionError as exc:  # the parser recurses once per nesting level
        raise ValidationError(
            "the template is nested too deeply to compile", code="invalid_template"
        ) from exc


class MessageTemplateForm(forms.ModelForm):
    class Meta:
        model = MessageTemplate
        fields = ["message", "part", "locale", "body", "sample_payload"]
        widgets = {
            "body": forms.Textarea(
                attrs={"rows": 16, "cols": 100, "style": "font-family: monospace"}
            ),
            "sample_payload": forms.Textarea(
                attrs={"rows": 6, "cols": 100, "style": "font-family: monospace"}
            ),
        }

    preview: str | None = None

    def clean_locale(self) -> str:
        value = (self.cleaned_data.get("locale") or "").strip().lower().replace("_", "-")
        if value and not LOCALE.match(value):
            raise ValidationError(
                "'%(value)s' is not a language code (fr, pt-br, ...).", params={"value": value}
            )
        return value

    def clean_sample_payload(self) -> dict[str, Any]:
        value = self.cleaned_data.get("sample_payload")
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValidationError('The sample payload must be a JSON object, e.g. {"total": 12}.')
        return value

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        part, body = cleaned.get("part"), cleaned.get("body")
        if part and body is not None and "sample_payload" not in self.errors:
            try:
                self.preview = check_template(part, body, cleaned.get("sample_payload") or {})
            except ValidationError as exc:
                self.add_error("body", exc)
        return cleaned


class CategoryForm(forms.ModelForm):
    default_channels = forms.MultipleChoiceField(
        choices=(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every channel.",
    )

    class Meta:
        model = Category
        fields = [
            "name",
            "key",
            "description",
            "critical",
            "critical_reason",
            "opt_in",
            "default_mode",
            "default_channels",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["default_channels"].choices = channel_choices(self.instance.default_channels)

    def clean_default_channels(self) -> list[str]:
        return list(self.cleaned_data.get("default_channels") or [])


class ApiKeyCreateForm(forms.ModelForm):
    """Adding a key takes a name only; the secret is generated by ``ApiKey.issue``."""

    class Meta:
        model = ApiKey
        fields = ["name"]
