"""The "send me a test" button: one notification to the user, on one channel, now.

Why not ``notify.trigger("notify.test", ...)``: a triggered event is fanned
out and sent later, by a worker, on every channel its rule names, while this
button must reach exactly one channel and show the outcome on the page that
asked. So ``send_test`` runs the same stages inline, for one user and one
channel:

1. the event is stored (type ``notify.test``, the user as actor and explicit
   recipient), already marked processed so no worker fans it out again;
2. the fan-out sequence (``notify.fanout.sequence.plan_event``, the one
   fan-out and the admin preview run) plans the system rule for this user on
   this channel — the user's address, verification, suppression and pause
   apply as to any notification — and ``write_fanout_chunk`` writes the rows;
3. the one delivery is claimed by id and sent by ``notify.delivery.send.deliver``,
   the function the workers run, which renders the ``notify_test`` message and
   records the attempt. If the provider answers "try later", the workers retry
   it like any other delivery.

The rows hang off a hidden system category (``notify-test``, never shown on
the grid) and an inactive system rule (it only names the message; being
inactive, it never matches an event).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from notify import conf
from notify.delivery.send import deliver
from notify.fanout import sequence
from notify.models import Category, Delivery, Event
from notify.models.status import Status
from notify.outbox.rows import write_fanout_chunk
from notify.pages import ratelimit
from notify.pages.addresses import readable
from notify.pages.prefs import TEST_CATEGORY_KEY, channel_label
from notify.preferences.decide import (
    INACTIVE,
    NO_ADDRESS,
    OPTED_OUT,
    PAUSED,
    SUPPRESSED,
    UNVERIFIED,
)
from notify.preferences.quiet_hours import QUIET_HOURS
from rules.index import RULE_FIELDS, RuleMatch, compile_rule
from rules.models import Rule

TEST_EVENT = "notify.test"
TEST_MESSAGE = "notify_test"
TEST_RULE_NAME = "notify: test sends from the settings page (system)"
TESTS_PER_HOUR = 5
# A pending row waits this long before a worker may take it, so the request
# that wrote it claims it first; if that request dies, a worker sends it then.
HOLD = timedelta(seconds=60)

SKIP_TEXT = {
    NO_ADDRESS: "no address for this channel: add one under Where we reach you",
    UNVERIFIED: "your address for this channel is not verified yet",
    SUPPRESSED: "your address is blocked after a bounce, complaint or STOP",
    PAUSED: "your notifications are paused",
    OPTED_OUT: "this channel is turned off",
    INACTIVE: "your account is inactive",
    "user_deleted": "your account no longer exists",
}


@dataclass(frozen=True, slots=True)
class TestResult:
    channel: str
    status: str  # a notify.models.status.Status
    text: str  # for people: "sent to ann@example.com", "skipped: ..."
    at: datetime
    ok: bool

    @property
    def tone(self) -> str:
        """For the page: ``ok`` (it went out), ``warn`` (skipped, waiting) or ``bad``."""
        if self.ok:
            return "ok"
        return "bad" if self.status in (Status.FAILED, Status.DEAD, Status.BOUNCED) else "warn"

    @classmethod
    def from_delivery(cls, delivery: Delivery, address: str = "", zone: str = "UTC") -> TestResult:
        status = delivery.status
        if status in (Status.SENT, Status.DELIVERED):
            text = f"sent to {readable(address)}" if address else "sent to your inbox"
        elif status == Status.SKIPPED:
            reason = delivery.skip_reason
            text = f"skipped: {SKIP_TEXT.get(reason, reason or 'preferences said no')}"
        elif status in (Status.FAILED, Status.DEAD, Status.BOUNCED):
            text = f"failed: {delivery.error_message or delivery.error_code or 'no reason given'}"
        elif status == Status.PENDING and delivery.hold_reason == QUIET_HOURS:
            until = delivery.next_attempt_at.astimezone(ZoneInfo(zone))
            text = f"waiting for your quiet hours to end; it goes out at {until:%H:%M}"
        elif status == Status.PENDING:
            detail = f" ({delivery.error_message})" if delivery.error_message else ""
            text = f"not sent yet{detail}; it will be retried"
        else:
            text = delivery.get_status_display()
        return cls(
            channel=delivery.channel,
            status=status,
            text=text,
            at=delivery.updated_at,
            ok=status in (Status.SENT, Status.DELIVERED),
        )


class TestRefused(Exception):
    """A test send was not attempted (unknown channel: 400, rate limit: 429)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def ensure_test_route() -> tuple[Category, Rule]:
    category, _ = Category.objects.get_or_create(
        key=TEST_CATEGORY_KEY,
        defaults={
            "name": "Test notifications",
            "description": "Sent when a user asks for a test on the settings page (system).",
        },
    )
    rule, _ = Rule.objects.get_or_create(
        name=TEST_RULE_NAME,
        defaults={
            "description": "Names the message of test sends; inactive on purpose, "
            "see notify/pages/sendtest.py.",
            "event_type": TEST_EVENT,
            "category": category,
            "recipients": ["explicit"],
            "message": TEST_MESSAGE,
            "is_active": False,
        },
    )
    return category, rule


def check_allowed(user: Any, alias: Any) -> None:
    if not isinstance(alias, str) or alias not in conf.get("CHANNELS"):
        raise TestRefused("choose one of your channels to test")
    over = ratelimit.hit(f"test-send:{user.pk}", limit=TESTS_PER_HOUR, window=3600)
    if over:
        raise TestRefused(
            f"you can send {TESTS_PER_HOUR} tests an hour; "
            f"try again in {ratelimit.wait_text(over)}",
            status=429,
        )


def send_test(user: Any, alias: str, *, now: datetime | None = None) -> TestResult:
    """Send a test on ``alias`` to ``user`` and return what became of it.

    Raises ``TestRefused`` for an unknown channel or past the hourly limit.
    """
    check_allowed(user, alias)
    now = now or timezone.now()
    category, rule = ensure_test_route()
    # Inactive on purpose, so the index never offers it: it is planned by hand.
    match = RuleMatch(compile_rule({name: getattr(rule, name) for name in RULE_FIELDS}), True)
    # 1. the event, on the record
    with transaction.atomic():
        event = Event.objects.create(
            type=TEST_EVENT,
            payload={"channel": alias, "channel_label": channel_label(alias)},
            actor_id=user.pk,
            recipients=[user.pk],
            source=Event.Source.PYTHON,
            status=Event.State.PROCESSED,
            processed_at=now,
        )
        # 2. the fan-out sequence for one user and one channel
        [plan] = sequence.plan_event(
            event, now=now, matches=[match], record=True, recipients=[user.pk], channels=[alias]
        )
        chunk = plan.plan([user.pk])
        planned = [
            p._replace(
                deliveries=tuple(
                    d._replace(due_at=now + HOLD)
                    if d.status == Status.PENDING and d.due_at is None
                    else d  # skipped, or held for quiet hours: as for any notification
                    for d in p.deliveries
                )
            )
            for p in chunk.planned
        ]
        write_fanout_chunk(event.pk, rule.pk, category.pk, planned, now)
        prefs = chunk.prefs
    delivery = Delivery.objects.get(notification__event=event, channel=alias)
    # 3. claim this one delivery and send it as a worker would
    if delivery.status == Status.PENDING and not delivery.hold_reason:
        token = timezone.now() + timedelta(seconds=conf.get("CLAIM_TTL"))
        claimed = Delivery.objects.filter(pk=delivery.pk, status=Status.PENDING).update(
            status=Status.SENDING, claimed_until=token, attempts=F("attempts") + 1
        )
        if claimed:
            deliver([delivery.pk], token)
        delivery.refresh_from_db()
    zone = prefs[user.pk].timezone if user.pk in prefs else "UTC"
    return TestResult.from_delivery(delivery, _sent_to(delivery), zone)


def _sent_to(delivery: Delivery) -> str:
    attempt = delivery.attempt_log.order_by("-number").first()
    return (attempt.sent or {}).get("to", "") if attempt is not None else ""


def last_results(user: Any, zone: str = "UTC") -> dict[str, TestResult]:
    """The newest test result per channel, for the page."""
    results: dict[str, TestResult] = {}
    recent = (
        Delivery.objects.filter(
            notification__user_id=user.pk, notification__category__key=TEST_CATEGORY_KEY
        )
        .prefetch_related("attempt_log")
        .order_by("-created_at", "-pk")[:30]
    )
    for delivery in recent:
        if delivery.channel not in results:
            attempts = sorted(delivery.attempt_log.all(), key=lambda a: a.number)
            address = (attempts[-1].sent or {}).get("to", "") if attempts else ""
            results[delivery.channel] = TestResult.from_delivery(delivery, address, zone)
    return results


def tests_left(user: Any) -> int:
    return ratelimit.remaining(f"test-send:{user.pk}", limit=TESTS_PER_HOUR, window=3600)
