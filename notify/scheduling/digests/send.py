"""Digests, the database side: build the due ones, send them, record what happened.

``build_and_send_due_digests(now)`` is the one entry point: the scheduler's
job ``send_due_digests`` calls it every tick; tests and the bench call it too.
It holds no state: every call asks the tables what is due, so a scheduler that
was down catches up when it returns.

1. **Build** (``notify.scheduling.digests.build``). Items are deliveries with status
   ``digest`` and no digest yet (``skip_reason`` says "daily" or "weekly").
   For each user, channel and frequency, the latest period whose digest hour
   has been reached gets its unique ``Digest`` row and claims the items that
   waited since before that hour, in one transaction; an item goes into one
   digest, a period is built once.
2. **Send.** Due rows (pending, or sending with an expired claim) are claimed
   like deliveries; ``Digest.due_at`` is the time of the next step: the digest
   hour, then while sending the claim's expiry, after a transient error the
   retry time. Each item is decided again (opted out since, suppressed,
   cancel condition) and rendered to a title; the digest template renders
   them grouped by category (``notify.scheduling.digests.message``); the message goes
   through the channel like any other. During the user's quiet hours the row
   waits until they end.
3. **Record.** The outcome goes on the row (status, provider, message id,
   attempts, error) and on its items (sent, failed or dead, each with an
   attempt on the record pointing at the digest); a transient error leaves the
   items claimed and the row pending until the retry policy's next time.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from jinja2.exceptions import TemplateError

from channels.base import Channel, ChannelConfigurationError, ChannelError, TransientError
from notify import conf
from notify.delivery.cancel import CancelCheck
from notify.delivery.retry import RetryPolicy
from notify.delivery.send import suppress_refused
from notify.fanout.pipeline import condition_context
from notify.models import Delivery, DeliveryAttempt, Digest
from notify.models.status import Status
from notify.outbox.rows import _skip_locked
from notify.preferences.decide import SKIP, UserPrefs, decide
from notify.preferences.directory import category_info, load_preferences
from notify.preferences.quiet_hours import applies_to, quiet_until
from notify.registry import build_channel, describe
from notify.scheduling.digests.build import build_due_digests
from notify.scheduling.digests.message import build_digest_message

log = logging.getLogger("notify.scheduling.digests.periods")
Attempt = DeliveryAttempt.Outcome

HELD = "held"  # an outcome only: the row waits for the end of quiet hours


@dataclass(slots=True)
class DigestStats:
    built: int = 0  # rows created (with their items claimed)
    items: int = 0  # items claimed into them
    sent: int = 0
    skipped: int = 0
    held: int = 0
    retried: int = 0
    failed: int = 0  # failed or dead


def build_and_send_due_digests(now: datetime | None = None) -> DigestStats:
    """Build every due digest and send every digest due; safe to call anywhere, any time."""
    now = now or timezone.now()
    stats = DigestStats()
    stats.built, stats.items = build_due_digests(now)
    send_due_digests(now, stats)
    return stats


# -- 2. send -------------------------------------------------------------------------------


def claim_due_digests(
    now: datetime, limit: int, ttl: float
) -> tuple[dict[int, datetime], datetime]:
    """Claim up to ``limit`` due rows; return {id: due_at before the claim} and the token."""
    token = now + timedelta(seconds=ttl)
    due = Q(status=Status.PENDING, due_at__lte=now) | Q(status=Status.SENDING, due_at__lt=now)
    if not Digest.objects.filter(due).exists():  # most ticks: no write transaction at all
        return {}, token
    with transaction.atomic():
        rows = dict(
            _skip_locked(Digest.objects.filter(due).order_by("due_at")).values_list("pk", "due_at")[
                :limit
            ]
        )
        if rows:
            Digest.objects.filter(pk__in=list(rows)).update(
                status=Status.SENDING, due_at=token, attempts=F("attempts") + 1
            )
    return rows, token


def send_due_digests(now: datetime, stats: DigestStats | None = None) -> DigestStats:
    stats = stats if stats is not None else DigestStats()
    policy = RetryPolicy.from_settings()
    while True:
        claimed, token = claim_due_digests(
            now, conf.get("WORKER_BATCH_SIZE"), conf.get("CLAIM_TTL")
        )
        if not claimed:
            return stats
        send_digests(claimed, token, policy, stats)


@dataclass(slots=True)
class DigestOutcome:
    status: str  # SENT, SKIPPED, FAILED, DEAD, PENDING (retry) or HELD
    sent_items: list[Delivery] = field(default_factory=list)
    # (item, status, skip reason, detail): dropped from the digest before sending
    dropped: list[tuple[Delivery, str, str, str]] = field(default_factory=list)
    provider: str = ""
    message_id: str = ""
    error_code: str = ""
    error_message: str = ""
    sent: dict[str, Any] | None = None
    next_at: datetime | None = None  # retry time or end of quiet hours
    started_at: datetime | None = None


def send_digests(
    claimed: dict[int, datetime], token: datetime, policy: RetryPolicy, stats: DigestStats
) -> None:
    digests = list(
        Digest.objects.filter(pk__in=list(claimed), status=Status.SENDING, due_at=token)
        .select_related("user")
        .order_by("channel", "pk")
    )
    items: dict[int, list[Delivery]] = defaultdict(list)
    for item in (
        Delivery.objects.filter(digest_id__in=[d.pk for d in digests], status=Status.DIGEST)
        .select_related(
            "notification__event__actor",
            "notification__rule",
            "notification__user",
            "notification__category",
        )
        .order_by("created_at", "pk")
    ):
        items[item.digest_id].append(item)
    kinds: dict[str, tuple[str | None, str] | None] = {}
    for alias in {d.channel for d in digests}:
        try:
            kinds[alias] = describe(alias)
        except ChannelConfigurationError:
            kinds[alias] = None
    prefs = load_preferences(
        list({d.user_id for d in digests}),
        {i.notification.category_id for batch in items.values() for i in batch},
        {k[0] for k in kinds.values() if k and k[0]},
    )
    cancels = CancelCheck()
    by_channel: dict[str, list[Digest]] = defaultdict(list)
    for digest in digests:
        by_channel[digest.channel].append(digest)
    done: list[tuple[Digest, DigestOutcome]] = []
    try:
        for alias, batch in by_channel.items():
            if kinds[alias] is None:
                reason = f"channel '{alias}' is not configured"
                done += [
                    (d, DigestOutcome(Status.FAILED, error_code="config", error_message=reason))
                    for d in batch
                ]
                continue
            address_kind, message_format = kinds[alias]
            channel = build_channel(alias)
            try:
                for digest in batch:
                    outcome = send_one(
                        digest,
                        items[digest.pk],
                        channel,
                        address_kind,
                        message_format,
                        prefs.get(digest.user_id),
                        policy,
                        cancels,
                    )
                    done.append((digest, outcome))
            finally:
                channel.close()
    finally:
        # Whatever was sent is recorded, the batch in one transaction (as
        # dispatch does): a crash before this point sends the batch again.
        with transaction.atomic():
            for digest, outcome in done:
                record_digest(digest, items[digest.pk], outcome, token, claimed[digest.pk], stats)


def send_one(
    digest: Digest,
    items: list[Delivery],
    channel: Channel,
    address_kind: str | None,
    message_format: str,
    prefs: UserPrefs | None,
    policy: RetryPolicy,
    cancels: CancelCheck,
) -> DigestOutcome:
    started = timezone.now()
    if prefs is None:
        return DigestOutcome(
            Status.SKIPPED,
            dropped=[(i, Status.SKIPPED, "user_deleted", "") for i in items],
            error_message="user deleted",
            started_at=started,
        )
    # Decide again, item by item: preferences and data may have changed.
    keep, dropped, address = [], [], ""
    for item in items:
        rule = item.notification.rule
        verdict = None
        if rule is not None and rule.cancel_condition.strip():
            event = item.notification.event
            verdict = cancels.verdict(rule.cancel_condition, event, condition_context(event))
        if verdict is not None:
            dropped.append((item, verdict.status, verdict.skip_reason, verdict.message))
            continue
        category = category_info(item.notification.category)
        decision = decide(category, digest.channel, address_kind, prefs, started)
        if decision.action == SKIP:
            dropped.append((item, Status.SKIPPED, decision.reason, ""))
            continue
        keep.append(item)
        address = decision.address
    if not keep:
        reason = dropped[0][2] if dropped else "no items"
        return DigestOutcome(
            Status.SKIPPED, dropped=dropped, error_message=reason, started_at=started
        )
    if applies_to(address_kind) and prefs.quiet_start is not None:
        quiet_end = quiet_until(started, prefs.quiet_start, prefs.quiet_end, prefs.timezone)
        if quiet_end is not None:
            return DigestOutcome(HELD, dropped=dropped, next_at=quiet_end, started_at=started)
    failed = DigestOutcome(Status.FAILED, keep, dropped, started_at=started)
    try:
        message = build_digest_message(digest, keep, address, message_format, prefs.locale)
    except TemplateError as exc:
        failed.error_code, failed.error_message = "template", str(exc)
        return failed
    failed.sent = message.as_record()
    try:
        result = channel.send(message)
    except ChannelConfigurationError:
        raise
    except Exception as exc:
        if not isinstance(exc, ChannelError):  # a bug or an unexpected library error: retry
            log.exception("unexpected error sending digest %s", digest.pk)
            exc = TransientError(f"{type(exc).__name__}: {exc}")
        failed.provider, failed.error_code, failed.error_message = exc.provider, exc.code, str(exc)
        suppress_refused(exc, address_kind, message.to)
        if not exc.retryable:
            return failed
        if policy.exhausted(digest.attempts):
            failed.status = Status.DEAD
            return failed
        failed.status = Status.PENDING
        delay = policy.delay(digest.attempts, getattr(exc, "retry_after", None))
        failed.next_at = timezone.now() + timedelta(seconds=delay)
        return failed
    return DigestOutcome(
        Status.SENT,
        keep,
        dropped,
        provider=result.provider,
        message_id=result.message_id,
        sent=message.as_record(),
        started_at=started,
    )


# -- 3. record -----------------------------------------------------------------------------


def record_digest(
    digest: Digest,
    items: list[Delivery],
    outcome: DigestOutcome,
    token: datetime,
    due_before: datetime,
    stats: DigestStats,
) -> bool:
    """Write the outcome on the row and its items while the claim is ours."""
    finished = timezone.now()
    started = outcome.started_at or finished
    error = f"[{outcome.error_code}] {outcome.error_message}" if outcome.error_code else ""
    fields: dict[str, Any] = {"error_message": (error or outcome.error_message)[:2000]}
    if outcome.status == HELD:
        fields.update(status=Status.PENDING, due_at=outcome.next_at, attempts=F("attempts") - 1)
    elif outcome.status == Status.PENDING:
        fields.update(status=Status.PENDING, due_at=outcome.next_at, provider=outcome.provider)
    else:
        fields.update(status=outcome.status, due_at=due_before, provider=outcome.provider)
    if outcome.status in (Status.SENT, Status.DELIVERED):
        fields.update(
            provider_message_id=outcome.message_id[:255],
            sent=outcome.sent or {},
            sent_at=finished,
            item_count=len(outcome.sent_items),
        )
    elif outcome.sent is not None:
        fields["sent"] = outcome.sent
    with transaction.atomic():
        if not Digest.objects.filter(pk=digest.pk, status=Status.SENDING, due_at=token).update(
            **fields
        ):
            return False  # the claim expired and someone else has it now
        attempts: list[DeliveryAttempt] = []
        for item, status, reason, detail in outcome.dropped:
            failed = status == Status.FAILED  # a cancel condition that cannot be evaluated
            _close_items(
                digest,
                [item],
                finished,
                status=status,
                skip_reason="" if failed else reason[:50],
                error_code=reason[:50] if failed else "",
                error_message=detail[:2000],
            )
            result = Attempt.PERMANENT if failed else Attempt.SKIPPED
            attempts.append(_attempt(item, started, finished, result, detail or reason))
        if outcome.status in (Status.SENT, Status.DELIVERED, Status.FAILED, Status.DEAD):
            sent = outcome.status in (Status.SENT, Status.DELIVERED)
            _close_items(
                digest,
                outcome.sent_items,
                finished,
                status=outcome.status,
                provider=outcome.provider,
                provider_message_id=outcome.message_id[:255],
                error_code=outcome.error_code[:50],
                error_message=outcome.error_message[:2000],
                sent_at=finished if sent else None,
            )
            result = Attempt.SENT if sent else Attempt.PERMANENT
            if outcome.status == Status.DEAD:
                result = Attempt.TRANSIENT
            attempts += [
                _attempt(item, started, finished, result, outcome.error_message, outcome.provider)
                for item in outcome.sent_items
            ]
        DeliveryAttempt.objects.bulk_create(attempts)
    key = {Status.SENT: "sent", Status.DELIVERED: "sent", Status.SKIPPED: "skipped"}
    key |= {HELD: "held", Status.PENDING: "retried"}
    name = key.get(outcome.status, "failed")
    setattr(stats, name, getattr(stats, name) + 1)
    return True


def _close_items(
    digest: Digest, items: Iterable[Delivery], finished: datetime, **fields: Any
) -> int:
    ids = [i.pk for i in items]
    if not ids:
        return 0
    return Delivery.objects.filter(pk__in=ids, digest=digest, status=Status.DIGEST).update(
        attempts=F("attempts") + 1, next_attempt_at=finished, updated_at=finished, **fields
    )


def _attempt(
    item: Delivery,
    started: datetime,
    finished: datetime,
    outcome: str,
    detail: str = "",
    provider: str = "",
) -> DeliveryAttempt:
    return DeliveryAttempt(
        delivery_id=item.pk,
        number=item.attempts + 1,
        started_at=started,
        finished_at=finished,
        provider=provider,
        outcome=outcome,
        error_message="" if outcome == Attempt.SENT else detail[:2000],
        sent={"digest": item.digest_id},
    )
