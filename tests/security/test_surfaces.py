"""Operator surfaces on the internet (issue 13): ``/readyz`` details only to staff
or loopback, ``/metrics`` never trusts forwarded headers unless a proxy is
configured, ``/dev/outbox/`` staff-only."""

from __future__ import annotations

import asyncio

import pytest

from notify.project.server import uvicorn_config

pytestmark = pytest.mark.django_db


# -- /readyz -------------------------------------------------------------------------


def test_readyz_tells_anonymous_callers_only_the_status(client):
    response = client.get("/readyz", REMOTE_ADDR="203.0.113.9")
    body = response.json()
    assert set(body) == {"status"}
    assert "pid" not in response.content.decode() and "lock" not in response.content.decode()


def test_readyz_forwarded_for_loopback_is_not_loopback(client):
    response = client.get("/readyz", REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR="127.0.0.1")
    assert set(response.json()) == {"status"}


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_readyz_details_for_a_local_probe(client, address):
    body = client.get("/readyz", REMOTE_ADDR=address).json()
    assert {"status", "failing", "checks"} <= set(body)


def test_readyz_details_for_staff(client, make_user):
    staff = make_user("ops", is_staff=True)
    client.force_login(staff)
    body = client.get("/readyz", REMOTE_ADDR="203.0.113.9").json()
    assert "checks" in body and "database" in body["checks"]


def test_readyz_no_details_for_a_signed_in_non_staff_user(client, make_user):
    client.force_login(make_user("alice"))
    assert set(client.get("/readyz", REMOTE_ADDR="203.0.113.9").json()) == {"status"}


# -- /metrics and forwarded headers -------------------------------------------------------


def test_metrics_ignores_x_forwarded_for(client):
    response = client.get("/metrics", REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR="127.0.0.1")
    assert response.status_code == 403


def client_seen_by_django(config, peer: str, forwarded: str) -> str:
    """The client address the app gets through uvicorn's config (its proxy
    middleware included when configured), for a request from ``peer``."""
    if not config.loaded:
        config.app = echo_client
        config.load()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/metrics",
        "raw_path": b"/metrics",
        "query_string": b"",
        "headers": [(b"x-forwarded-for", forwarded.encode())],
        "client": (peer, 50000),
        "server": ("127.0.0.1", 8000),
    }
    asyncio.run(config.loaded_app(scope, None, None))
    return SEEN["client"]


SEEN: dict[str, str] = {}


async def echo_client(scope, receive, send):
    SEEN["client"] = scope["client"][0]


def test_the_embedded_server_ignores_forwarded_headers_by_default(settings):
    settings.NOTIFY = {k: v for k, v in settings.NOTIFY.items() if k != "TRUSTED_PROXIES"}
    config = uvicorn_config("127.0.0.1", 8000)
    assert config.proxy_headers is False
    assert client_seen_by_django(config, "127.0.0.1", "10.9.9.9") == "127.0.0.1"
    assert client_seen_by_django(config, "203.0.113.9", "127.0.0.1") == "203.0.113.9"


def test_the_embedded_server_trusts_only_the_configured_proxy(settings):
    settings.NOTIFY = {**settings.NOTIFY, "TRUSTED_PROXIES": ["10.0.0.2"]}
    config = uvicorn_config("127.0.0.1", 8000)
    assert config.proxy_headers is True
    assert client_seen_by_django(config, "10.0.0.2", "198.51.100.7") == "198.51.100.7"
    # A client that is not the proxy cannot claim an address, even loopback.
    assert client_seen_by_django(config, "127.0.0.1", "10.9.9.9") == "127.0.0.1"


# -- /dev/outbox/ ---------------------------------------------------------------------


def test_sandbox_outbox_is_not_for_anonymous_visitors(client):
    response = client.get("/dev/outbox/")
    assert response.status_code == 302
    assert "/login/" in response["Location"]


def test_sandbox_outbox_is_not_for_signed_in_users(client, make_user):
    client.force_login(make_user("alice"))
    response = client.get("/dev/outbox/")
    assert response.status_code == 302


def test_sandbox_outbox_for_staff(client, make_user):
    client.force_login(make_user("ops", is_staff=True))
    assert client.get("/dev/outbox/").status_code == 200
