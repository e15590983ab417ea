"""Dispatch: claimed deliveries in, sends out, every attempt on the record.

The same ``deliver`` runs in the in-process worker pool, in a Celery task and
in tests. For a batch of claimed delivery ids:

1. load the deliveries with their notification, event, rule and user;
2. decide again with the current preferences and addresses; cancel a reminder
   whose cancel condition now holds; hold a message that would reach someone
   during their quiet hours until they end (not an attempt);
   a dry-run delivery is rendered and kept, not sent (``notify.delivery.dry_run``);
3. render each message in the recipient's locale (``notify.delivery.message``,
   templates compiled once);
4. send through one open channel instance per channel alias: the send step
   digests use too (``notify.delivery.outcomes.send_one``); a push goes to
   each of the user's devices (``notify.delivery.devices``);
5. write every outcome and attempt while the claim is still ours.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from django.db.models import F
from django.utils import timezone
from jinja2.exceptions import TemplateError

from channels.base import Channel, ChannelConfigurationError
from notify.delivery.cancel import CancelCheck
from notify.delivery.devices import device_addresses, send_to_devices
from notify.delivery.dry_run import dry_run_outcome, is_dry_run
from notify.delivery.message import build_message
from notify.delivery.outcomes import Target, config_failure, done, send_one, template_failure
from notify.delivery.retry import RetryPolicy
from notify.fanout.context import condition_context
from notify.logs import log_context
from notify.models import Delivery, DeliveryAttempt
from notify.models.status import Status
from notify.outbox.rows import Outcome, record_outcomes
from notify.preferences.decide import SEND, SKIP, Decision, UserPrefs, decide
from notify.preferences.directory import category_info, load_preferences
from notify.preferences.quiet_hours import QUIET_HOURS, applies_to, quiet_until
from notify.registry import build_channel, describe

log = logging.getLogger("notify.delivery.send")
Attempt = DeliveryAttempt.Outcome


@dataclass(slots=True)
class DispatchStats:
    sent: int = 0
    skipped: int = 0
    retried: int = 0
    failed: int = 0
    dead: int = 0
    recorded: int = 0
    held: int = 0  # back to pending until the recipient's quiet hours end
    by_status: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def deliver(
    delivery_ids: Iterable[int], token: datetime, now: datetime | None = None
) -> DispatchStats:
    """Send a batch of deliveries claimed with ``token``."""
    stats = DispatchStats()
    policy = RetryPolicy.from_settings()
    # 1. load
    deliveries = list(
        Delivery.objects.filter(
            pk__in=list(delivery_ids), status=Status.SENDING, claimed_until=token
        )
        .select_related(
            "notification__event__actor",
            "notification__rule",
            "notification__user",
            "notification__category",
        )
        .order_by("channel", "pk")
    )
    if not deliveries:
        return stats
    # 2. preferences, again
    kinds = {}
    for alias in {d.channel for d in deliveries}:
        try:
            kinds[alias] = describe(alias)
        except ChannelConfigurationError:
            kinds[alias] = None
    prefs = load_preferences(
        list({d.notification.user_id for d in deliveries}),
        {d.notification.category_id for d in deliveries},
        {k[0] for k in kinds.values() if k and k[0]},
    )
    outcomes: list[Outcome] = []
    holds: list[Hold] = []
    cancels = CancelCheck()
    by_channel: dict[str, list[Delivery]] = defaultdict(list)
    for delivery in deliveries:
        by_channel[delivery.channel].append(delivery)
    for alias, batch in by_channel.items():
        if kinds[alias] is None:
            reason = f"channel '{alias}' is not configured"
            for delivery in batch:
                if is_dry_run(delivery):
                    prefs_of = prefs.get(delivery.notification.user_id)
                    outcomes.append(dry_run_outcome(delivery, None, prefs_of, reason))
                else:
                    target = Target(delivery.pk, delivery.attempts)
                    outcomes.append(config_failure(target, now or timezone.now(), reason))
            continue
        address_kind, message_format = kinds[alias]
        channel = build_channel(alias)
        try:
            for delivery in batch:
                # Every log line of this send carries its ids (notify.logs).
                with log_context(
                    event_id=delivery.notification.event_id,
                    delivery_id=delivery.pk,
                    attempt=delivery.attempts,
                    channel=alias,
                ):
                    result = _deliver_one(
                        delivery, channel, address_kind, message_format, prefs, policy, cancels
                    )
                    status = "held" if isinstance(result, Hold) else result.status
                    log.debug("delivery %s attempt %s: %s", delivery.pk, delivery.attempts, status)
                (holds if isinstance(result, Hold) else outcomes).append(result)
        finally:
            channel.close()
    # 5. record
    stats.recorded = record_outcomes(outcomes, token)
    stats.held = hold_deliveries(holds, token)
    for outcome in outcomes:
        stats.by_status[outcome.status] += 1
    stats.sent = stats.by_status[Status.SENT]
    stats.skipped = stats.by_status[Status.SKIPPED]
    stats.retried = stats.by_status[Status.PENDING]
    stats.failed = stats.by_status[Status.FAILED]
    stats.dead = stats.by_status[Status.DEAD]
    return stats


def _deliver_one(
    delivery: Delivery,
    channel: Channel,
    address_kind: str | None,
    message_format: str,
    prefs: dict,
    policy: RetryPolicy,
    cancels: CancelCheck | None = None,
) -> Outcome | Hold:
    """Decide again, render and send one claimed delivery (steps 2 to 4)."""
    started = timezone.now()
    target = Target(delivery.pk, delivery.attempts, address_kind)
    user_prefs = prefs.get(delivery.notification.user_id)
    if is_dry_run(delivery):
        return dry_run_outcome(delivery, (address_kind, message_format), user_prefs)
    decision = decide_again(delivery, target, address_kind, user_prefs, cancels, started)
    if isinstance(decision, Outcome):
        return decision
    if decision.action != SEND:
        # Preferences changed since fan-out (digest holds are released by the scheduler).
        return done(target, started, Status.DIGEST, Attempt.SKIPPED, skip_reason=decision.reason)
    assert user_prefs is not None  # decide_again skips a deleted user
    category = category_info(delivery.notification.category)
    if user_prefs.quiet_start is not None and applies_to(address_kind, category.critical):
        quiet_end = quiet_until(
            started, user_prefs.quiet_start, user_prefs.quiet_end, user_prefs.timezone
        )
        if quiet_end is not None:
            return Hold(delivery.pk, quiet_end)
    try:
        message = build_message(delivery, message_format, decision.address, user_prefs.locale)
    except TemplateError as exc:
        return template_failure(target, started, exc)
    devices = device_addresses(user_prefs, address_kind, decision.address)
    if devices is not None:  # a push: every device of the user
        return send_to_devices(channel, target, message, devices, policy, started)
    return send_one(channel, target, message, policy, started)


# -- reminders and quiet hours ---------------------------------------------------------


class Hold(NamedTuple):
    """A claimed delivery that goes back to pending until ``until``: not an attempt."""

    delivery_id: int
    until: datetime
    reason: str = QUIET_HOURS


def hold_deliveries(holds: Iterable[Hold], token: datetime) -> int:
    """Put held deliveries back to pending (while the claim is still ours), due
    when the hold ends; the claim's attempt is given back. Returns how many."""
    by_until: dict[tuple[datetime, str], list[int]] = defaultdict(list)
    for hold in holds:
        by_until[(hold.until, hold.reason)].append(hold.delivery_id)
    held = 0
    for (until, reason), ids in by_until.items():
        held += Delivery.objects.filter(
            pk__in=ids, status=Status.SENDING, claimed_until=token
        ).update(
            status=Status.PENDING,
            next_attempt_at=until,
            hold_reason=reason,
            claimed_until=None,
            attempts=F("attempts") - 1,
            updated_at=timezone.now(),
        )
    return held


def decide_again(
    delivery: Delivery,
    target: Target,
    address_kind: str | None,
    prefs: UserPrefs | None,
    cancels: CancelCheck | None,
    started: datetime,
) -> Outcome | Decision:
    """Step 2 for a single delivery or a digest's item: the outcome of one that
    must not go out now (user deleted, a reminder's cancel condition, opted out
    or suppressed since fan-out), else the current decision (send, or digest)
    with the address to send to. Preferences decide twice (DESIGN.md, 4)."""
    if prefs is None:
        return done(target, started, Status.SKIPPED, Attempt.SKIPPED, skip_reason="user_deleted")
    cancelled = _cancel_condition(delivery, target, cancels or CancelCheck(), started)
    if cancelled is not None:
        return cancelled
    category = category_info(delivery.notification.category)
    decision = decide(category, delivery.channel, address_kind, prefs, started)
    if decision.action == SKIP:
        return done(target, started, Status.SKIPPED, Attempt.SKIPPED, skip_reason=decision.reason)
    return decision


def _cancel_condition(
    delivery: Delivery, target: Target, cancels: CancelCheck, started: datetime
) -> Outcome | None:
    """The outcome of a reminder whose cancel condition holds (or cannot be
    evaluated) against the current data; ``None`` to go on sending."""
    notification = delivery.notification
    rule = notification.rule
    if rule is None or not rule.cancel_condition.strip():
        return None
    verdict = cancels.verdict(
        rule.cancel_condition, notification.event, condition_context(notification.event)
    )
    if verdict is None:
        return None
    if verdict.status == Status.CANCELLED:
        return done(
            target,
            started,
            Status.CANCELLED,
            Attempt.SKIPPED,
            skip_reason=verdict.skip_reason,
            error_message=verdict.message,
        )
    return done(
        target,
        started,
        Status.FAILED,
        Attempt.PERMANENT,
        error_code=verdict.skip_reason,
        error_message=verdict.message,
    )
