"""Personal data in ops screens: the ops group sees addresses and payloads
masked and no working unsubscribe or verification link; the permission
``notify.view_personal_data`` (and superusers) unmask."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from notify.intake.trigger import trigger
from notify.models import ContactPoint, DeliveryAttempt
from notify.preferences.masking import mask_address, mask_data, mask_text
from notify.preferences.one_click import read_token
from notify.runtime.worker import run_until_idle
from rules.ops import ensure_ops_group

LINK = re.compile(r"/unsubscribe/([^/\s\"'<>&]+)/")


@pytest.fixture
def alice(make_user):
    alice = make_user("alice", first_name="Alice")
    ContactPoint.objects.create(
        user=alice, kind=ContactPoint.Kind.PHONE, address="+15005550071", verified_at=timezone.now()
    )
    return alice


@pytest.fixture
def ops(client, make_user):
    """A member of the ops group (staff, rules and templates, nothing else)."""
    group, _ = ensure_ops_group()
    user = make_user("opsperson", is_staff=True)
    user.groups.add(group)
    client.force_login(user)
    return client, user


@pytest.fixture
def privileged(ops):
    client, user = ops
    user.user_permissions.add(
        Permission.objects.get(content_type__app_label="notify", codename="view_personal_data")
    )
    return client, user


@pytest.fixture
def stored(alice, make_rule):
    rule = make_rule(name="Shipped", recipients=["explicit"], channels=["email", "sms"])
    event = trigger(
        "order.shipped",
        {"order_id": "A-7", "email": "alice@example.com", "note": "call +1 500 555 0071"},
        recipients=[alice],
    )
    return rule, event


def preview(client, rule, event):
    url = reverse("admin:rules_rule_preview", args=[rule.pk])
    response = client.get(url, {"source": "event", "event": event.pk})
    assert response.status_code == 200
    return response


def test_masks():
    assert mask_address("alice@example.com") == "a•••@example.com"
    assert mask_address("+15005550071") == "+1•••••••71"
    assert mask_text("mail bob@x.org, https://n.example/unsubscribe/abc:def/") == (
        "mail b•••@x.org, https://n.example/unsubscribe/•••/"
    )
    assert mask_data({"email": "c@d.ee", "n": 1, "list": ["e@f.gg"]}) == {
        "email": "c•••@d.ee",
        "n": 1,
        "list": ["e•••@f.gg"],
    }


def test_ops_see_the_preview_masked(ops, stored, settings):
    client, _ = ops
    response = preview(client, *stored)
    content = response.content.decode()
    assert "alice@example.com" not in content
    assert "5550071" not in content and "555 0071" not in content
    assert "a•••@example.com" in content and "+1•••••••71" in content
    assert "Your order A-7 has shipped" in content  # the text itself is there
    # No working one-click link anywhere on the page (the token is gone).
    assert LINK.findall(content) and set(LINK.findall(content)) == {"•••"}
    [item] = response.context["preview"].matched
    [person] = item.recipients
    channels = {c.channel: c for c in person.channels}
    assert channels["email"].address == "a•••@example.com"
    assert channels["sms"].address == "+1•••••••71"
    # The stored event's payload, in the recent events list and the form.
    assert '"email": "a•••@example.com"' in content or "a•••@example.com" in content
    assert "Addresses, payloads and links" in content


def test_the_permission_unmasks(privileged, stored):
    client, _ = privileged
    content = preview(client, *stored).content.decode()
    assert "alice@example.com" in content and "+15005550071" in content
    tokens = [t for t in LINK.findall(content) if t != "•••"]
    assert tokens and read_token(tokens[0]).channel == "email"
    assert "Addresses, payloads and links" not in content


def test_superusers_have_it(admin_client, stored):
    content = preview(admin_client, *stored).content.decode()
    assert "alice@example.com" in content


def test_dry_run_records_are_masked_without_the_permission(
    client, make_user, alice, make_rule, settings
):
    make_rule(name="Quiet", recipients=["explicit"], channels=["email"], dry_run=True)
    trigger("order.shipped", {"order_id": "D-1"}, recipients=[alice])
    run_until_idle()
    attempt = DeliveryAttempt.objects.get()
    assert attempt.sent["to"] == "alice@example.com"  # kept whole, shown masked
    staff = make_user("support", is_staff=True)
    staff.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="notify",
            codename__in=["view_delivery", "view_deliveryattempt", "view_event"],
        )
    )
    client.force_login(staff)
    url = reverse("admin:notify_delivery_change", args=[attempt.delivery_id])
    content = client.get(url).content.decode()
    assert "alice@example.com" not in content and "a•••@example.com" in content
    assert set(LINK.findall(content)) <= {"•••"}
    event_url = reverse("admin:notify_event_change", args=[attempt.delivery.notification.event_id])
    assert client.get(event_url).status_code == 200

    staff.user_permissions.add(
        Permission.objects.get(content_type__app_label="notify", codename="view_personal_data")
    )
    staff = type(staff).objects.get(pk=staff.pk)  # permissions are cached per instance
    client.force_login(staff)
    content = client.get(url).content.decode()
    assert "alice@example.com" in content


def test_event_payload_is_masked_without_the_permission(client, make_user, stored):
    _, event = stored
    staff = make_user("support", is_staff=True)
    staff.user_permissions.add(
        Permission.objects.get(content_type__app_label="notify", codename="view_event")
    )
    client.force_login(staff)
    content = client.get(reverse("admin:notify_event_change", args=[event.pk])).content.decode()
    assert "alice@example.com" not in content and "a•••@example.com" in content
