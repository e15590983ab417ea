"""The send step both senders share: one rendered message through one channel,
the answer mapped to an ``Outcome``.

Single deliveries (``notify.delivery.send``) and digests
(``notify.scheduling.digests.send``) decide and render on their own, then hand
the message here, so that a send, whatever it carries, is classified and
recorded the same way: the same provider, error code and message, retry time,
stored message and timings on its ``DeliveryAttempt`` (written by
``notify.outbox.rows.Outcome.attempt_row``). The retry decision reads the
error's class (``channels.base``), never its message.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from django.utils import timezone

from channels.base import (
    Channel,
    ChannelConfigurationError,
    ChannelError,
    Deferred,
    InvalidRecipient,
    OutgoingMessage,
    ProviderRateLimited,
    SendResult,
    Suppressed,
    TransientError,
)
from notify.delivery.retry import RetryPolicy
from notify.models import DeliveryAttempt
from notify.models.status import Status
from notify.outbox.rows import Outcome
from notify.preferences.devices import forget_gone
from notify.preferences.suppressions import suppress

log = logging.getLogger("notify.delivery.send")
Attempt = DeliveryAttempt.Outcome


@dataclass(frozen=True, slots=True)
class Target:
    """What one send is on the books as: a delivery, or a digest (``id`` is then
    the digest's, and its items take the outcome), and which attempt of it."""

    id: int
    attempt: int  # this claim's number, 1 for the first
    address_kind: str | None = None  # to suppress an address refused for good
    label: str = "delivery"  # for the log: "delivery" or "digest"


def done(
    target: Target, started: datetime, status: str, attempt_outcome: str, **fields: Any
) -> Outcome:
    """The outcome of ``target``'s attempt, finished now."""
    return Outcome(
        delivery_id=target.id,
        status=status,
        attempt=target.attempt,
        started_at=started,
        finished_at=timezone.now(),
        attempt_outcome=attempt_outcome,
        **fields,
    )


def template_failure(target: Target, started: datetime, error: Exception) -> Outcome:
    """Ops-written templates can be broken: that fails this send, never the worker."""
    return done(
        target,
        started,
        Status.FAILED,
        Attempt.PERMANENT,
        error_code="template",
        error_message=str(error),
    )


def config_failure(target: Target, started: datetime, reason: str) -> Outcome:
    """The channel cannot be built (removed from ``NOTIFY["CHANNELS"]``...)."""
    return done(
        target,
        started,
        Status.FAILED,
        Attempt.PERMANENT,
        error_code="config",
        error_message=reason,
    )


def send_one(
    channel: Channel,
    target: Target,
    message: OutgoingMessage,
    policy: RetryPolicy,
    started: datetime | None = None,
) -> Outcome:
    """Send ``message`` through an open ``channel``; return what happened.

    A ``ChannelError`` becomes a retry, a dead end or a failure by its class
    (``error_outcome``); any other exception is a bug or an unexpected library
    error, retried and logged; a configuration error is raised, never recorded,
    because nothing sent through that channel can succeed."""
    started = started or timezone.now()
    return outcome_of(target, message, attempt(channel, message), policy, started)


def attempt(channel: Channel, message: OutgoingMessage) -> SendResult | Exception:
    """``channel.send(message)``: its result, or the exception it raised returned
    (a configuration error is raised). Nothing but the send: a batch runs it in
    a thread of its send pool (``notify.delivery.inflight``) and maps the answer
    (``outcome_of``) in its own thread, which alone writes to the database."""
    try:
        return channel.send(message)
    except ChannelConfigurationError:
        raise
    except Exception as exc:
        return exc


def outcome_of(
    target: Target,
    message: OutgoingMessage,
    answer: SendResult | Exception,
    policy: RetryPolicy,
    started: datetime,
) -> Outcome:
    """The outcome of ``attempt``'s answer (see ``send_one``)."""
    if isinstance(answer, ChannelError):
        suppress_refused(answer, target.address_kind, message.to)
        return error_outcome(target, started, answer, policy, message)
    if isinstance(answer, Exception):
        log.error("unexpected error sending %s %s", target.label, target.id, exc_info=answer)
        error = TransientError(f"{type(answer).__name__}: {answer}")
        return error_outcome(target, started, error, policy, message)
    return done(
        target,
        started,
        Status.SENT,
        Attempt.SENT,
        provider=answer.provider,
        message_id=answer.message_id,
        sent=message.as_record(),
        response=answer.response,
    )


class _Recorded(NamedTuple):
    """A message already sent to a queuing channel, as its outcome recorded it."""

    record: dict

    def as_record(self) -> dict:
        return self.record


def flush_queued(
    channel: Channel, outcomes: list[Outcome], first: int, policy: RetryPolicy
) -> None:
    """Make the sends a queuing channel (``queues_sends``) holds. If it cannot,
    none of them was made: each "sent" outcome from ``first`` on becomes the
    error's outcome (retried by the policy, like any failed send)."""
    try:
        channel.flush()
    except ChannelConfigurationError:
        raise
    except ChannelError as exc:
        log.warning("queued sends through %s failed: %s", channel.alias, exc)
        for i in range(first, len(outcomes)):
            o = outcomes[i]
            if o.status == Status.SENT:
                target = Target(o.delivery_id, o.attempt)
                outcomes[i] = error_outcome(
                    target, o.started_at, exc, policy, _Recorded(o.sent or {})
                )


def error_outcome(
    target: Target,
    started: datetime,
    exc: ChannelError,
    policy: RetryPolicy,
    message: OutgoingMessage | _Recorded,
) -> Outcome:
    """The one mapping from a channel error to an outcome: permanent errors
    fail, transient ones are retried with backoff until the policy's last
    attempt, which ends dead.

    Two transient errors do not use an attempt (``Outcome.refund_attempt``): a
    send that made no request (``Deferred``: our own pacing or rate limit, an
    open circuit breaker) comes back after its wait with no attempt on record;
    a provider's 429 (``ProviderRateLimited``) is on record and comes back after
    its ``Retry-After``, up to ``MAX_FREE_RATE_LIMITS`` in a row, after which
    each 429 counts like any transient error. Digests are counted as before."""
    free = free_retry(target, exc, policy)
    if free is not None:
        return free
    fields = {
        "provider": exc.provider,
        "error_code": exc.code,
        "error_message": exc.message,
        "sent": message.as_record(),
        "response": jsonable(exc.response),
    }
    if not exc.retryable:
        return done(target, started, Status.FAILED, Attempt.PERMANENT, **fields)
    if policy.exhausted(target.attempt):
        return done(target, started, Status.DEAD, Attempt.TRANSIENT, **fields)
    delay = policy.delay(target.attempt, getattr(exc, "retry_after", None))
    return done(
        target,
        started,
        Status.PENDING,
        Attempt.TRANSIENT,
        next_attempt_at=timezone.now() + timedelta(seconds=delay),
        **fields,
    )


def free_retry(target: Target, exc: ChannelError, policy: RetryPolicy) -> Outcome | None:
    """The outcome of a send that does not use an attempt, or ``None``."""
    if target.label != "delivery" or not isinstance(exc, Deferred | ProviderRateLimited):
        return None
    if isinstance(exc, ProviderRateLimited):
        # The 429s in a row so far are this attempt number's earlier rows: a
        # refunded attempt keeps its number, any other outcome moves it on.
        earlier = DeliveryAttempt.objects.filter(delivery_id=target.id, number=target.attempt)
        if earlier.count() >= policy.max_free_rate_limits:
            return None
    started = timezone.now()
    return Outcome(
        delivery_id=target.id,
        status=Status.PENDING,
        attempt=target.attempt,
        started_at=started,
        finished_at=started,
        # No request, no attempt on record; a 429 is on record.
        attempt_outcome=Attempt.TRANSIENT if isinstance(exc, ProviderRateLimited) else "",
        refund_attempt=True,
        provider=exc.provider,
        error_code=exc.code,
        error_message=exc.message,
        response=jsonable(exc.response),
        next_attempt_at=started + timedelta(seconds=policy.free_delay(exc.retry_after)),
    )


def suppress_refused(exc: ChannelError, address_kind: str | None, address: str) -> None:
    """Suppress an address the provider refuses for good (SMS STOP, ...):
    nothing may be sent to it again until it is lifted. A device token the
    provider says is gone (uninstalled, unsubscribed) is forgotten instead: the
    device registers a new one if it comes back."""
    if isinstance(exc, InvalidRecipient) and exc.gone:
        forget_gone(address_kind, address)
    elif isinstance(exc, Suppressed) and address_kind and address:
        suppress(
            kind=address_kind,
            address=address,
            reason=exc.reason or ("sms_stop" if exc.code == "21610" else "invalid"),
            source=exc.provider,
            detail=str(exc),
        )


def jsonable(value: Any) -> dict:
    """A provider's answer as something a JSON field can hold."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    return {"detail": str(value)[:2000]}
