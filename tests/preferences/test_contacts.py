"""Contact points on the settings page: add, verify (email link, SMS code),
make primary, remove; rate limits; and that nobody can touch another user's."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
import time_machine
from django.core import mail
from django.test import Client
from django.utils import timezone
from django.utils.html import escape

from channels import sandbox
from notify.models import ContactPoint
from notify.pages import addresses, contact_points
from tests.pages.test_settings_page import (  # noqa: F401 (fixtures)
    PAGE,
    ann_client_fixture,
    ann_fixture,
    field_error,
    grid_fixture,
    page_channels_fixture,
)

ADD = "/settings/notifications/contacts/add/"
PHONE = "+447911123456"
SHOWN = "+44 7911 123456"  # how the page writes it
T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def url(point, action: str) -> str:
    return f"/settings/notifications/contacts/{point.pk}/{action}/"


def sms_codes(settings, to: str = PHONE) -> list[str]:
    """Codes the sandbox "sms" channel recorded for ``to``, newest first."""
    records = sandbox.read(directory=settings.NOTIFY["SANDBOX_DIR"])
    texts = [r["text"] for r in records if r.get("channel") == "sms" and r.get("to") == to]
    return [re.fullmatch(r"Your notify code is (\d{6})", t).group(1) for t in texts]


def link_in(message) -> str:
    match = re.search(r"http://[^\s]+/settings/notifications/verify-email/[^\s]+/", message.body)
    assert match, message.body
    return urlsplit(match.group(0)).path


def add_phone(client, number: str = PHONE) -> ContactPoint:
    response = client.post(ADD, {"kind": "phone", "address": number})
    assert response.status_code == 302, response.content.decode()[:2000]
    return ContactPoint.objects.get(kind="phone")


def snapshot(point: ContactPoint) -> dict:
    return ContactPoint.objects.filter(pk=point.pk).values().get()


# -- adding -------------------------------------------------------------------------


def test_add_a_phone_sends_a_code_and_stores_only_its_hash(ann_client, ann, grid, settings):
    response = ann_client.post(ADD, {"kind": "phone", "address": "+44 7911 123456"})
    point = ContactPoint.objects.get(user=ann)
    assert response["Location"] == f"{PAGE}#contact-{point.pk}"
    assert (point.kind, point.address, point.verified) == ("phone", PHONE, False)
    [code] = sms_codes(settings)
    assert point.verification_hash and code not in point.verification_hash
    assert point.verification_hash == contact_points.code_hash(point, code)
    html = ann_client.get(PAGE).content.decode()
    assert f"{SHOWN} is added. We sent a 6-digit code to {SHOWN}." in html
    assert 'autocomplete="one-time-code"' in html
    assert "Not verified" in html


def test_add_an_email_sends_a_link(ann_client, ann, grid):
    ann_client.post(ADD, {"kind": "email", "address": "Ann.Work@Example.COM"})
    point = ContactPoint.objects.get(user=ann)
    assert point.address == "Ann.Work@example.com"
    [message] = mail.outbox
    assert message.to == ["Ann.Work@example.com"]
    assert "/settings/notifications/verify-email/" in message.body
    assert point.verification_hash == ""  # links are signed, not stored


@pytest.mark.parametrize(
    ("kind", "address", "message"),
    [
        ("phone", "07911 123456", "starting with + and the country code"),
        ("phone", "+44 12", "is not a valid phone number"),
        ("phone", "call me", "is not a valid phone number"),
        ("phone", "", "enter the mobile number"),
        ("email", "ann@", "is not an email address"),
        ("email", "not an email", "is not an email address"),
        ("webhook", "http://example.com/hook", "must be a full https:// url"),
        ("webhook", "https://127.0.0.1/hook", "must point to a public address"),
        ("webhook", "https://10.1.2.3/hook", "must point to a public address"),
        ("webhook", "https://localhost/hook", "must point to a public address"),
        ("webhook", "not a url", "must be a full https:// url"),
        ("chat", "U0", "must be a slack member id"),
    ],
)
def test_bad_addresses_are_named_and_nothing_is_added(
    ann_client, ann, grid, kind, address, message
):
    kind = {"chat": "slack"}.get(kind, kind)
    response = ann_client.post(ADD, {"kind": kind, "address": address})
    assert response.status_code == 400
    html = response.content.decode()
    assert message in field_error(html, "id_address").lower()
    assert re.search(r'id="id_address"[^>]*aria-invalid="true"', html.replace("\n", " "))
    assert f'value="{escape(address)}"' in html
    assert not ContactPoint.objects.exists()
    assert mail.outbox == []


def test_phone_uses_the_shared_normaliser():
    from notify.models.phone import normalise_phone

    assert addresses.normalise("phone", "+33 6 12 34 56 78") == normalise_phone("+33612345678")


def test_a_kind_no_channel_sends_to_is_not_offered(ann_client, ann, grid):
    html = ann_client.get(PAGE).content.decode()
    assert '<option value="discord"' not in html
    response = ann_client.post(
        ADD, {"kind": "discord", "address": "https://discord.com/api/webhooks/1/x"}
    )
    assert response.status_code == 400
    assert "choose one of" in field_error(response.content.decode(), "id_kind").lower()


def test_the_same_address_twice_is_refused(ann_client, ann, grid):
    add_phone(ann_client)
    response = ann_client.post(ADD, {"kind": "phone", "address": "+44 (0)7911 123456"})
    assert response.status_code == 400
    assert "already added" in field_error(response.content.decode(), "id_address")
    assert ContactPoint.objects.count() == 1


def test_url_kinds_are_normalised_and_checked():
    assert addresses.normalise("webhook", " https://hooks.example.com/x ") == (
        "https://hooks.example.com/x"
    )
    with pytest.raises(Exception, match="Slack incoming webhook"):
        addresses.normalise("slack_webhook", "https://example.com/services/x")
    assert addresses.normalise("slack", "u012ab3cd") == "U012AB3CD"


# -- phone codes --------------------------------------------------------------------


def test_the_right_code_verifies_and_makes_it_primary(ann_client, ann, grid, settings):
    point = add_phone(ann_client)
    [code] = sms_codes(settings)
    response = ann_client.post(url(point, "verify"), {"code": f"{code[:3]} {code[3:]}"})
    assert response.status_code == 302
    point.refresh_from_db()
    assert point.verified and point.is_primary
    assert point.verification_hash == "" and point.verification_attempts == 0
    assert f"{SHOWN} is verified." in ann_client.get(PAGE).content.decode()


def test_wrong_codes_count_and_the_sixth_try_is_refused(ann_client, ann, grid, settings):
    point = add_phone(ann_client)
    [code] = sms_codes(settings)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for attempt in range(1, 6):
        response = ann_client.post(url(point, "verify"), {"code": wrong})
        assert response.status_code == 400
        point.refresh_from_db()
        assert point.verification_attempts == attempt
    assert "that was the last try" in field_error(response.content.decode(), f"code-{point.pk}")
    response = ann_client.post(url(point, "verify"), {"code": code})  # right, but too late
    assert response.status_code == 400
    assert "too many wrong tries; send a new code" in response.content.decode().lower()
    point.refresh_from_db()
    assert not point.verified and point.verification_attempts == 5


def test_wrong_code_says_how_many_tries_are_left(ann_client, grid, settings):
    point = add_phone(ann_client)
    [code] = sms_codes(settings)
    response = ann_client.post(url(point, "verify"), {"code": f"{(int(code) + 7) % 10**6:06d}"})
    html = response.content.decode()
    assert "That code is not right; 4 tries left." in field_error(html, f"code-{point.pk}")
    assert re.search(rf'id="code-{point.pk}"[^>]*aria-invalid="true"', html.replace("\n", " "))
    assert f'<a href="#code-{point.pk}">' in html


def test_a_malformed_code_is_not_counted(ann_client, grid, settings):
    point = add_phone(ann_client)
    response = ann_client.post(url(point, "verify"), {"code": "12ab"})
    assert "Enter the 6 digits" in field_error(response.content.decode(), f"code-{point.pk}")
    point.refresh_from_db()
    assert point.verification_attempts == 0


def test_an_expired_code_is_refused(ann_client, grid, settings):
    with time_machine.travel(T0, tick=False) as clock:
        point = add_phone(ann_client)
        [code] = sms_codes(settings)
        clock.shift(timedelta(minutes=10, seconds=1))
        response = ann_client.post(url(point, "verify"), {"code": code})
    assert response.status_code == 400
    assert "expired" in field_error(response.content.decode(), f"code-{point.pk}")
    point.refresh_from_db()
    assert not point.verified


def test_a_new_code_only_after_a_minute_and_it_replaces_the_old(ann_client, grid, settings):
    with time_machine.travel(T0, tick=False) as clock:
        point = add_phone(ann_client)
        [first] = sms_codes(settings)
        ann_client.post(url(point, "verify"), {"code": f"{(int(first) + 1) % 10**6:06d}"})
        response = ann_client.post(url(point, "resend"))
        assert response.status_code == 400
        assert "ask for another in" in field_error(response.content.decode(), f"code-{point.pk}")
        assert len(sms_codes(settings)) == 1
        clock.shift(timedelta(seconds=61))
        assert ann_client.post(url(point, "resend")).status_code == 302
        second, _ = sms_codes(settings)
        point.refresh_from_db()
        assert point.verification_attempts == 0
        if first != second:
            response = ann_client.post(url(point, "verify"), {"code": first})
            assert response.status_code == 400
        assert ann_client.post(url(point, "verify"), {"code": second}).status_code == 302
    point.refresh_from_db()
    assert point.verified


def test_codes_and_links_are_capped_per_hour(ann_client, ann, grid, settings):
    with time_machine.travel(T0, tick=False) as clock:
        for n in range(contact_points.SENDS_PER_HOUR):
            response = ann_client.post(ADD, {"kind": "phone", "address": f"+4479111234{n:02d}"})
            assert response.status_code == 302
            clock.shift(timedelta(seconds=1))
        response = ann_client.post(ADD, {"kind": "phone", "address": "+447911123499"})
        assert response.status_code == 302  # added, but no code went out
        html = ann_client.get(PAGE).content.decode()
        assert "codes and links this hour" in html
        records = sandbox.read(directory=settings.NOTIFY["SANDBOX_DIR"])
        assert len(records) == contact_points.SENDS_PER_HOUR


def test_a_code_that_cannot_be_sent_can_be_asked_for_again(ann_client, ann, grid, twilio_sms):
    twilio_sms.refuse(PHONE, 21211, "The 'To' number is not a valid phone number.")
    response = ann_client.post(ADD, {"kind": "phone", "address": PHONE})
    assert response.status_code == 302
    point = ContactPoint.objects.get()
    assert point.verification_hash == "" and point.verification_sent_at is None
    assert "we could not send the code" in ann_client.get(PAGE).content.decode()
    twilio_sms.resubscribe(PHONE)
    assert ann_client.post(url(point, "resend")).status_code == 302
    [message] = twilio_sms.messages_to(PHONE)
    code = re.fullmatch(r"Your notify code is (\d{6})", message.body).group(1)
    assert ann_client.post(url(point, "verify"), {"code": code}).status_code == 302


# -- email links --------------------------------------------------------------------


def add_email(client, address: str = "ann.work@example.com") -> tuple[ContactPoint, str]:
    client.post(ADD, {"kind": "email", "address": address})
    point = ContactPoint.objects.get(kind="email", address=address)
    return point, link_in(mail.outbox[-1])


def test_an_email_link_shows_a_confirm_page_and_only_post_verifies(ann_client, grid):
    point, link = add_email(ann_client)
    page = ann_client.get(link)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Confirm ann.work@example.com" in html and 'method="post"' in html
    point.refresh_from_db()
    assert not point.verified  # a GET (a mail scanner) verifies nothing
    response = ann_client.post(link)
    assert response.status_code == 302
    point.refresh_from_db()
    assert point.verified and point.is_primary


def test_an_email_link_works_once(ann_client, grid):
    _, link = add_email(ann_client)
    assert ann_client.post(link).status_code == 302
    for method in (ann_client.get, ann_client.post):
        response = method(link)
        assert response.status_code == 400
        assert "already used" in response.content.decode()


def test_an_expired_email_link_is_refused(ann_client, grid):
    with time_machine.travel(T0, tick=False) as clock:
        point, link = add_email(ann_client)
        clock.shift(timedelta(hours=24, seconds=1))
        response = ann_client.post(link)
    assert response.status_code == 400
    assert "This link has expired" in response.content.decode()
    point.refresh_from_db()
    assert not point.verified


@pytest.mark.parametrize("tamper", ["flip", "truncate", "garbage"])
def test_a_tampered_email_link_is_refused(ann_client, grid, tamper):
    point, link = add_email(ann_client)
    token = link.rstrip("/").rsplit("/", 1)[1]
    bad = {
        "flip": token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:],
        "truncate": token[:-5],
        "garbage": "not-a-token",
    }[tamper]
    response = ann_client.post(f"/settings/notifications/verify-email/{bad}/")
    assert response.status_code == 400
    assert "This link is not valid" in response.content.decode()
    point.refresh_from_db()
    assert not point.verified


def test_a_new_link_replaces_the_old(ann_client, grid):
    with time_machine.travel(T0, tick=False) as clock:
        point, first = add_email(ann_client)
        clock.shift(timedelta(seconds=61))
        assert ann_client.post(url(point, "resend")).status_code == 302
        second = link_in(mail.outbox[-1])
        response = ann_client.post(first)
        assert response.status_code == 400
        assert "A newer link was sent" in response.content.decode()
        assert ann_client.post(second).status_code == 302


def test_an_email_link_needs_the_accounts_owner(client, make_user, grid):
    ann, bob = make_user("ann"), make_user("bob")
    client.force_login(ann)
    point, link = add_email(client)
    assert client.get(link).status_code == 200
    client.logout()
    response = client.get(link)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    client.force_login(bob)
    response = client.post(link)
    assert response.status_code == 400
    assert "not for an address on your account" in response.content.decode()
    point.refresh_from_db()
    assert not point.verified


def test_email_link_salt_and_scope(ann, grid):
    point = ContactPoint.objects.create(
        user=ann, kind="email", address="a@example.com", verification_sent_at=timezone.now()
    )
    token = contact_points.email_token(point)
    from django.core import signing

    with pytest.raises(signing.BadSignature):
        signing.TimestampSigner().unsign_object(token)  # another salt cannot read it
    # Changing the address (same id) makes the link useless.
    ContactPoint.objects.filter(pk=point.pk).update(address="b@example.com")
    with pytest.raises(contact_points.BadLink):
        contact_points.contact_for_link(token, ann)


# -- primary and remove ---------------------------------------------------------------


def verified_phone(user, number: str, primary: bool = False) -> ContactPoint:
    return ContactPoint.objects.create(
        user=user, kind="phone", address=number, verified_at=timezone.now(), is_primary=primary
    )


def test_make_primary_switches_and_needs_verification(ann_client, ann, grid):
    first = verified_phone(ann, PHONE, primary=True)
    second = verified_phone(ann, "+33612345678")
    unverified = ContactPoint.objects.create(user=ann, kind="phone", address="+4915123456789")
    assert ann_client.post(url(second, "primary")).status_code == 302
    first.refresh_from_db(), second.refresh_from_db()
    assert second.is_primary and not first.is_primary
    response = ann_client.post(url(unverified, "primary"))
    assert response.status_code == 400
    assert "verify this address before making it primary" in response.content.decode().lower()
    unverified.refresh_from_db()
    assert not unverified.is_primary


def test_removing_the_primary_promotes_another_verified_one(ann_client, ann, grid):
    first = verified_phone(ann, PHONE, primary=True)
    second = verified_phone(ann, "+33612345678")
    assert ann_client.post(url(first, "remove")).status_code == 302
    assert not ContactPoint.objects.filter(pk=first.pk).exists()
    second.refresh_from_db()
    assert second.is_primary


def test_account_email_is_explained_until_an_email_is_added(ann_client, ann, grid):
    html = ann_client.get(PAGE).content.decode()
    assert "email goes to your account address, <strong>ann@example.com</strong>" in html
    add_email(ann_client)
    assert "your account address" not in ann_client.get(PAGE).content.decode()


# -- nobody touches anyone else's -----------------------------------------------------


@pytest.mark.parametrize("action", ["verify", "resend", "primary", "remove"])
def test_another_users_contact_point_is_a_404_and_unchanged(
    client, make_user, grid, action, settings
):
    ann, bob = make_user("ann"), make_user("bob")
    client.force_login(bob)
    bobs_phone = add_phone(client)
    [code] = sms_codes(settings)
    bobs_verified = verified_phone(bob, "+33612345678")
    client.force_login(ann)
    for point in (bobs_phone, bobs_verified):
        before = snapshot(point)
        response = client.post(url(point, action), {"code": code})
        assert response.status_code == 404
        assert snapshot(point) == before
    assert len(sms_codes(settings)) == 1  # no code was re-sent to Bob
    assert ContactPoint.objects.filter(user=bob).count() == 2


def test_contact_actions_are_post_only(ann_client, ann, grid):
    point = verified_phone(ann, PHONE)
    for action in ("verify", "resend", "primary", "remove"):
        assert ann_client.get(url(point, action)).status_code == 405
    assert ann_client.get(ADD).status_code == 405
    assert ContactPoint.objects.filter(pk=point.pk).exists()


def test_contact_forms_need_their_csrf_token(ann, grid):
    client = Client(enforce_csrf_checks=True)
    client.force_login(ann)
    point = verified_phone(ann, PHONE)
    assert client.post(ADD, {"kind": "phone", "address": "+33612345678"}).status_code == 403
    assert client.post(url(point, "remove")).status_code == 403
    assert ContactPoint.objects.filter(user=ann).count() == 1


def test_contact_pages_need_sign_in(client, make_user, grid):
    bob = make_user("bob")
    point = verified_phone(bob, PHONE)
    for target in (ADD, url(point, "remove")):
        response = client.post(target, {"kind": "phone", "address": PHONE})
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")
    assert ContactPoint.objects.count() == 1
