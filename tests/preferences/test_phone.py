"""Phone numbers in E.164: the normaliser, and contact points that use it."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from notify.models import ContactPoint
from notify.models.phone import is_e164, normalise_phone


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+14155552671", None, "+14155552671"),
        ("+1 (415) 555-2671", None, "+14155552671"),
        ("  +1 415.555.2671  ", None, "+14155552671"),
        ("+44 20 7946 0958", None, "+442079460958"),
        ("+33 6 12 34 56 78", None, "+33612345678"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("06 12 34 56 78", "FR", "+33612345678"),
        ("+33 6 12 34 56 78", "GB", "+33612345678"),  # an explicit country wins
        ("0049 151 23456789", "FR", "+4915123456789"),  # international prefix
    ],
)
def test_valid_numbers_come_out_in_e164(raw, region, expected):
    assert normalise_phone(raw, region) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("+1 555", "too short"),
        ("+1415555267123456", "too long"),
        ("555-2671", "no known country code"),
        ("020 7946 0958", "no known country code"),  # national form without a region
        ("+999 1234 5678", "no known country code"),
        ("call me", "it does not look like a phone number"),
        ("+1 212 000 0000", "no such number is in service"),
        ("+1 415 555 2671 ext. 12", "an extension cannot receive text messages"),
    ],
)
def test_invalid_numbers_say_why(raw, reason):
    with pytest.raises(ValidationError) as caught:
        normalise_phone(raw)
    [message] = caught.value.messages
    assert message.startswith(f"'{raw}' is not a valid phone number: ")
    assert reason in message
    assert caught.value.code in ("invalid_phone",)


def test_an_empty_number_is_required():
    with pytest.raises(ValidationError) as caught:
        normalise_phone("   ")
    assert caught.value.code == "required"


def test_is_e164():
    assert is_e164("+14155552671")
    assert not is_e164("+1 415 555 2671")
    assert not is_e164("+1555")


# -- contact points ----------------------------------------------------------------------


def test_a_phone_contact_point_is_stored_in_e164(make_user):
    point = ContactPoint(user=make_user(), kind="phone", address="+1 (415) 555-2671")
    point.full_clean()
    point.save()
    assert ContactPoint.objects.get().address == "+14155552671"


def test_an_invalid_phone_is_refused_on_the_address_field(make_user):
    point = ContactPoint(user=make_user(), kind="phone", address="+1 555")
    with pytest.raises(ValidationError) as caught:
        point.full_clean()
    assert list(caught.value.message_dict) == ["address"]
    assert caught.value.message_dict["address"] == [
        "'+1 555' is not a valid phone number: too short."
    ]


def test_an_invalid_email_is_refused_on_the_address_field(make_user):
    point = ContactPoint(user=make_user(), kind="email", address="not-an-email")
    with pytest.raises(ValidationError) as caught:
        point.full_clean()
    assert caught.value.message_dict == {
        "address": ["'not-an-email' is not a valid email address."]
    }


def test_other_kinds_are_left_as_they_are(make_user):
    point = ContactPoint(user=make_user(), kind="slack", address="U0ALICE")
    point.full_clean()
    assert point.address == "U0ALICE"


def admin_add(admin_client, user, kind, address):
    return admin_client.post(
        reverse("admin:notify_contactpoint_add"),
        {
            "user": user.pk,
            "kind": kind,
            "address": address,
            "verification_attempts": 0,
        },
    )


def test_the_admin_refuses_a_bad_number_and_stores_nothing(admin_client, make_user):
    alice = make_user("alice")
    response = admin_add(admin_client, alice, "phone", "+1 555")
    assert response.status_code == 200  # the form again, with the error
    form = response.context["adminform"].form
    assert form.errors == {"address": ["'+1 555' is not a valid phone number: too short."]}
    assert b"is not a valid phone number" in response.content
    assert not ContactPoint.objects.exists()


def test_the_admin_stores_a_good_number_normalised(admin_client, make_user):
    alice = make_user("alice")
    response = admin_add(admin_client, alice, "phone", "+44 20 7946 0958")
    assert response.status_code == 302
    assert ContactPoint.objects.get(user=alice).address == "+442079460958"
