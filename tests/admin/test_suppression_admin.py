"""Admin for the suppression list and provider reports: ops add and lift
suppressions (history is kept, never edited or deleted); reports are read-only."""

from __future__ import annotations

import pytest
from django.urls import reverse

from notify.models import ProviderEvent, Suppression
from notify.outbox.status_reports import StatusReport, apply_status
from notify.preferences.suppressions import is_suppressed, suppress

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:notify_suppression_changelist"


def test_ops_add_an_address_by_hand(admin_client, admin_user):
    response = admin_client.post(
        reverse("admin:notify_suppression_add"),
        {"kind": "email", "address": " Carol@Example.COM ", "detail": "asked by phone"},
    )
    assert response.status_code == 302
    suppression = Suppression.objects.get()
    assert (suppression.kind, suppression.address) == ("email", "carol@example.com")
    assert (suppression.reason, suppression.source) == (Suppression.Reason.MANUAL, "admin")
    assert suppression.detail == "asked by phone"
    assert is_suppressed("email", "CAROL@example.com")


def test_an_address_already_suppressed_is_refused_by_name(admin_client):
    suppress("email", "carol@example.com", Suppression.Reason.HARD_BOUNCE, source="postmark")
    response = admin_client.post(
        reverse("admin:notify_suppression_add"),
        {"kind": "email", "address": "CAROL@example.com"},
    )
    assert response.status_code == 200
    assert "This address is already suppressed." in response.content.decode()
    assert Suppression.objects.count() == 1


def test_the_add_form_asks_only_kind_address_and_detail(admin_client):
    form = admin_client.get(reverse("admin:notify_suppression_add")).context["adminform"].form
    assert list(form.fields) == ["kind", "address", "detail"]


def test_lifting_keeps_the_row_and_says_who(admin_client, admin_user):
    bounced = suppress(
        "email", "dan@example.com", Suppression.Reason.HARD_BOUNCE, source="postmark"
    )
    stopped = suppress("phone", "+15005550006", Suppression.Reason.SMS_STOP, source="twilio")
    response = admin_client.post(
        reverse(CHANGELIST),
        {"action": "lift_selected", "_selected_action": [bounced.pk]},
        follow=True,
    )
    assert "1 suppression lifted" in response.content.decode()
    bounced.refresh_from_db()
    assert bounced.lifted_at is not None
    assert bounced.lifted_by == admin_user
    assert bounced.lift_reason == f"lifted in admin by {admin_user}"
    assert not is_suppressed("email", "dan@example.com")
    assert is_suppressed("phone", "+15005550006")
    stopped.refresh_from_db()
    assert stopped.lifted_at is None

    # Lifting again changes nothing; the address can be suppressed anew.
    admin_client.post(
        reverse(CHANGELIST), {"action": "lift_selected", "_selected_action": [bounced.pk]}
    )
    suppress("email", "dan@example.com", Suppression.Reason.COMPLAINT, source="postmark")
    assert Suppression.objects.filter(address="dan@example.com").count() == 2


def test_the_list_filters_and_searches(admin_client):
    suppress("email", "erin@example.com", Suppression.Reason.COMPLAINT, source="postmark")
    lifted = suppress("email", "fay@example.com", Suppression.Reason.HARD_BOUNCE)
    Suppression.objects.filter(pk=lifted.pk).update(lifted_at=lifted.created_at)
    url = reverse(CHANGELIST)
    assert admin_client.get(url, {"state": "active"}).context["cl"].result_count == 1
    assert admin_client.get(url, {"state": "lifted"}).context["cl"].result_count == 1
    assert admin_client.get(url, {"reason": "complaint"}).context["cl"].result_count == 1
    assert admin_client.get(url, {"q": "fay@"}).context["cl"].result_count == 1


def test_suppressions_are_not_deleted_or_edited(admin_client):
    row = suppress("email", "gus@example.com", Suppression.Reason.HARD_BOUNCE)
    response = admin_client.get(reverse("admin:notify_suppression_change", args=[row.pk]))
    assert response.status_code == 200
    assert set(response.context["adminform"].form.fields) == set()  # all read-only
    response = admin_client.get(reverse("admin:notify_suppression_delete", args=[row.pk]))
    assert response.status_code == 403


def test_provider_reports_are_read_only_records(admin_client):
    apply_status(
        StatusReport(
            provider="postmark",
            event_type="bounced",
            message_id="abc-123",
            detail="<b>mailbox full</b>",
            payload={"RecordType": "Bounce", "Details": "<script>x</script>"},
        )
    )
    event = ProviderEvent.objects.get()
    response = admin_client.get(reverse("admin:notify_providerevent_changelist"))
    assert response.context["cl"].result_count == 1
    response = admin_client.get(reverse("admin:notify_providerevent_change", args=[event.pk]))
    page = response.content.decode()
    assert "&lt;script&gt;x&lt;/script&gt;" in page
    assert "<script>x</script>" not in page
    assert admin_client.get(reverse("admin:notify_providerevent_add")).status_code == 403
