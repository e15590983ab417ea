"""Template and rule previews follow the form while it is edited, before
saving: the endpoints ``rules/live-preview.js`` calls, and the pages in a
browser (type, wait, see the preview change, nothing saved)."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from notify.models import Event, MessageTemplate, Notification

PREVIEW = reverse("admin:notify_messagetemplate_preview")


@pytest.mark.django_db
def test_template_preview_renders_what_was_typed_and_saves_nothing(admin_client):
    response = admin_client.post(
        PREVIEW,
        {"part": "sms", "body": "Order {{ payload.id }} <b>", "sample_payload": '{"id": "A1"}'},
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert html.startswith('<div id="template-preview">')
    assert "Order A1 &lt;b&gt;" in html
    assert not MessageTemplate.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"part": "sms", "body": "{{ payload.nope }}"}, "undefined value"),
        ({"part": "sms", "body": "x", "sample_payload": "{"}, "Sample payload:"),
        ({"part": "sms", "body": "x", "sample_payload": "[1]"}, "must be a JSON object"),
        ({"part": "", "body": "x"}, "Choose a part"),
    ],
)
def test_template_preview_says_what_is_wrong(admin_client, data, says):
    html = admin_client.post(PREVIEW, data).content.decode()
    assert says in html


@pytest.mark.django_db
def test_template_preview_is_for_staff_with_template_rights(client, make_user):
    assert client.post(PREVIEW, {"part": "sms", "body": "x"}).status_code == 302  # to login
    clerk = make_user("clerk", is_staff=True)
    client.force_login(clerk)
    assert client.post(PREVIEW, {"part": "sms", "body": "x"}).status_code == 403


@pytest.mark.django_db
def test_template_preview_wants_post(admin_client):
    assert admin_client.get(PREVIEW).status_code == 405


# -- in the browser -----------------------------------------------------------------


@pytest.mark.browser
def test_template_preview_follows_the_body_before_saving(admin_page, live_server, shot):
    page = admin_page
    page.goto(f"{live_server.url}/admin/notify/messagetemplate/add/")
    region = page.locator("#template-preview")
    assert "Type a body" in region.inner_text()
    page.fill("#id_message", "order_shipped")
    page.select_option("#id_part", "sms")
    page.fill("#id_sample_payload", json.dumps({"order_id": "A-7"}))
    page.fill("#id_body", "Order {{ payload.order_id }} is on its way")
    page.wait_for_function(
        "document.querySelector('#template-preview').innerText.includes('Order A-7 is on its way')"
    )
    page.fill("#id_body", "Order {{ payload.missing }}")
    page.wait_for_function(
        "document.querySelector('#template-preview').innerText.includes('undefined value')"
    )
    page.fill("#id_body", "Parcel {{ payload.order_id }} left the depot")
    page.wait_for_function(
        "document.querySelector('#template-preview').innerText.includes('Parcel A-7 left the depot')"
    )
    shot(page, "template-live-preview")
    assert not MessageTemplate.objects.exists()  # nothing saved


@pytest.mark.browser
def test_rule_preview_follows_the_payload_without_pressing_preview(
    admin_page, live_server, make_user, make_rule, shot
):
    page = admin_page
    alice = make_user("alice", first_name="Alice")
    rule = make_rule(
        name="Big orders only", condition="payload.total > 1000", recipients=["explicit"]
    )
    page.goto(f"{live_server.url}/admin/rules/rule/{rule.pk}/preview/")
    page.locator("#id_source_1").check()  # a pasted payload
    page.fill("#id_recipients", str(alice.pk))
    page.fill("#id_payload", '{"order_id": "B-2", "total": 5}')
    page.locator("#preview-live .verdict.no").wait_for()
    assert "condition is false" in page.locator("#preview-rules").inner_text()
    page.fill("#id_payload", '{"order_id": "B-2", "total": 5000')
    page.locator("#preview-live .live-errors").wait_for()
    assert "Not valid JSON" in page.locator("#preview-live").inner_text()
    page.fill("#id_payload", '{"order_id": "B-2", "total": 5000}')
    page.locator("#preview-live .verdict.yes").wait_for()
    assert "alice" in page.locator(f"#rule-{rule.pk}").inner_text()
    assert "/preview/" in page.url and "source=" not in page.url  # never submitted
    shot(page, "rule-live-preview")
    assert not Notification.objects.exists() and not Event.objects.exists()
