"""Testing your application against notify, the way Django's ``mail.outbox`` works.

``capture_notifications()`` (the pytest fixture ``notify_outbox`` in
``notify.pytest_plugin`` wraps it) swaps every configured channel for a
capturing one, runs the pipeline synchronously, and hands you a
:class:`NotifyOutbox` of what would have been sent::

    def test_shipping_notifies_the_customer(notify_outbox, customer):
        ship(order)                                     # your code calls notify.trigger
        notify_outbox.assert_notified(customer, "order.shipped", channels=["email"])
        [email] = notify_outbox.for_channel("email")
        assert "A-1001" in email.subject

What runs is the real thing: the event is stored, the rules match, the
recipients' preferences and addresses decide, the templates render; only the
last step, handing the message to a provider, is replaced by a record. The
in-app channel also writes the inbox as usual (it is local).

When does it run? Events are fanned out and sent when their transaction
commits (``EAGER``), like in production but in the same thread. A test that
runs in one transaction that never commits (pytest-django's ``db``) cannot
see a commit, so every read of the outbox first runs whatever is due
(``flush()``): assert after your code ran and it has been processed.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.test import override_settings
from django.utils.module_loading import import_string

from channels.base import Channel, OutgoingMessage, SendResult
from notify import conf
from notify.models import Delivery
from notify.registry import describe
from notify.runtime.worker import run_until_idle

# Channels that are local, so capturing them also does the real thing.
PASS_THROUGH = ("channels.inapp.InAppChannel",)

_outboxes: list[NotifyOutbox] = []
_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class CapturedMessage:
    """One message a channel would have handed to its provider."""

    channel: str
    to: str
    subject: str
    text: str
    html: str
    headers: dict[str, str]
    delivery_id: int
    notification_id: int | None
    user_id: int | None
    event_id: int | None
    event_type: str
    category: str
    payload: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.event_type} to user {self.user_id} on {self.channel}: {self.subject or self.text[:60]!r}"


class CapturingChannel(Channel):
    """Stands in for a configured channel: same address kind and message format
    (so preferences, addresses and templates decide as they would), records
    instead of sending. ``WRAPPED``: a channel configuration that is sent
    through as well (the in-app inbox, which is local)."""

    provider_name = "capture"
    accepted_options = frozenset({"ADDRESS_KIND", "FORMAT", "WRAPPED"})

    def __init__(self, alias: str, **options: Any) -> None:
        super().__init__(alias, **options)
        self.address_kind = options.get("ADDRESS_KIND")
        self.message_format = options.get("FORMAT", "chat")
        wrapped = options.get("WRAPPED")
        self.inner: Channel | None = None
        if wrapped:
            self.inner = import_string(wrapped["BACKEND"])(alias, **(wrapped.get("OPTIONS") or {}))

    def send(self, message: OutgoingMessage) -> SendResult:
        captured = capture(message)
        with _lock:
            for outbox in _outboxes:
                outbox.messages.append(captured)
        if self.inner is not None:
            self.inner.send(message)
        return SendResult(provider=self.provider_name, message_id=f"capture-{message.delivery_id}")


def capture(message: OutgoingMessage) -> CapturedMessage:
    delivery = (
        Delivery.objects.select_related("notification__event", "notification__category")
        .filter(pk=message.delivery_id)
        .first()
    )
    notification = delivery.notification if delivery else None
    event = notification.event if notification else None
    return CapturedMessage(
        channel=message.channel,
        to=message.to,
        subject=message.subject,
        text=message.text,
        html=message.html,
        headers=dict(message.headers),
        delivery_id=message.delivery_id,
        notification_id=notification.pk if notification else None,
        user_id=notification.user_id if notification else None,
        event_id=event.pk if event else None,
        event_type=event.type if event else "",
        category=notification.category.key if notification else "",
        payload=dict(event.payload) if event and isinstance(event.payload, dict) else {},
    )


def capturing_channels(
    channels: dict[str, Any], pass_through: Sequence[str] = PASS_THROUGH
) -> dict[str, Any]:
    """``NOTIFY["CHANNELS"]`` with every backend replaced by ``CapturingChannel``;
    those in ``pass_through`` (dotted paths) also do their real work."""
    captured = {}
    for alias, config in channels.items():
        address_kind, message_format = describe(alias)
        wrapped = config if config.get("BACKEND") in pass_through else None
        captured[alias] = {
            "BACKEND": "notify.testing.CapturingChannel",
            "OPTIONS": {"ADDRESS_KIND": address_kind, "FORMAT": message_format, "WRAPPED": wrapped},
        }
    return captured


def user_id(user: Any) -> int:
    """A user's id, from a user or from an id."""
    pk: int = getattr(user, "pk", user)
    return pk


def describe_user(user: Any) -> str:
    name = user.get_username() if hasattr(user, "get_username") else None
    return f"{name} (user {user_id(user)})" if name else f"user {user_id(user)}"


class NotifyOutbox:
    """What would have been sent while capturing, oldest first."""

    def __init__(self) -> None:
        self.messages: list[CapturedMessage] = []

    # -- reading ------------------------------------------------------------------------

    def flush(self) -> int:
        """Fan out and send whatever is due now; return how much work was done."""
        return run_until_idle()

    def all(self) -> list[CapturedMessage]:
        self.flush()
        return list(self.messages)

    def __iter__(self) -> Iterator[CapturedMessage]:
        return iter(self.all())

    def __len__(self) -> int:
        return len(self.all())

    def __getitem__(self, index: int) -> CapturedMessage:
        return self.all()[index]

    def for_channel(self, channel: str) -> list[CapturedMessage]:
        return [m for m in self.all() if m.channel == channel]

    def for_user(self, user: Any) -> list[CapturedMessage]:
        return [m for m in self.all() if m.user_id == user_id(user)]

    def of_type(self, event_type: str) -> list[CapturedMessage]:
        return [m for m in self.all() if m.event_type == event_type]

    def clear(self) -> None:
        """Forget what was captured so far (what is due is sent first)."""
        self.flush()
        self.messages.clear()

    # -- asserting ----------------------------------------------------------------------

    def assert_notified(
        self,
        user: Any,
        event_type: str,
        channels: Iterable[str] | None = None,
        *,
        count: int | None = None,
    ) -> list[CapturedMessage]:
        """Assert ``user`` was sent ``event_type`` on each of ``channels`` (any
        channel if none are named), ``count`` times on each if given; return the
        messages. The failure says what happened to that user instead,
        skip reasons included."""
        found = [m for m in self.all() if m.user_id == user_id(user) and m.event_type == event_type]
        wanted = list(channels) if channels is not None else None
        problems = []
        if wanted is None:
            if not found or (count is not None and len(found) != count):
                problems.append(f"expected {count or 'some'} message(s), got {len(found)}")
        else:
            for channel in wanted:
                on_channel = [m for m in found if m.channel == channel]
                if not on_channel:
                    problems.append(f"nothing on {channel}")
                elif count is not None and len(on_channel) != count:
                    problems.append(f"{len(on_channel)} message(s) on {channel}, not {count}")
        if problems:
            raise AssertionError(
                f"{describe_user(user)} was not notified of {event_type!r} as expected: "
                f"{'; '.join(problems)}.\n{self.explain(user, event_type)}"
            )
        return found

    def assert_not_notified(
        self, user: Any, event_type: str | None = None, channels: Iterable[str] | None = None
    ) -> None:
        """Assert nothing was sent to ``user`` (of ``event_type``, on ``channels``)."""
        wanted = set(channels) if channels is not None else None
        found = [
            m
            for m in self.all()
            if m.user_id == user_id(user)
            and (event_type is None or m.event_type == event_type)
            and (wanted is None or m.channel in wanted)
        ]
        if found:
            raise AssertionError(
                f"{describe_user(user)} was notified, and should not have been:\n"
                + "\n".join(f"  {m}" for m in found)
            )

    def assert_nothing_sent(self) -> None:
        """Assert no channel was handed anything."""
        found = self.all()
        if found:
            raise AssertionError(
                f"{len(found)} message(s) were sent:\n" + "\n".join(f"  {m}" for m in found)
            )

    def explain(self, user: Any, event_type: str) -> str:
        """Every delivery of ``event_type`` for ``user`` and what became of it."""
        rows = (
            Delivery.objects.filter(
                notification__user_id=user_id(user), notification__event__type=event_type
            )
            .order_by("pk")
            .values_list("channel", "status", "skip_reason", "hold_reason", "error_message")
        )
        lines = [
            f"  {channel}: {status}"
            + (f" ({skip})" if skip else "")
            + (f", held: {hold}" if hold else "")
            + (f": {error[:120]}" if error else "")
            for channel, status, skip, hold, error in rows
        ]
        if not lines:
            return f"No delivery of {event_type!r} was made for them (no rule matched, or not a recipient)."
        return "Their deliveries of that event:\n" + "\n".join(lines)


@contextlib.contextmanager
def capture_notifications(pass_through: Sequence[str] = PASS_THROUGH) -> Iterator[NotifyOutbox]:
    """Capture what every channel would send, processing events on commit."""
    outbox = NotifyOutbox()
    channels = capturing_channels(conf.get("CHANNELS"), pass_through)

    notify = {**getattr(settings, "NOTIFY", {}), "CHANNELS": channels, "EAGER": True}
    with _lock:
        _outboxes.append(outbox)
    try:
        with override_settings(NOTIFY=notify):
            yield outbox
    finally:
        with _lock:
            _outboxes.remove(outbox)
