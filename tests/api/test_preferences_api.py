"""``GET/PUT /api/v1/preferences``: the settings page's data as JSON, with the
same validation (``notify.pages.prefs``), session auth and CSRF."""

from __future__ import annotations

import json
from datetime import time

import pytest
from django.test import Client

from notify.models import UserSettings
from notify.pages import prefs
from tests.pages.test_settings_page import (  # noqa: F401 (fixtures)
    BAD_FIELDS,
    PAGE,
    ann_client_fixture,
    ann_fixture,
    field_error,
    form_fields,
    grid_fixture,
    page_channels_fixture,
    stored,
)

URL = "/api/v1/preferences"


def put(client, body, **headers):
    return client.put(URL, json.dumps(body), content_type="application/json", **headers)


def test_needs_a_session(client, db):
    response = client.get(URL)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert put(client, {"digest_hour": 9}).status_code == 401


def test_get_shows_every_default_and_the_catalog(ann_client, grid):
    response = ann_client.get(URL)
    assert response.status_code == 200
    assert "csrftoken" in response.cookies
    doc = response.json()
    assert doc["timezone"] == "UTC"
    assert (doc["quiet_start"], doc["quiet_end"], doc["paused_until"]) == (None, None, None)
    assert (doc["digest_hour"], doc["digest_weekday"]) == (8, 0)
    assert doc["categories"]["orders"] == {
        "mode": "immediate",
        "channels": {"email": True, "sms": False, "chat": False, "webhook": False, "inapp": True},
    }
    assert not any(doc["categories"]["product-news"]["channels"].values())  # opt-in
    assert all(doc["categories"]["security"]["channels"].values())  # critical
    catalog = doc["catalog"]
    assert [c["label"] for c in catalog["channels"]] == [
        "Email",
        "SMS",
        "Chat",
        "Webhook",
        "In-app",
    ]
    security = next(c for c in catalog["categories"] if c["key"] == "security")
    assert security["critical"] and security["critical_reason"].startswith("We must tell you")
    assert catalog["modes"] == ["immediate", "daily", "weekly", "off"]


def test_put_changes_what_it_names_and_keeps_the_rest(ann_client, ann, grid):
    ann_client.post(PAGE, {**form_fields(ann_client), "timezone": "Europe/Paris"})
    response = put(
        ann_client,
        {
            "quiet_start": "22:00",
            "quiet_end": "07:00",
            "categories": {
                "orders": {"mode": "weekly", "channels": {"sms": True}},
                "product-news": {"channels": {"inapp": True}},
            },
        },
    )
    assert response.status_code == 200, response.json()
    doc = response.json()
    assert doc["timezone"] == "Europe/Paris"  # not named: kept
    assert (doc["quiet_start"], doc["quiet_end"]) == ("22:00", "07:00")
    assert doc["categories"]["orders"]["mode"] == "weekly"
    assert doc["categories"]["orders"]["channels"]["sms"] is True
    assert doc["categories"]["orders"]["channels"]["email"] is True  # not named: kept
    assert doc["categories"]["product-news"]["channels"]["inapp"] is True
    row = UserSettings.objects.get(user=ann)
    assert (row.quiet_start, row.quiet_end) == (time(22), time(7))
    # The page shows what the API wrote.
    fields = form_fields(ann_client)
    assert fields["mode-orders"] == "weekly" and "cell-product-news-inapp" in fields
    # Orders' SMS is kept, but not drawn: no rule sends orders by SMS (notify.pages.grid).
    assert "cell-orders-sms" not in fields


def test_a_get_body_can_be_put_back(ann_client, ann, grid):
    before = stored(ann)
    doc = ann_client.get(URL).json()
    response = put(ann_client, doc)
    assert response.status_code == 200
    assert response.json() == doc
    assert stored(ann)[1:] == before[1:]  # no preference rows for unchanged defaults


# The page's bad values, as JSON: the same fields fail with the same messages.
API_FIELD = {
    "id_timezone": "timezone",
    "id_quiet_start": "quiet_start",
    "id_quiet_end": "quiet_end",
    "id_digest_hour": "digest_hour",
    "id_digest_weekday": "digest_weekday",
    "id_paused_until": "paused_until",
    "mode-orders": "categories.orders.mode",
}


def as_json(change: dict) -> dict:
    body: dict = {}
    for name, value in change.items():
        if name.startswith("mode-"):
            body.setdefault("categories", {})[name[5:]] = {"mode": value}
        elif name in ("quiet_start", "quiet_end", "paused_until"):
            body[name] = value or None
        else:
            body[name] = value
    return body


@pytest.mark.parametrize(("change", "input_id", "message"), BAD_FIELDS)
def test_the_pages_bad_values_fail_the_same_way(ann_client, ann, grid, change, input_id, message):
    page = ann_client.post(PAGE, {**form_fields(ann_client), **change})
    before = stored(ann)
    response = put(ann_client, {"digest_weekday": 3, **as_json(change)})
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_request"
    [error] = [e for e in body["errors"] if e["field"] == API_FIELD[input_id]]
    assert message.lower() in error["message"].lower()
    # The same words on the page (as a sentence).
    shown = field_error(page.content.decode(), input_id)
    assert shown.lower().startswith(error["message"].lower())
    assert stored(ann) == before


def test_every_bad_field_is_named_and_nothing_changes(ann_client, ann, grid):
    before = stored(ann)
    response = put(
        ann_client,
        {
            "timezone": "Nowhere/Land",
            "quiet_start": "22:00",
            "digest_hour": 25,
            "digest_weekday": True,
            "paused_until": "2001-01-01",
            "colour": "blue",
            "categories": {
                "orders": {"mode": "daily", "channels": {"email": "yes", "pigeon": True}},
                "security": {"mode": "off", "channels": {"email": False}},
                "nope": {"mode": "daily"},
                "product-news": {"channels": {"email": True}, "sound": "loud"},
            },
        },
    )
    assert response.status_code == 400
    fields = [e["field"] for e in response.json()["errors"]]
    assert sorted(fields) == sorted(
        [
            "colour",
            "timezone",
            "quiet_end",
            "digest_hour",
            "digest_weekday",
            "paused_until",
            "categories.orders.channels.email",
            "categories.orders.channels.pigeon",
            "categories.security.mode",
            "categories.security.channels.email",
            "categories.nope",
            "categories.product-news.sound",
        ]
    )
    message = response.json()["message"]
    assert message.startswith("colour: unknown field") and "(and 11 more)" in message
    assert stored(ann) == before


def test_critical_cannot_be_turned_off(ann_client, ann, grid):
    response = put(ann_client, {"categories": {"security": {"channels": {"sms": False}}}})
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error == {
        "field": "categories.security.channels.sms",
        "message": "Security cannot be turned off: "
        "We must tell you about activity on your account.",
    }
    # Saying it stays on is fine, and stores nothing.
    response = put(
        ann_client, {"categories": {"security": {"mode": "immediate", "channels": {"sms": True}}}}
    )
    assert response.status_code == 200
    assert stored(ann) == (None, [], [])


def test_types_are_checked(ann_client, grid):
    for body, field in [
        ({"categories": []}, "categories"),
        ({"categories": {"orders": "daily"}}, "categories.orders"),
        ({"categories": {"orders": {"channels": ["email"]}}}, "categories.orders.channels"),
        ({"timezone": 7}, "timezone"),
        ({"quiet_start": 2200, "quiet_end": "07:00"}, "quiet_start"),
    ]:
        response = put(ann_client, body)
        assert response.status_code == 400, body
        assert [e["field"] for e in response.json()["errors"]] == [field]


def test_body_must_be_json(ann_client, grid):
    response = ann_client.put(
        URL, "digest_hour=9", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 415
    response = ann_client.put(URL, "{nope", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "body"


def test_put_needs_the_csrf_token(ann, grid):
    client = Client(enforce_csrf_checks=True)
    client.force_login(ann)
    client.get(URL)
    response = put(client, {"digest_hour": 20})
    assert response.status_code == 403
    assert response.json()["error"] == "csrf_failed"
    assert stored(ann)[0] is None
    token = client.cookies["csrftoken"].value
    response = put(client, {"digest_hour": 20}, HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200
    assert UserSettings.objects.get(user=ann).digest_hour == 20


def test_each_user_sees_and_changes_only_their_own(client, make_user, grid):
    ann, bob = make_user("ann"), make_user("bob")
    client.force_login(bob)
    put(client, {"digest_hour": 6, "categories": {"orders": {"mode": "off"}}})
    client.force_login(ann)
    assert client.get(URL).json()["digest_hour"] == 8
    put(client, {"digest_hour": 21})
    assert UserSettings.objects.get(user=bob).digest_hour == 6
    assert prefs.read(bob).modes[grid.orders.pk] == "off"


def test_other_methods_are_405(ann_client, grid):
    for method in (ann_client.post, ann_client.delete, ann_client.patch):
        response = method(URL)
        assert response.status_code == 405
        assert response["Allow"] == "GET, PUT"


def test_documented_in_openapi(client, db):
    doc = client.get("/api/v1/openapi.json").json()
    operations = doc["paths"]["/api/v1/preferences"]
    assert set(operations) == {"get", "put"}
    assert operations["put"]["security"] == [{"sessionCookie": [], "csrfToken": []}]
    schema = doc["components"]["schemas"]["PreferencesIn"]
    assert set(schema["properties"]) == {*prefs.FIELDS, *prefs.READ_ONLY}
    assert schema["additionalProperties"] is False
    assert set(doc["components"]["schemas"]["Preferences"]["required"]) == {
        *prefs.FIELDS,
        "catalog",
    }
