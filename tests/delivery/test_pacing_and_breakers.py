"""Pacing and circuit breakers (issue 12), counted at the local peers and in our books.

* A Slack 429 storm: no attempt is used by a 429, and Slack sees at most one
  message a second per channel (every request, answered or refused).
* A webhook receiver down for a while: its host's breaker opens, it gets at
  most a few trial requests per cool-down, and after it returns every
  delivery is received exactly once.
* The same outage at the breaker's defaults, over two simulated minutes: the
  requests that reach the receiver stay within ``MINIMUM_CALLS + one trial
  per cool-down`` (``tests/channels/test_breaker.py``: a flaky receiver keeps
  its traffic at the same defaults).
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from itertools import pairwise

import pytest
from django.utils import timezone

from channels import breaker
from channels.base import OutgoingMessage, TransientError
from channels.breaker import DEFAULT_COOL_DOWN, DEFAULT_MINIMUM_CALLS, CircuitOpen
from channels.webhook import SignedWebhookChannel
from notify import trigger
from notify.models import ContactPoint, Delivery, DeliveryAttempt
from notify.models.status import Status
from notify.runtime.worker import run_until_idle
from tests.peers.slack import BOT_TOKEN

SECRET = "whsec-pacing-0001"


def run_until_settled(expected: int, deadline: float) -> None:
    """The worker, the way the pool runs it: again and again until every
    delivery is settled (not pending nor sending) or ``deadline`` seconds pass."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        run_until_idle()
        open_ = Delivery.objects.exclude(status__in=[Status.SENT, Status.FAILED, Status.DEAD])
        if Delivery.objects.count() >= expected and not open_.exists():
            return
        time.sleep(0.05)


# -- Slack: pacing and 429s ------------------------------------------------------------------


@pytest.fixture
def slack_chat(settings, slack_peer):
    """The "chat" alias is Slack's Web API at the peer, with the default pacing
    (one message a second per channel) and the default backoff (minutes): a
    429 that used an attempt would leave its delivery pending for minutes."""
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {
            **settings.NOTIFY["CHANNELS"],
            "chat": {
                "BACKEND": "channels.chat.SlackChannel",
                "OPTIONS": {"BOT_TOKEN": BOT_TOKEN, "BASE_URL": slack_peer.api_url, "TIMEOUT": 5},
            },
        },
    }
    return slack_peer


def slack_users(make_user, make_rule, count: int):
    members = [f"U0MEMBER{i}" for i in range(count)]
    users = []
    for member in members:
        user = make_user(member.lower())
        ContactPoint.objects.create(
            user=user, kind=ContactPoint.Kind.SLACK, address=member, verified_at=timezone.now()
        )
        users.append(user)
    make_rule(channels=["chat"])
    return members, users


def test_a_slack_429_storm_uses_no_attempt_and_each_channel_gets_at_most_one_a_second(
    slack_chat, make_user, make_rule
):
    members, users = slack_users(make_user, make_rule, 3)
    per_member = 3
    slack_chat.ratelimit_next(6, retry_after=1)  # the first six requests are refused
    for n in range(per_member):
        trigger("order.shipped", {"order_id": f"A{n}", "url": ""}, recipients=users)

    run_until_settled(len(members) * per_member, deadline=25)

    # Our books: all sent, each on its first attempt; the 429s are on record.
    deliveries = list(Delivery.objects.all())
    assert len(deliveries) == len(members) * per_member
    assert {d.status for d in deliveries} == {Status.SENT}
    assert {d.attempts for d in deliveries} == {1}
    attempts = DeliveryAttempt.objects.all()
    refused = [a for a in attempts if a.error_code == "ratelimited"]
    assert len(refused) == 6
    assert all(a.outcome == DeliveryAttempt.Outcome.TRANSIENT for a in refused)
    assert Counter(a.outcome for a in attempts)[DeliveryAttempt.Outcome.SENT] == len(deliveries)

    # The peer: each message once, and every request to a channel (answered or
    # refused) at least a second after the one before.
    assert Counter(m.channel for m in slack_chat.messages) == dict.fromkeys(members, per_member)
    times = defaultdict(list)
    for request in slack_chat.requests:
        times[request.json()["channel"]].append(request.at)
    assert sum(len(t) for t in times.values()) == len(deliveries) + 6
    for member, arrived in times.items():
        gaps = [b - a for a, b in pairwise(arrived)]
        assert min(gaps) >= 0.95, (member, gaps)


def test_only_max_free_rate_limits_429s_in_a_row_are_free(
    settings, slack_chat, make_user, make_rule
):
    settings.NOTIFY = {
        **settings.NOTIFY,
        "MAX_FREE_RATE_LIMITS": 2,
        "RETRY_BASE_DELAY": 0.01,
        "RETRY_JITTER": 0.0,
    }
    _members, users = slack_users(make_user, make_rule, 1)
    slack_chat.ratelimit_next(3, retry_after=0)
    trigger("order.shipped", {"order_id": "A1", "url": ""}, recipients=users)

    run_until_settled(1, deadline=10)

    delivery = Delivery.objects.get()
    assert delivery.status == Status.SENT
    # Two free 429s, the third counted, then sent on the second attempt.
    assert delivery.attempts == 2
    log = [(a.number, a.outcome) for a in delivery.attempt_log.order_by("pk")]
    assert log == [(1, "transient"), (1, "transient"), (1, "transient"), (2, "sent")]
    assert len(slack_chat.messages) == 1


# -- webhooks: a receiver that is down ---------------------------------------------------------


@pytest.fixture
def webhook_receiver(settings, webhook_peer, make_user, make_rule):
    """The signed webhook channel to the local receiver, with a short breaker
    (3 failures, 1 s cool-down) and a short backoff; one service user."""
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {
            **settings.NOTIFY["CHANNELS"],
            "webhook": {
                "BACKEND": "channels.webhook.SignedWebhookChannel",
                "OPTIONS": {
                    "SECRET": SECRET,
                    "INTERNAL_HOSTS": ["127.0.0.1"],
                    "TIMEOUT": 5,
                    "FAILURE_THRESHOLD": 3,
                    "COOL_DOWN": 1,
                },
            },
        },
        "RETRY_BASE_DELAY": 0.2,
        "RETRY_FACTOR": 1.0,
        "RETRY_JITTER": 0.0,
    }
    crm = make_user("crm")
    url = webhook_peer.add_endpoint("signed", secret=SECRET)
    ContactPoint.objects.create(
        user=crm, kind=ContactPoint.Kind.WEBHOOK, address=url, verified_at=timezone.now()
    )
    make_rule(channels=["webhook"], message="order_shipped_sync")
    return crm


def test_a_receiver_down_for_a_while_gets_a_few_trials_and_loses_nothing(
    webhook_peer, webhook_receiver
):
    outage, threshold, cool_down, count = 3.0, 3, 1.0, 20
    webhook_peer.unavailable_for(outage)
    started = time.monotonic()
    for n in range(count):
        trigger("order.shipped", {"order_id": f"A{n}"}, recipients=[webhook_receiver])

    run_until_settled(count, deadline=25)

    # The peer: during the outage, the threshold and then one trial per cool-down.
    during = [r for r in webhook_peer.requests if r.at < started + outage]
    trials = math.ceil(outage / cool_down) + 1
    assert len(during) <= threshold + trials, len(during)
    # Nothing lost after it returned: each delivery received exactly once.
    received = Counter(a.delivery for a in webhook_peer.accepted)
    deliveries = list(Delivery.objects.all())
    assert len(deliveries) == count
    assert {d.status for d in deliveries} == {Status.SENT}
    assert received == {str(d.pk): 1 for d in deliveries}
    # Our books: one attempt per request that reached the receiver, none for
    # the sends the open breaker held back.
    assert DeliveryAttempt.objects.count() == len(webhook_peer.requests)
    assert sum(d.attempts for d in deliveries) == len(webhook_peer.requests)


def test_at_default_settings_two_minutes_down_costs_threshold_plus_a_trial_per_cool_down(
    webhook_peer, monkeypatch
):
    """Every due send tries every half second for two simulated minutes (far
    more often than the backoff would): the breaker alone bounds the requests."""
    now = [1_000_000.0]
    monkeypatch.setattr(breaker, "clock", lambda: now[0])
    url = webhook_peer.add_endpoint("signed", secret=SECRET)
    channel = SignedWebhookChannel("webhook", SECRET=SECRET, INTERNAL_HOSTS=["127.0.0.1"])
    webhook_peer.fail_next(100_000, 503)
    pending = set(range(1, 11))
    open_answers = []
    with channel:
        for _tick in range(240):  # 120 s
            for delivery_id in sorted(pending):
                try:
                    channel.send(OutgoingMessage(delivery_id, "webhook", url))
                except CircuitOpen as exc:
                    open_answers.append(exc.retry_after)
                except TransientError:
                    pass
            now[0] += 0.5
        down = len(webhook_peer.requests)
        trials = math.ceil(120 / DEFAULT_COOL_DOWN)
        assert down <= DEFAULT_MINIMUM_CALLS + trials, down
        assert 0 < max(open_answers) <= DEFAULT_COOL_DOWN

        # Back: the next trial closes the breaker and everything goes through once.
        webhook_peer.reset()
        now[0] += DEFAULT_COOL_DOWN
        for _tick in range(5):
            for delivery_id in sorted(pending):
                try:
                    channel.send(OutgoingMessage(delivery_id, "webhook", url))
                    pending.discard(delivery_id)
                except TransientError:
                    pass
            now[0] += 0.5
    assert pending == set()
    assert sorted(int(a.delivery) for a in webhook_peer.accepted) == list(range(1, 11))
