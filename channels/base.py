"""The channel contract and the error family.

A channel is opened once per batch, sends any number of rendered messages and
is closed, like Django's email backends (``open``/``close``/``send``). ``send``
returns a :class:`SendResult` or raises one of the :class:`ChannelError`
classes; the worker decides what to do from the class alone, never from the
message text. A delivery's status is the outbox's own business
(``notify.models.status``), never a channel's.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from django.core.exceptions import ImproperlyConfigured


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A message rendered for one recipient on one channel: all a channel needs."""

    delivery_id: int
    channel: str
    to: str  # the address: email, E.164 number, member id, URL; "" for in-app
    subject: str = ""
    text: str = ""
    html: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    # Channel-specific extras (in-app: user id, notification id, url).
    extra: dict[str, Any] = field(default_factory=dict)
    # What receivers de-duplicate by (``X-Notify-Delivery``) when it is not the
    # delivery id: a digest is ``digest-<id>``.
    reference: str = ""

    @property
    def delivery_ref(self) -> str:
        """The ``X-Notify-Delivery`` value: the same on every retry of this send,
        different for every other send."""
        return self.reference or str(self.delivery_id)

    def as_record(self) -> dict[str, Any]:
        """What was sent, as stored with the attempt."""
        return {
            "to": self.to,
            "subject": self.subject,
            "text": self.text,
            "html": self.html,
            "headers": dict(self.headers),
        }


@dataclass(frozen=True, slots=True)
class SendResult:
    """The provider accepted the message."""

    provider: str
    message_id: str = ""
    response: dict[str, Any] = field(default_factory=dict)


class ChannelError(Exception):
    """A send failed. Subclasses say whether trying again can help."""

    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        code: str = "",
        provider: str = "",
        response: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = str(code)
        self.provider = provider
        self.response = response

    def __str__(self) -> str:
        prefix = f"[{self.code}] " if self.code else ""
        return f"{prefix}{self.message}"


class TransientError(ChannelError):
    """Try again later (time-out, 4xx-temporary, 5xx, rate limit)."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class Deferred(TransientError):
    """Not sent, and no request was made: our own pacing or rate limit, or an
    open circuit breaker. Try again after ``retry_after``; the outbox does not
    count it as an attempt (nothing was tried)."""


class ProviderRateLimited(TransientError):
    """The provider answered "too many requests" (HTTP 429, Slack's
    ``ratelimited``): it is alive, we are too fast. Try again after
    ``retry_after``; the outbox does not count it as an attempt, up to
    ``NOTIFY["MAX_FREE_RATE_LIMITS"]`` in a row, and a circuit breaker does not
    count it as a failure."""


class PermanentError(ChannelError):
    """Trying again cannot help; the reason is recorded and the delivery fails."""


class InvalidRecipient(PermanentError):
    """The address is malformed or the provider says it does not exist.

    ``gone=True``: the provider says the address existed and is gone for good (a
    push token unregistered, an app uninstalled); the pipeline then forgets the
    contact point instead of trying it again."""

    def __init__(self, message: str, *, gone: bool = False, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.gone = gone


class Suppressed(PermanentError):
    """The provider refuses the address for good (unsubscribed, complained,
    STOP, a mailbox that does not exist): the dispatcher puts the address on the
    suppression list. ``reason`` is the suppression reason to record
    (``"hard_bounce"``, ``"invalid"``, ``"sms_stop"``...; empty: decided by the
    dispatcher)."""

    def __init__(self, message: str, *, reason: str = "", **kwargs: Any):
        super().__init__(message, **kwargs)
        self.reason = reason


class RefusedRecipient(InvalidRecipient, Suppressed):
    """The provider says the address cannot take mail, for good (SMTP 5.1.1 "no
    such mailbox", an ESP's inactive or invalid recipient): invalid for this
    message, and suppressed so that no later message tries it again."""


class ChannelConfigurationError(ImproperlyConfigured):
    """The channel is misconfigured. Deliberately outside ``ChannelError`` so no
    retry loop can swallow it: it must reach an operator."""


class Channel:
    """Base class of every channel.

    ``address_kind`` names the contact point a recipient needs ("email", "phone",
    ...); ``None`` means the channel needs no address (in-app). The three
    attributes below are set on the class, or per instance where the options
    decide them (the sandbox, failover).
    """

    address_kind: str | None = None
    # Which template parts the channel sends: "email", "sms", "chat" or "inapp".
    message_format: str = "chat"
    provider_name: str = ""
    # The OPTIONS keys this channel reads. A system check (notify.E008) refuses
    # any other, so a misspelt option fails the deploy instead of being ignored.
    # A subclass that reads more extends its parent's set; None: not declared.
    accepted_options: ClassVar[frozenset[str] | None] = None
    # Whether ``send`` queues its message between ``open`` and ``flush`` (the
    # in-app channel writes a batch of items in one statement). A sender that
    # opens such a channel calls ``flush`` before recording the outcomes.
    queues_sends: ClassVar[bool] = False

    def __init__(self, alias: str, **options: Any) -> None:
        self.alias = alias
        self.options = options

    @classmethod
    def unknown_options(cls, options: Mapping[str, Any]) -> list[str]:
        """The keys of ``options`` this channel does not read (none when undeclared)."""
        if cls.accepted_options is None:
            return []
        return sorted(set(options) - cls.accepted_options)

    def check_configuration(self) -> None:
        """Raise ``ChannelConfigurationError`` saying what to set when the options
        cannot work. Run by a system check at start-up, so a missing token fails
        the deploy instead of the first send."""

    def default_concurrency(self) -> int:
        """Sends of this channel a batch may have in flight at once, each on an
        instance of its own (``notify.delivery.inflight``), unless the channel's
        entry in ``NOTIFY["CHANNELS"]`` sets ``CONCURRENCY``. 1: one at a time."""
        return 1

    def open(self) -> None:
        """Acquire what a batch of sends can share (a connection, a session)."""

    def close(self) -> None:
        """Release what ``open`` acquired. Must not raise."""

    def send(self, message: OutgoingMessage) -> SendResult:
        raise NotImplementedError

    def flush(self) -> None:
        """Make the sends ``send`` queued (``queues_sends``); raise a
        ``ChannelError`` if they could not be made: then none of them was."""

    def __enter__(self) -> Channel:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def describe_unknown_options(where: str, cls: type[Channel], options: Mapping[str, Any]) -> str:
    """Say which options of ``where`` (e.g. ``NOTIFY['CHANNELS']['sms']['OPTIONS']``)
    ``cls`` does not read, the closest valid name of each and the valid ones;
    ``""`` when all are valid."""
    unknown = cls.unknown_options(options)
    if not unknown:
        return ""
    valid = sorted(cls.accepted_options or ())
    named = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), valid, n=1)
        named.append(f"'{key}' (did you mean '{close[0]}'?)" if close else f"'{key}'")
    return (
        f"{where} has option(s) that {cls.__module__}.{cls.__qualname__} does not read: "
        f"{', '.join(named)}. Valid options: {', '.join(valid) or '(none)'}."
    )
