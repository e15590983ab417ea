"""``/``: what notify is and where to go next, per visitor, user and staff; the
favicon; the block `notify run` prints."""

from __future__ import annotations

import pytest

from notify.management.commands.notify import run_banner


@pytest.mark.django_db
def test_visitor_sees_what_notify_is_and_how_to_log_in(client, settings):
    settings.NOTIFY = {**settings.NOTIFY, "SANDBOX": True}
    html = client.get("/").content.decode()
    assert "right message" in html
    assert 'href="/accounts/login/"' in html
    assert 'href="/api/v1/openapi.json"' in html
    assert 'href="/dev/outbox/"' in html
    assert 'href="/inbox/"' not in html and 'href="/admin/"' not in html


@pytest.mark.django_db
def test_sandbox_outbox_is_not_offered_without_the_sandbox(client, settings):
    settings.NOTIFY = {**settings.NOTIFY, "SANDBOX": False}
    assert 'href="/dev/outbox/"' not in client.get("/").content.decode()


def test_user_sees_inbox_and_settings_staff_also_admin(client, make_user):
    alice = make_user("alice")
    client.force_login(alice)
    html = client.get("/").content.decode()
    assert 'href="/inbox/"' in html and 'href="/settings/notifications/"' in html
    assert 'href="/admin/"' not in html
    admin = make_user("ada", is_staff=True)
    client.force_login(admin)
    html = client.get("/").content.decode()
    assert 'href="/admin/"' in html and 'href="/admin/notify/delivery/dashboard/"' in html


@pytest.mark.django_db
def test_logo_links_home_and_favicon_is_served(client):
    html = client.get("/").content.decode()
    assert '<a class="brand" href="/"' in html
    assert 'rel="icon"' in html
    response = client.get("/favicon.ico")
    assert response.status_code == 301
    assert client.get(response["Location"]).status_code == 200


def test_run_banner_names_the_urls_and_the_demo_users_never_a_password(make_user, settings):
    settings.NOTIFY = {**settings.NOTIFY, "SANDBOX": True}
    alice = make_user("alice")
    alice.set_password("notify-alice")
    alice.save()
    text = run_banner("http://127.0.0.1:8123")
    assert text.splitlines()[0] == "notify is running on http://127.0.0.1:8123/ (Ctrl-C to stop)"
    for path in ("/inbox/", "/settings/notifications/", "/admin/", "/dev/outbox/", "/api/docs/"):
        assert f"http://127.0.0.1:8123{path}" in text
    assert "alice" in text and "bob" not in text and "notify-alice" not in text
    assert len(text.splitlines()) <= 10
