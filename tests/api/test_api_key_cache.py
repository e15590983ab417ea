"""The per-process API key cache (``notify.api.auth``): a key is read at most
once per ``API_KEY_CACHE_SECONDS``; revocation is honoured at once in the
process that revokes, within that delay elsewhere; the secret is checked on
every request."""

from __future__ import annotations

import json
import time

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from notify import conf
from notify.api.auth import forget_api_keys
from notify.checks import check_api_key_cache
from notify.models import ApiKey, Event

EVENTS = "/api/v1/events"
ORDER = {"type": "order.shipped", "payload": {"order_id": "A1"}}


@pytest.fixture(autouse=True)
def _empty_cache():
    forget_api_keys()
    yield
    forget_api_keys()


@pytest.fixture
def api_key(db):
    return ApiKey.issue("shop")


def post(client, token):
    return client.post(
        EVENTS,
        json.dumps(ORDER),
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )


def revoke_elsewhere(key: ApiKey) -> None:
    """As another process (or ``notify key revoke``) does: an UPDATE this
    process hears nothing of."""
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())


def key_queries(client, token) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert post(client, token).status_code == 202
    return sum('"notify_apikey"' in q["sql"] and "SELECT" in q["sql"] for q in queries)


def _revoked_elsewhere_is_refused_within(client, api_key, seconds: float) -> None:
    key, token = api_key
    assert post(client, token).status_code == 202  # read and cached
    revoke_elsewhere(key)
    started = time.monotonic()
    assert post(client, token).status_code == 202  # still cached: the documented delay
    time.sleep(max(0.0, seconds - (time.monotonic() - started)) + 0.05)
    response = post(client, token)
    assert response.status_code == 401
    assert "revoked" in response.json()["message"]
    assert Event.objects.count() == 2


def test_a_key_revoked_elsewhere_is_refused_within_the_default_delay(client, api_key):
    assert conf.SETTINGS["API_KEY_CACHE_SECONDS"].default == 5.0
    _revoked_elsewhere_is_refused_within(client, api_key, conf.get("API_KEY_CACHE_SECONDS"))


def test_a_key_revoked_elsewhere_is_refused_within_a_shorter_delay(client, api_key, settings):
    settings.NOTIFY = {**settings.NOTIFY, "API_KEY_CACHE_SECONDS": 0.3}
    _revoked_elsewhere_is_refused_within(client, api_key, 0.3)


def test_the_key_is_read_once_per_delay(client, api_key):
    _key, token = api_key
    assert key_queries(client, token) == 1
    assert key_queries(client, token) == 0
    assert key_queries(client, token) == 0


def test_zero_reads_the_key_on_every_request(client, api_key, settings):
    settings.NOTIFY = {**settings.NOTIFY, "API_KEY_CACHE_SECONDS": 0}
    key, token = api_key
    assert key_queries(client, token) == 1
    assert key_queries(client, token) == 1
    revoke_elsewhere(key)
    assert post(client, token).status_code == 401


def test_saving_a_revoked_key_is_refused_at_once(client, api_key):
    key, token = api_key
    assert post(client, token).status_code == 202
    key.revoked_at = timezone.now()
    key.save()
    assert post(client, token).status_code == 401


def test_the_admin_revoke_action_is_refused_at_once(client, api_key):
    key, token = api_key
    assert post(client, token).status_code == 202
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "x")
    staff = type(client)()
    staff.force_login(admin)
    response = staff.post(
        reverse("admin:notify_apikey_changelist"),
        {"action": "revoke", "_selected_action": [key.pk]},
    )
    assert response.status_code == 302
    assert post(client, token).status_code == 401


def test_a_wrong_secret_is_refused_while_the_key_is_cached(client, api_key):
    _key, token = api_key
    assert post(client, token).status_code == 202
    response = post(client, token[:-4] + "AAAA")
    assert response.status_code == 401
    assert response.json()["message"] == "The API key is not valid."


def test_a_deleted_key_is_refused_at_once(client, api_key):
    key, token = api_key
    assert post(client, token).status_code == 202
    key.delete()
    assert post(client, token).status_code == 401


@pytest.mark.parametrize(
    ("value", "ids"),
    [
        (5, []),
        (0, []),
        (60, []),
        (61, ["notify.W040"]),
        (-1, ["notify.E040"]),
        ("5", ["notify.E040"]),
    ],
)
def test_the_delay_is_checked(settings, value, ids):
    settings.NOTIFY = {**settings.NOTIFY, "API_KEY_CACHE_SECONDS": value}
    assert [m.id for m in check_api_key_cache()] == ids
