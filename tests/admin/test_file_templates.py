"""Admin lists the shipped file templates (read-only) next to the overrides,
each with "Override": the add form pre-filled with the file's text."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils.html import escape
from django.utils.http import urlencode

from notify.admin.file_templates import file_source, file_templates
from notify.models import MessageTemplate

CHANGELIST = reverse("admin:notify_messagetemplate_changelist")
ADD = reverse("admin:notify_messagetemplate_add")
SHIPPED = Path(__file__).resolve().parents[2] / "templates"


def test_every_shipped_part_is_found_with_its_locale():
    found = {(t.message, t.part, t.locale) for t in file_templates([str(SHIPPED)])}
    assert ("order_shipped", "email.subject", "") in found
    assert ("order_shipped", "email.subject", "fr") in found
    assert ("digest", "email.html", "") in found
    # Page templates and email layouts (admin: "Email layouts") are not messages.
    assert not any(t.message in {"pages", "layouts"} for t in file_templates([str(SHIPPED)]))
    on_disk = {
        p.relative_to(SHIPPED)
        for p in SHIPPED.rglob("*")
        if p.is_file() and p.parts[len(SHIPPED.parts)] not in {"pages", "layouts"}
    }
    assert {Path(t.relative) for t in file_templates([str(SHIPPED)])} == on_disk


def test_unknown_file_has_no_source():
    assert file_source("order_shipped", "email.subject") is not None
    assert file_source("order_shipped", "email.subject", "xx") is None
    assert file_source("nope", "sms") is None


@pytest.mark.django_db
def test_changelist_lists_file_templates_with_override_links(admin_client):
    html = admin_client.get(CHANGELIST).content.decode()
    count = len(file_templates())
    assert f"Shipped file templates ({count})" in html
    assert html.count('class="button override-link"') == count
    assert "order_shipped/fr/email.subject" in html
    # The file's text is shown, escaped.
    source = file_source("order_shipped", "email.html")
    assert escape(source.splitlines()[0]) in html


@pytest.mark.django_db
def test_an_overridden_part_links_to_its_override(admin_client):
    row = MessageTemplate.objects.create(
        message="order_shipped", part="sms", locale="", body="Shipped {{ payload.order_id }}"
    )
    html = admin_client.get(CHANGELIST).content.decode()
    assert reverse("admin:notify_messagetemplate_change", args=[row.pk]) in html
    assert html.count('class="button override-link"') == len(file_templates()) - 1


def _add_form(html: str) -> dict[str, str]:
    """What the pre-filled add form would submit."""
    fields = {}
    for name in ("message", "locale"):
        tag = re.search(rf'<input[^>]*name="{name}"[^>]*>', html).group(0)
        value = re.search(r'value="([^"]*)"', tag)
        fields[name] = unescape(value.group(1)) if value else ""
    fields["part"] = re.search(r'<option value="([^"]+)" selected>', html).group(1)
    body = re.search(r'<textarea name="body"[^>]*>\n?(.*?)</textarea>', html, re.S).group(1)
    fields["body"] = unescape(body)
    sample = re.search(r'<textarea name="sample_payload"[^>]*>\n?(.*?)</textarea>', html, re.S)
    fields["sample_payload"] = unescape(sample.group(1)) if sample else "{}"
    return fields


@pytest.mark.django_db
@pytest.mark.parametrize(
    "template", file_templates([str(SHIPPED)]), ids=lambda t: t.relative.replace("/", ":")
)
def test_override_opens_the_add_form_filled_in_and_it_saves(admin_client, template):
    """Every shipped part, overridden as it is, passes the save-time checks
    (footer links, sandbox, trial render with its sample payload)."""
    html = admin_client.get(CHANGELIST).content.decode()
    query = urlencode(
        {"message": template.message, "part": template.part, "locale": template.locale}
    )
    link = f"{ADD}?{query}"
    assert f'<a class="button override-link" href="{escape(link)}">' in html
    form_html = admin_client.get(link).content.decode()
    data = _add_form(form_html)
    assert (data["message"], data["part"], data["locale"]) == (
        template.message,
        template.part,
        template.locale,
    )
    assert data["body"].strip() == template.path.read_text(encoding="utf-8").strip()
    response = admin_client.post(ADD, data)
    errors = re.findall(
        r"errorlist[^>]*>(.*?)</ul>|errornote[^>]*>(.*?)</p>", response.content.decode(), re.S
    )
    assert response.status_code == 302, errors
    saved = MessageTemplate.objects.get()
    assert (saved.message, saved.part) == (template.message, template.part)
