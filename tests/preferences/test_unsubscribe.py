"""One-click unsubscribe: the headers on delivered email (at a real SMTP server),
the signed token, the RFC 8058 POST without cookies, a GET that changes
nothing, the confirmation form's CSRF check, and every bad token a 400."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
import time_machine
from django.core import signing
from django.test import Client
from django.utils import timezone

from notify import trigger
from notify.delivery.message import build_message, render_context
from notify.fanout.pipeline import fan_out
from notify.models import Category, ChannelPreference, Delivery
from notify.models.status import Status
from notify.preferences.one_click import (
    MAX_AGE,
    SALT,
    UnsubscribeScope,
    make_token,
    read_token,
)
from notify.runtime.worker import run_until_idle

ONE_CLICK = "List-Unsubscribe=One-Click"
SITE = "http://127.0.0.1:8000"


@pytest.fixture
def alice(make_user):
    return make_user("alice", first_name="Alice")


@pytest.fixture
def shipped(smtp_mailer, alice, make_rule):
    """Deliver one order_shipped email (and in-app item) to Alice; return the
    message the SMTP peer received."""
    make_rule()

    def send(order_id: str = "A1"):
        trigger("order.shipped", {"order_id": order_id}, recipients=[alice])
        run_until_idle()
        return smtp_mailer.messages_to(alice.email)[-1]

    return send


def link_of(message) -> str:
    header = message.headers["List-Unsubscribe"]
    match = re.fullmatch(r"<(\S+)>", header)
    assert match, header
    return match.group(1)


def path_of(url: str) -> str:
    return urlsplit(url).path


def one_click(path: str) -> Client:
    """What a mail client does: a POST with the RFC 8058 body, no cookies, no
    CSRF token, CSRF checks on."""
    client = Client(enforce_csrf_checks=True)
    response = client.post(path, ONE_CLICK, content_type="application/x-www-form-urlencoded")
    return response


def email_pref(user, category):
    return ChannelPreference.objects.filter(user=user, category=category, channel="email").first()


def test_delivered_email_carries_both_headers_and_footer_links(shipped, alice, category):
    message = shipped()

    url = link_of(message)
    assert message.headers["List-Unsubscribe-Post"] == ONE_CLICK
    assert url.startswith(f"{SITE}/unsubscribe/") and url.endswith("/")
    assert read_token(url.rsplit("/", 2)[1]) == UnsubscribeScope(alice.pk, "orders", "email")
    # The footers link to the settings page and to the same unsubscribe URL.
    assert f"Manage your notifications: {SITE}/settings/notifications/" in message.text
    assert f"Unsubscribe from Orders emails: {url}" in message.text
    assert f'href="{url}"' in message.html
    assert f'href="{SITE}/settings/notifications/"' in message.html
    # No address goes into the link.
    assert alice.email not in url and "@" not in url


def test_one_click_post_without_cookies_unsubscribes_and_stops_the_emails(
    shipped, alice, category, smtp_mailer
):
    url = link_of(shipped())

    response = one_click(path_of(url))

    assert response.status_code == 200
    assert "You are unsubscribed" in response.content.decode()
    assert email_pref(alice, category).enabled is False
    # Idempotent: a second click (mail clients retry) is fine too.
    assert one_click(path_of(url)).status_code == 200
    assert ChannelPreference.objects.count() == 1

    # The next order: no email, a skip with the reason; the inbox still gets it.
    trigger("order.shipped", {"order_id": "A2"}, recipients=[alice])
    run_until_idle()
    assert len(smtp_mailer.messages) == 1
    latest = Delivery.objects.filter(notification__event__payload__order_id="A2")
    assert dict(latest.values_list("channel", "status")) == {
        "email": Status.SKIPPED,
        "inapp": Status.SENT,
    }
    assert latest.get(channel="email").skip_reason == "opted_out"


def test_one_click_turns_off_an_explicit_opt_in(alice, category, db):
    ChannelPreference.objects.create(user=alice, category=category, channel="email", enabled=True)
    token = make_token(UnsubscribeScope(alice.pk, category.key, "email"))
    assert one_click(f"/unsubscribe/{token}/").status_code == 200
    assert email_pref(alice, category).enabled is False


@pytest.mark.parametrize("method", ["get", "head"])
def test_get_shows_a_confirmation_and_changes_nothing(alice, category, method):
    token = make_token(UnsubscribeScope(alice.pk, category.key, "email"))

    response = getattr(Client(), method)(f"/unsubscribe/{token}/")

    assert response.status_code == 200
    assert not ChannelPreference.objects.exists()
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]
    if method == "get":
        html = response.content.decode()
        assert "Unsubscribe from Orders?" in html
        assert re.search(
            r'<form method="post">.*<button type="submit">Unsubscribe</button>', html, re.S
        )
        assert 'href="/settings/notifications/"' in html
        assert 'name="robots" content="noindex' in html


def test_confirmation_button_posts_with_a_csrf_token(alice, category):
    client = Client(enforce_csrf_checks=True)
    path = f"/unsubscribe/{make_token(UnsubscribeScope(alice.pk, category.key, 'email'))}/"
    page = client.get(path).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)

    # The form without its token is refused; nothing changes.
    assert client.post(path, {}).status_code == 403
    assert not ChannelPreference.objects.exists()

    response = client.post(path, {"csrfmiddlewaretoken": token})
    assert response.status_code == 200
    assert email_pref(alice, category).enabled is False


def test_other_methods_are_not_allowed(alice, category):
    path = f"/unsubscribe/{make_token(UnsubscribeScope(alice.pk, category.key, 'email'))}/"
    assert Client().put(path).status_code == 405
    assert Client().delete(path).status_code == 405
    assert not ChannelPreference.objects.exists()


# -- bad tokens -------------------------------------------------------------------------


def assert_refused(path: str, words: str) -> None:
    for response in (Client().get(path), one_click(path)):
        assert response.status_code == 400
        html = response.content.decode()
        assert words in html
        assert 'href="/settings/notifications/"' in html
    assert not ChannelPreference.objects.exists()


def test_tampered_token_is_400(alice, category, make_user):
    token = make_token(UnsubscribeScope(alice.pk, category.key, "email"))
    mallory = make_user("mallory")
    body, _, signature = token.rpartition(":")
    # Change the payload: another user's id under alice's signature.
    forged = signing.dumps({"u": mallory.pk, "c": category.key, "ch": "email"}, salt=SALT)
    forged = forged.rpartition(":")[0] + ":" + signature
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    for bad in (forged, flipped, token[:-5], "nonsense", body):
        assert_refused(f"/unsubscribe/{bad}/", "This unsubscribe link is not valid")


def test_wrong_scope_tokens_are_400(alice, category):
    payload = {"u": alice.pk, "c": category.key, "ch": "email"}
    # Signed with the same key for something else (another salt), or the default salt.
    for other in (signing.dumps(payload, salt="notify.password-reset"), signing.dumps(payload)):
        assert_refused(f"/unsubscribe/{other}/", "This unsubscribe link is not valid")
    # Signed under our salt but not an unsubscribe scope.
    for shape in ({"u": str(alice.pk), "c": "orders", "ch": "email"}, [alice.pk], {"u": alice.pk}):
        assert_refused(
            f"/unsubscribe/{signing.dumps(shape, salt=SALT)}/", "This unsubscribe link is not valid"
        )
    # A well-formed scope that names nothing.
    for scope in (
        UnsubscribeScope(alice.pk, "no-such-category", "email"),
        UnsubscribeScope(999_999, category.key, "email"),
    ):
        assert_refused(f"/unsubscribe/{make_token(scope)}/", "no longer matches an account")


def test_expired_token_is_400_and_a_recent_one_works(alice, category):
    scope = UnsubscribeScope(alice.pk, category.key, "email")
    with time_machine.travel(timezone.now() - MAX_AGE - timedelta(hours=1)):
        old = make_token(scope)
    assert_refused(f"/unsubscribe/{old}/", "This unsubscribe link has expired")

    with time_machine.travel(timezone.now() - MAX_AGE + timedelta(hours=1)):
        recent = make_token(scope)
    assert one_click(f"/unsubscribe/{recent}/").status_code == 200
    assert email_pref(alice, category).enabled is False


# -- critical categories ----------------------------------------------------------------------


def test_critical_email_has_no_unsubscribe_header_or_link(smtp_mailer, alice, make_rule, category):
    Category.objects.filter(pk=category.pk).update(critical=True, critical_reason="Legal.")
    make_rule()
    trigger("order.shipped", {"order_id": "C1"}, recipients=[alice])
    run_until_idle()

    [message] = smtp_mailer.messages
    assert "List-Unsubscribe" not in message.headers
    assert "List-Unsubscribe-Post" not in message.headers
    assert "/unsubscribe/" not in message.text + message.html
    assert "Manage your notifications" in message.text  # the settings link stays

    # A link made before the category became critical no longer works.
    token = make_token(UnsubscribeScope(alice.pk, category.key, "email"))
    assert_refused(f"/unsubscribe/{token}/", "cannot be turned off")


def test_only_email_gets_an_unsubscribe_link(alice, make_rule, db):
    """In-app (and every non-email format) renders with an empty unsubscribe_url."""
    make_rule()
    fan_out(trigger("order.shipped", {"order_id": "I1"}, recipients=[alice]))
    delivery = Delivery.objects.get(channel="inapp")
    message = build_message(delivery, "inapp", "", "")
    assert message.headers == {}
    assert render_context(delivery)["unsubscribe_url"] == ""
    email = build_message(Delivery.objects.get(channel="email"), "email", alice.email, "")
    link = link_of(email)
    assert link.startswith(f"{SITE}/unsubscribe/")
    assert read_token(link.rsplit("/", 2)[1]) == UnsubscribeScope(alice.pk, "orders", "email")
    assert email.headers["List-Unsubscribe-Post"] == ONE_CLICK


def test_token_holds_ids_only(alice):
    token = make_token(UnsubscribeScope(alice.pk, "orders", "email"))
    assert signing.loads(token, salt=SALT) == {"u": alice.pk, "c": "orders", "ch": "email"}
    assert "alice" not in token


def test_tokens_are_not_compressed_and_compressed_ones_still_read(alice):
    """Links are signed without zlib now (nothing to gain on a few ids); links
    already sent, signed with ``compress=True``, keep working."""
    scope = UnsubscribeScope(alice.pk, "orders-" + "x" * 80, "email")
    token = make_token(scope)
    assert not token.startswith(".")  # signing's mark of a compressed payload
    assert read_token(token) == scope
    payload = {"u": scope.user_id, "c": scope.category, "ch": scope.channel}
    old = signing.dumps(payload, salt=SALT, compress=True)
    assert old.startswith(".")  # the long key made zlib worth it then
    assert read_token(old) == scope
