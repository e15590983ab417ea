"""No status report is lost, whenever it arrives (DESIGN.md, 8; issue 12).

Real sends to the local Twilio and Postmark peers, which answer with a
provider's ordinary latency. The peers' ``on_accept`` hook posts each
message's status reports to our webhook views the way providers do:

* *before*: from inside the provider's API call, so the report is stored
  before our worker has even heard the provider's answer;
* *during*: from another thread right after the provider accepted it,
  racing the worker that records the send;
* *after*: once every send is recorded.

Reports also come out of order (delivered before sent, a bounce before or after
"delivered"). Counted at both ends: every message reached the peer once, every
report posted was answered 2xx, is stored once and is attached to its
delivery, and every delivery ends in the state its reports call for.
"""

from __future__ import annotations

import base64
import json
import random
import threading
from pathlib import Path

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from notify import trigger
from notify.models import ContactPoint, Delivery, ProviderEvent, Suppression
from notify.models.status import Status
from notify.preferences.suppressions import is_suppressed
from notify.runtime.worker import run_until_idle
from tests.peers.twilio import TwilioWebhooks

pytestmark = pytest.mark.django_db(transaction=True)

N = 100
LATENCY = 0.02  # seconds per provider API call
PHASES = ("before", "during", "after")
FIXTURES = Path(__file__).parent.parent / "fixtures" / "postmark"
POSTMARK_URL = "/webhooks/anymail/postmark/tracking/"
SECRET = "postmark:webhook-s3cret"


@pytest.fixture(autouse=True)
def _server_warm():
    """A running server has its URLs and views loaded before a provider can
    call it. The first request of this test process loads them (5-8 s on a
    busy machine); posted from inside the peer's API call, that stalled the
    provider's answer past our 5 s time-out, so the first send was recorded
    as timed out and its reports had no send to attach to."""
    Client().get("/webhooks/twilio/status")
    Client().get(POSTMARK_URL)


class Reporter:
    """Posts reports in three phases and remembers every answer."""

    def __init__(self, post):
        self.post = post  # (key, report) -> status code; runs in any thread
        self.answers: list[int] = []
        self.later: list[tuple[str, object]] = []
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._random = random.Random(12)

    def _post_all(self, key: str, reports: list) -> None:
        try:
            for report in reports:
                status = self.post(key, report)
                with self._lock:
                    self.answers.append(status)
        finally:
            connection.close()  # this thread's database connection

    def accepted(self, index: int, key: str, reports: list) -> None:
        phase = PHASES[index % 3]
        if phase == "before":
            self._post_all(key, reports)
        elif phase == "during":
            delay = self._random.uniform(0, 2 * LATENCY)
            thread = threading.Timer(delay, self._post_all, (key, reports))
            thread.start()
            self.threads.append(thread)
        else:
            self.later.append((key, reports))

    def finish(self) -> None:
        for thread in self.threads:
            thread.join(10)
        for key, reports in self.later:
            self._post_all(key, reports)


def send_to_all(make_user, contact_kind: str | None) -> list:
    users = []
    for i in range(N):
        user = make_user(f"reader{i}")
        if contact_kind == "phone":
            ContactPoint.objects.create(
                user=user, kind="phone", address=f"+1415555{i:04d}", verified_at=timezone.now()
            )
        users.append(user)
    return users


def test_twilio_reports_before_during_and_after_the_record_are_all_applied(
    twilio_sms, make_user, make_rule
):
    make_rule(channels=["sms"])
    users = send_to_all(make_user, "phone")
    index_of = {f"+1415555{i:04d}": i for i in range(N)}
    # Per message, in the order posted, and the state they must end in.
    plans = [
        (["delivered", "sent"], Status.DELIVERED),  # delivered before sent
        (["delivered"], Status.DELIVERED),
        (["undelivered"], Status.BOUNCED),  # 30003: unreachable handset
        (["sent", "delivered"], Status.DELIVERED),
    ]

    def post(sid: str, status: str) -> int:
        webhooks = TwilioWebhooks(Client(), twilio_sms.auth_token)
        error = "30003" if status == "undelivered" else None
        return webhooks.status(sid, status, error_code=error).status_code

    reporter = Reporter(post)
    twilio_sms.latency = LATENCY
    twilio_sms.on_accept = lambda message: reporter.accepted(
        index_of[message.to], message.sid, plans[index_of[message.to] % 4][0]
    )

    trigger("order.shipped", {"order_id": "A1"}, recipients=users)
    run_until_idle()
    reporter.finish()

    # At the receiver: each message once.
    assert len(twilio_sms.messages) == N
    assert len({m.to for m in twilio_sms.messages}) == N
    # In our records: every report answered, stored once, attached; states right.
    posted = sum(len(plans[i % 4][0]) for i in range(N))
    assert reporter.answers == [204] * posted
    assert ProviderEvent.objects.count() == posted
    assert not ProviderEvent.objects.filter(delivery__isnull=True).exists()
    sid_to = {m.sid: m.to for m in twilio_sms.messages}
    for delivery in Delivery.objects.filter(channel="sms"):
        expected = plans[index_of[sid_to[delivery.provider_message_id]] % 4][1]
        assert delivery.status == expected, delivery
        assert delivery.attempts == 1
        assert delivery.provider_events.count() == len(
            plans[index_of[sid_to[delivery.provider_message_id]] % 4][0]
        )
        if expected == Status.DELIVERED:
            assert delivery.delivered_at is not None
        else:
            assert delivery.error_code == "30003"


def postmark_payload(name: str, **fields) -> dict:
    data = json.loads((FIXTURES / f"{name}.json").read_text())
    data.update(fields)
    return data


def test_postmark_reports_before_during_and_after_the_record_are_all_applied(
    settings, esp_mailer, make_user, make_rule
):
    settings.ANYMAIL = {**getattr(settings, "ANYMAIL", {}), "WEBHOOK_SECRET": SECRET}
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {
            **settings.NOTIFY["CHANNELS"],
            "email": {"BACKEND": "channels.email.EmailChannel", "OPTIONS": {"MAILER": "postmark"}},
        },
    }
    make_rule(channels=["email"])
    users = send_to_all(make_user, None)
    index_of = {u.email: i for i, u in enumerate(users)}
    plans = [
        (["delivery"], Status.DELIVERED),
        (["delivery", "hard_bounce"], Status.BOUNCED),  # a bounce after delivered
        (["hard_bounce", "delivery"], Status.BOUNCED),  # a late "delivered" changes nothing
        (["delivery"], Status.DELIVERED),
    ]
    auth = "Basic " + base64.b64encode(SECRET.encode()).decode()

    def post(key: tuple[str, str], name: str) -> int:
        message_id, address = key
        body = postmark_payload(name, MessageID=message_id, Recipient=address, Email=address)
        return (
            Client()
            .post(
                POSTMARK_URL,
                data=json.dumps(body),
                content_type="application/json",
                HTTP_AUTHORIZATION=auth,
            )
            .status_code
        )

    reporter = Reporter(post)
    esp_mailer.latency = LATENCY
    esp_mailer.on_accept = lambda message: reporter.accepted(
        index_of[message.to],
        (message.message_id, message.to),
        plans[index_of[message.to] % 4][0],
    )

    trigger("order.shipped", {"order_id": "A1"}, recipients=users)
    run_until_idle()
    reporter.finish()

    assert len(esp_mailer.messages) == N
    assert len({m.to for m in esp_mailer.messages}) == N
    posted = sum(len(plans[i % 4][0]) for i in range(N))
    assert reporter.answers == [200] * posted
    assert ProviderEvent.objects.count() == posted
    assert not ProviderEvent.objects.filter(delivery__isnull=True).exists()
    for delivery in Delivery.objects.filter(channel="email").select_related("notification__user"):
        index = index_of[delivery.notification.user.email]
        assert delivery.status == plans[index % 4][1], (index, delivery)
        assert delivery.provider_events.count() == len(plans[index % 4][0])
    # A hard bounce suppresses its address, whatever order it came in; nothing else does.
    bounced = {u.email for i, u in enumerate(users) if plans[i % 4][1] == Status.BOUNCED}
    assert set(Suppression.objects.values_list("address", flat=True)) == bounced
    assert all(is_suppressed("email", address) for address in bounced)
