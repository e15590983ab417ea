"""Email layouts in admin: ops choose the layout every email renders into
(mark one active) or override the shipped one (a row of the same name), and
see it previewed around a sample message, HTML and text, before it is used.

A layout is untrusted code like a template: it is checked in the sandbox and
trial-rendered at save time. It must show the message (``{{ content }}``) and
the footer links every email promises (``{{ settings_url }}``,
``{{ unsubscribe_url }}``) in both its HTML and its text, so that the two
parts carry the same links.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString
from jinja2 import Environment, meta
from jinja2.exceptions import TemplateError

from notify import conf
from notify.admin.forms import template_error_message
from notify.delivery.layouts import shipped_layout
from notify.delivery.rendering import layout_store, sample_context
from notify.models import EmailLayout
from rules.audit import AuditedAdminMixin

REQUIRED_NAMES = {
    "content": "{{ content }} (the message)",
    "settings_url": "{{ settings_url }} (manage preferences)",
    "unsubscribe_url": "{{ unsubscribe_url }} (one-click unsubscribe; empty for critical "
    "categories, so it may sit in {% if unsubscribe_url %}…{% endif %})",
}
SAMPLE_HTML = (
    "<p>Hi Sam,</p>\n<p>Your order <strong>A1</strong> is on its way with DHL.</p>\n"
    '<p><a href="https://shop.example/orders/A1">Track your parcel</a></p>'
)
SAMPLE_TEXT = (
    "Hi Sam,\n\nYour order A1 is on its way with DHL.\n\nTrack it: https://shop.example/orders/A1"
)
IFRAME_STYLE = (
    "width: 100%; max-width: 48em; height: 32em; border: 1px solid #ccc; background: #fff"
)


def missing_names(source: str) -> list[str]:
    used = meta.find_undeclared_variables(Environment(autoescape=True).parse(source))
    return [name for name in REQUIRED_NAMES if name not in used]


def render_sample(name: str, html: str, text: str) -> tuple[str, str]:
    """The layout around the sample message: (text, inlined HTML). Raises TemplateError."""
    layout = layout_store.compile(name or "preview", html, text)
    context = {**sample_context({}), "category": {"key": "orders", "name": "Orders"}}
    return layout_store.render(
        layout, "Your order A1 has shipped", SAMPLE_TEXT, SAMPLE_HTML, context
    )


class EmailLayoutForm(forms.ModelForm):
    class Meta:
        model = EmailLayout
        fields = ["name", "active", "html", "text"]
        widgets = {
            "html": forms.Textarea(
                attrs={"rows": 24, "cols": 100, "style": "font-family: monospace"}
            ),
            "text": forms.Textarea(
                attrs={"rows": 8, "cols": 100, "style": "font-family: monospace"}
            ),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is None:  # start from the shipped layout in use
            shipped = shipped_layout(conf.get("EMAIL_LAYOUT")) or shipped_layout("default")
            if shipped is not None:
                self.initial.setdefault("html", shipped[0])
                self.initial.setdefault("text", shipped[1])
                self.initial.setdefault("name", conf.get("EMAIL_LAYOUT"))

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        html, text = cleaned.get("html"), cleaned.get("text")
        if html is None or text is None:
            return cleaned
        for field, source in (("html", html), ("text", text)):
            try:
                missing = missing_names(source)
            except TemplateError as exc:
                self.add_error(field, template_error_message(exc))
                continue
            if missing:
                self.add_error(
                    field,
                    ValidationError(
                        "a layout shows the message and the footer links in both parts: add "
                        + " and ".join(REQUIRED_NAMES[n] for n in missing)
                        + ".",
                        code="missing_names",
                    ),
                )
        if not self.errors:
            try:
                render_sample(cleaned.get("name") or "", html, text)
            except TemplateError as exc:
                self.add_error("html", template_error_message(exc))
        return cleaned


@admin.register(EmailLayout)
class EmailLayoutAdmin(AuditedAdminMixin, admin.ModelAdmin):
    form = EmailLayoutForm
    list_display = ("name", "active", "updated_at")
    fields = ("name", "active", "html", "text", "preview")
    readonly_fields = ("preview",)

    @admin.display(description="preview")
    def preview(self, layout: EmailLayout) -> SafeString | str:
        if layout.pk is None:
            return "Save to see the layout around a sample message."
        try:
            text, html = render_sample(layout.name, layout.html, layout.text)
        except TemplateError as exc:
            return format_html('<p class="errornote">{}</p>', template_error_message(exc))
        # srcdoc is attribute-escaped; sandbox="" runs no script and no form.
        return format_html(
            '<iframe sandbox="" srcdoc="{}" title="HTML preview" style="{}"></iframe>'
            '<pre style="white-space: pre-wrap; max-width: 48em">{}</pre>',
            escape(html),
            IFRAME_STYLE,
            text,
        )
