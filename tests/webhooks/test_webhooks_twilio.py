"""Twilio's webhooks: signed status callbacks move deliveries, inbound STOP/START
suppress and restore a number; a missing or forged signature changes nothing.

The SMS is really sent (worker -> TwilioSmsChannel -> twilio SDK -> local peer);
the callbacks are signed the way Twilio signs them, with the SDK's
``RequestValidator.compute_signature``.
"""

from __future__ import annotations

import pytest
from django.utils import timezone

from notify import trigger
from notify.models import ContactPoint, Delivery, ProviderEvent, Suppression
from notify.models.status import Status
from notify.preferences.suppressions import is_suppressed, suppress
from notify.runtime.worker import run_until_idle
from tests.peers.twilio import (
    ACCOUNT_SID,
    inbound_params,
    sign,
    status_params,
)

ALICE = "+14155552671"
STATUS = "/webhooks/twilio/status"
INBOUND = "/webhooks/twilio/inbound"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response />'

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(make_user, make_rule):
    make_rule(channels=["sms"])
    user = make_user("alice")
    ContactPoint.objects.create(user=user, kind="phone", address=ALICE, verified_at=timezone.now())
    return user


def send_sms(user, order_id: str = "A1") -> Delivery:
    """Trigger an event and let the worker send its SMS to the peer."""
    trigger("order.shipped", {"order_id": order_id}, recipients=[user])
    run_until_idle()
    return Delivery.objects.filter(notification__user=user, channel="sms").latest("pk")


@pytest.fixture
def sent(twilio_sms, alice) -> Delivery:
    delivery = send_sms(alice)
    assert delivery.status == Status.SENT
    assert delivery.provider_message_id == twilio_sms.messages[0].sid
    return delivery


def snapshot(delivery: Delivery) -> tuple:
    delivery.refresh_from_db()
    return (
        delivery.status,
        delivery.delivered_at,
        delivery.error_code,
        delivery.error_message,
        delivery.updated_at,
    )


# -- signatures ---------------------------------------------------------------------------


def test_a_status_callback_without_signature_is_refused(twilio_webhooks, sent):
    before = snapshot(sent)
    response = twilio_webhooks.status(sent.provider_message_id, "delivered", signed=False)
    assert response.status_code == 403
    assert snapshot(sent) == before
    assert not ProviderEvent.objects.exists()


@pytest.mark.parametrize("forgery", ["wrong token", "other url", "tampered field", "garbage"])
def test_a_forged_status_callback_is_refused(twilio_webhooks, sent, forgery):
    params = status_params(sent.provider_message_id, "undelivered", error_code="30003")
    url = f"http://testserver{STATUS}"
    signature = {
        "wrong token": sign(url, params, "f" * 32),
        "other url": sign("https://elsewhere.example/webhooks/twilio/status", params),
        "tampered field": sign(url, {**params, "MessageStatus": "delivered"}),
        "garbage": "bm90IGEgc2lnbmF0dXJl",
    }[forgery]
    before = snapshot(sent)
    response = twilio_webhooks.post(STATUS, params, signature=signature)
    assert response.status_code == 403
    assert snapshot(sent) == before
    assert not ProviderEvent.objects.exists()
    assert not Suppression.objects.exists()


def test_a_forged_inbound_stop_is_refused(twilio_webhooks):
    response = twilio_webhooks.inbound(ALICE, "STOP", signature="bm90IGEgc2lnbmF0dXJl")
    assert response.status_code == 403
    response = twilio_webhooks.inbound(ALICE, "STOP", signed=False)
    assert response.status_code == 403
    assert not Suppression.objects.exists()


def test_a_callback_for_another_account_is_refused(twilio_webhooks, sent):
    response = twilio_webhooks.status(
        sent.provider_message_id, "delivered", account_sid="AC" + "9" * 32
    )
    assert response.status_code == 403
    assert not ProviderEvent.objects.exists()


def test_without_a_twilio_channel_every_callback_is_refused(client):
    """The embedded default (SMS in the sandbox) has no token to check against."""
    params = status_params("SM" + "0" * 32, "delivered")
    response = client.post(
        STATUS, params, headers={"X-Twilio-Signature": sign(f"http://testserver{STATUS}", params)}
    )
    assert response.status_code == 403
    assert b"TWILIO_AUTH_TOKEN" in response.content  # says what to set
    inbound = inbound_params(ALICE, "STOP")
    response = client.post(
        INBOUND,
        inbound,
        headers={"X-Twilio-Signature": sign(f"http://testserver{INBOUND}", inbound)},
    )
    assert response.status_code == 403
    assert b"TWILIO_AUTH_TOKEN" in response.content
    assert not Suppression.objects.exists()


def test_the_public_url_from_site_url_is_what_twilio_signed(settings, twilio_webhooks, sent):
    """Behind a proxy Django sees http://testserver; Twilio called the public URL."""
    settings.NOTIFY = {**settings.NOTIFY, "SITE_URL": "https://notify.example.com/"}
    public = f"https://notify.example.com{STATUS}"
    response = twilio_webhooks.status(sent.provider_message_id, "delivered", public_url=public)
    assert response.status_code == 204
    sent.refresh_from_db()
    assert sent.status == Status.DELIVERED


def test_the_public_url_keeps_the_query_string(settings, twilio_webhooks, sent):
    settings.NOTIFY = {**settings.NOTIFY, "SITE_URL": "https://notify.example.com"}
    path = f"{STATUS}?channel=sms"
    params = status_params(sent.provider_message_id, "delivered")
    signature = sign(f"https://notify.example.com{path}", params)
    response = twilio_webhooks.client.post(path, params, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 204
    # The same signature does not cover the URL without its query.
    response = twilio_webhooks.post(STATUS, params, signature=signature)
    assert response.status_code == 403


# -- status callbacks -------------------------------------------------------------------------


def test_delivered_marks_the_delivery_delivered(twilio_webhooks, sent):
    response = twilio_webhooks.status(sent.provider_message_id, "delivered")
    assert response.status_code == 204
    sent.refresh_from_db()
    assert sent.status == Status.DELIVERED
    assert sent.delivered_at is not None
    event = ProviderEvent.objects.get()
    assert (event.provider, event.event_type, event.delivery_id) == ("twilio", "delivered", sent.pk)
    assert event.payload["MessageStatus"] == "delivered"
    assert event.payload["AccountSid"] == ACCOUNT_SID


def test_undelivered_with_an_error_code_bounces(twilio_webhooks, sent):
    response = twilio_webhooks.status(sent.provider_message_id, "undelivered", error_code=30003)
    assert response.status_code == 204
    sent.refresh_from_db()
    assert sent.status == Status.BOUNCED
    assert sent.error_code == "30003"
    assert "unreachable destination handset" in sent.error_message
    assert not Suppression.objects.exists()  # unreachable today is not STOP


def test_failed_fails_the_delivery(twilio_webhooks, sent):
    response = twilio_webhooks.status(sent.provider_message_id, "failed", error_code=30008)
    assert response.status_code == 204
    sent.refresh_from_db()
    assert (sent.status, sent.error_code) == (Status.FAILED, "30008")


@pytest.mark.parametrize("status", ["queued", "sending", "sent", "accepted"])
def test_progress_reports_are_recorded_and_change_nothing(twilio_webhooks, sent, status):
    before = snapshot(sent)
    response = twilio_webhooks.status(sent.provider_message_id, status)
    assert response.status_code == 204
    assert snapshot(sent) == before
    assert ProviderEvent.objects.get().delivery_id == sent.pk


def test_a_late_sent_does_not_undo_delivered(twilio_webhooks, sent):
    twilio_webhooks.status(sent.provider_message_id, "delivered")
    twilio_webhooks.status(sent.provider_message_id, "sent")
    sent.refresh_from_db()
    assert sent.status == Status.DELIVERED
    assert ProviderEvent.objects.count() == 2


def test_undelivered_because_of_stop_suppresses_the_number(twilio_webhooks, sent):
    response = twilio_webhooks.status(sent.provider_message_id, "undelivered", error_code=21610)
    assert response.status_code == 204
    sent.refresh_from_db()
    assert (sent.status, sent.error_code) == (Status.BOUNCED, "21610")
    suppression = Suppression.objects.get()
    assert (suppression.kind, suppression.address, suppression.reason, suppression.source) == (
        "phone",
        ALICE,
        "sms_stop",
        "twilio",
    )


def test_an_unknown_message_is_recorded_all_the_same(twilio_webhooks):
    response = twilio_webhooks.status("SM" + "e" * 32, "delivered")
    assert response.status_code == 204
    event = ProviderEvent.objects.get()
    assert event.delivery is None and event.event_type == "delivered"


def test_a_status_twilio_adds_later_is_recorded_and_moves_nothing(twilio_webhooks, sent):
    before = snapshot(sent)
    assert (
        twilio_webhooks.status(sent.provider_message_id, "partially_delivered").status_code == 204
    )
    assert snapshot(sent) == before
    assert ProviderEvent.objects.get().event_type == "partially_delivered"


def test_a_callback_without_its_fields_is_a_bad_request(twilio_webhooks):
    response = twilio_webhooks.post(STATUS, {"AccountSid": ACCOUNT_SID, "MessageStatus": "sent"})
    assert response.status_code == 400
    assert b"MessageSid" in response.content
    assert not ProviderEvent.objects.exists()


def test_a_body_that_is_not_a_form_is_a_bad_request(twilio_webhooks):
    response = twilio_webhooks.client.post(
        STATUS,
        data='{"MessageSid": "SM1"}',
        content_type="application/json",
        headers={"X-Twilio-Signature": "x"},
    )
    assert response.status_code == 400


def test_only_post_is_allowed(twilio_webhooks):
    assert twilio_webhooks.client.get(STATUS).status_code == 405
    assert twilio_webhooks.client.get(INBOUND).status_code == 405


# -- inbound STOP / START / HELP ----------------------------------------------------------------


@pytest.mark.parametrize(
    "body", ["STOP", "stop", "  Stop \n", "STOPALL", "unsubscribe", "Cancel", "END", "quit"]
)
def test_an_opt_out_keyword_suppresses_the_sender(twilio_webhooks, body):
    response = twilio_webhooks.inbound("+1 415 555 2671", body)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/xml")
    assert response.content.decode() == EMPTY_TWIML
    suppression = Suppression.objects.get()
    assert (suppression.kind, suppression.address) == ("phone", ALICE)  # stored in E.164
    assert (suppression.reason, suppression.source) == ("sms_stop", "twilio")


@pytest.mark.parametrize("body", ["stop please", "Stop it now", "I want to stop"])
def test_a_sentence_with_stop_in_it_is_not_a_keyword(twilio_webhooks, body):
    assert twilio_webhooks.inbound(ALICE, body).status_code == 200
    assert not Suppression.objects.exists()


def test_advanced_opt_out_names_the_keyword_type(twilio_webhooks):
    """With Advanced Opt-Out, Twilio sends OptOutType for custom keywords too."""
    twilio_webhooks.inbound(ALICE, "arrêt", OptOutType="STOP")
    assert is_suppressed("phone", ALICE)
    twilio_webhooks.inbound(ALICE, "reprendre", OptOutType="START")
    assert not is_suppressed("phone", ALICE)


def test_stop_then_the_next_sms_is_skipped_as_suppressed(twilio_webhooks, twilio_sms, alice):
    assert twilio_webhooks.inbound(ALICE, "STOP").status_code == 200
    delivery = send_sms(alice)
    assert (delivery.status, delivery.skip_reason) == (Status.SKIPPED, "suppressed")
    assert twilio_sms.messages == []


def test_start_restores_the_number_and_the_next_sms_is_sent(twilio_webhooks, twilio_sms, alice):
    twilio_webhooks.inbound(ALICE, "STOP")
    assert send_sms(alice, "A1").status == Status.SKIPPED
    response = twilio_webhooks.inbound(ALICE, " start ")
    assert response.status_code == 200
    assert response.content.decode() == EMPTY_TWIML
    assert not is_suppressed("phone", ALICE)
    lifted = Suppression.objects.get()
    assert lifted.lifted_at is not None and "START" in lifted.lift_reason
    delivery = send_sms(alice, "A2")
    assert delivery.status == Status.SENT
    [message] = twilio_sms.messages
    assert message.to == ALICE and "A2" in message.body


@pytest.mark.parametrize("body", ["START", "YES", "unstop"])
def test_start_does_not_lift_what_stop_did_not_add(twilio_webhooks, body):
    suppress("phone", ALICE, "manual", source="admin")
    twilio_webhooks.inbound(ALICE, body)
    assert is_suppressed("phone", ALICE)


@pytest.mark.parametrize("body", ["HELP", "info", "Hello there"])
def test_help_and_other_texts_change_nothing(twilio_webhooks, body):
    response = twilio_webhooks.inbound(ALICE, body)
    assert response.status_code == 200
    assert response.content.decode() == EMPTY_TWIML
    assert not Suppression.objects.exists()
    suppress("phone", ALICE, "sms_stop", source="twilio")
    twilio_webhooks.inbound(ALICE, body)
    assert is_suppressed("phone", ALICE)  # HELP does not opt back in


def test_an_inbound_message_without_sender_is_a_bad_request(twilio_webhooks):
    params = inbound_params(ALICE, "STOP")
    del params["From"]
    assert twilio_webhooks.post(INBOUND, params).status_code == 400
    assert not Suppression.objects.exists()
