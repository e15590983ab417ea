"""Dispatch: claimed deliveries in, sends out, every attempt on the record.

The same ``deliver`` runs in the in-process worker pool, in a Celery task and
in tests. For a batch of claimed delivery ids:

1. load the deliveries with their notification, event, rule and user
   (``notify.delivery.claimed``: one statement, compiled once per process);
2. decide again with the current preferences and addresses; cancel a reminder
   whose cancel condition now holds; hold a message that would reach someone
   during their quiet hours until they end (not an attempt);
   a dry-run delivery is rendered and kept, not sent (``notify.delivery.dry_run``);
3. render each message in the recipient's locale (``notify.delivery.message``,
   templates compiled once);
4. send through the channel: this worker thread's send pool for its alias,
   sessions kept across batches, up to its ``concurrency`` sends in flight
   (``notify.delivery.inflight``: the one send loop); the send step digests use
   too (``notify.delivery.outcomes.send_one``); a push goes to each of the
   user's devices (``notify.delivery.devices``);
5. at each tick of the loop, one short transaction writes the outcomes (and
   attempts) of the sends that returned and marks the next sends in flight,
   while the claim is still ours.

The claim is kept while the batch runs (``notify.outbox.lease``: a heartbeat),
so no other worker takes it however slow the provider; the batch starts no send
after ``WORKER_BATCH_SECONDS`` and puts the rest back. A worker's batch with
sends in flight grows under its claim as they drain (``grow``: more of the
channel's due deliveries, loaded and decided as the first) for ``GROW_SECONDS``
at most, never past it. A send starts only once
its in-flight mark is committed and stays marked until its outcome is, so after
a crash the marked rows of a lost batch are the ones that may have reached the
provider (``notify.outbox.rows.reap_lost``: at most the sends in flight); such
a suspect is sent alone, with nothing else in flight in this process
(``notify.delivery.gate``). A channel that refuses its configuration mid-batch
fails the rest of its batch with the reason (``refused_configuration``).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import NamedTuple

from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone
from jinja2.exceptions import TemplateError

from channels.base import Channel, ChannelConfigurationError, OutgoingMessage, SendResult
from notify import conf
from notify.delivery.cancel import CancelCheck
from notify.delivery.claimed import load_claimed
from notify.delivery.devices import device_addresses, devices_already_sent, sum_outcomes
from notify.delivery.dry_run import dry_run_outcome, is_dry_run
from notify.delivery.inflight import SendPool, pool_for, send_all
from notify.delivery.message import build_message
from notify.delivery.outcomes import (
    Target,
    attempt,
    config_failure,
    done,
    flush_queued,
    outcome_of,
    template_failure,
)
from notify.delivery.retry import RetryPolicy
from notify.fanout.context import condition_context
from notify.logs import log_context
from notify.models import Delivery, DeliveryAttempt
from notify.models.status import Status
from notify.outbox.lease import Lease
from notify.outbox.rows import (
    SUSPECT,
    Outcome,
    claim_more,
    record_outcomes,
    release,
)
from notify.preferences.decide import SEND, SKIP, Decision, UserPrefs, decide
from notify.preferences.directory import category_info, load_preferences
from notify.preferences.quiet_hours import QUIET_HOURS, applies_to, quiet_until
from notify.registry import build_channel, channel_class, describe

log = logging.getLogger("notify.delivery.send")
Attempt = DeliveryAttempt.Outcome

# Seconds a worker's batch may grow (``grow``), never past WORKER_BATCH_SECONDS.
# A growing batch holds its worker thread: the events, workflow runs and other
# channels that thread would take next wait until it ends. Five seconds of
# growth keep a slow provider's slots busy (a drain costs about one provider
# latency, a few percent of the window) while no other work waits longer.
GROW_SECONDS = 5.0


@dataclass(slots=True)
class DispatchStats:
    sent: int = 0
    skipped: int = 0
    retried: int = 0
    failed: int = 0
    dead: int = 0
    recorded: int = 0
    held: int = 0  # back to pending until the recipient's quiet hours end
    released: int = 0  # not started before WORKER_BATCH_SECONDS: back to pending
    grown: int = 0  # claimed into the batch while its sends were in flight
    by_status: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def count(self, outcome: Outcome) -> None:
        self.by_status[outcome.status] += 1
        self.sent = self.by_status[Status.SENT]
        self.skipped = self.by_status[Status.SKIPPED]
        self.retried = self.by_status[Status.PENDING]
        self.failed = self.by_status[Status.FAILED]
        self.dead = self.by_status[Status.DEAD]


def deliver(
    delivery_ids: Iterable[int],
    token: datetime,
    now: datetime | None = None,
    stopping: Callable[[], bool] | None = None,
    grow: bool = False,
) -> DispatchStats:
    """Send a batch of deliveries claimed with ``token``, keeping the claim
    (``notify.outbox.lease``) while it runs and recording each as it is done.
    Once ``stopping()`` is true (the worker pool is stopping), no send starts
    and the rest goes back to pending, as past ``WORKER_BATCH_SECONDS``.

    ``grow`` (a worker's round): a channel's batch with sends in flight claims
    more of its due deliveries under the same claim as its last sends drain,
    for ``GROW_SECONDS`` at most (``notify.delivery.inflight.send_all``)."""
    lease = Lease(token, conf.get("CLAIM_TTL"), conf.get("WORKER_BATCH_SECONDS"))
    with lease:
        return _deliver(delivery_ids, lease, now, stopping or (lambda: False), grow)


def _deliver(
    delivery_ids: Iterable[int],
    lease: Lease,
    now: datetime | None,
    stopping: Callable[[], bool],
    grow: bool = False,
) -> DispatchStats:
    stats = DispatchStats()
    started = time.monotonic()
    budget = float(conf.get("WORKER_BATCH_SECONDS"))
    policy = RetryPolicy.from_settings()
    # 1. load
    with lease.held() as token:
        deliveries = load_claimed(delivery_ids, token)
    if not deliveries:
        return stats
    # 2. preferences, again
    kinds = {}
    for alias in {d.channel for d in deliveries}:
        try:
            kinds[alias] = describe(alias)
        except ChannelConfigurationError:
            kinds[alias] = None
    prefs = _load_prefs(deliveries, kinds)
    cancels = CancelCheck()
    by_channel: dict[str, list[Delivery]] = defaultdict(list)
    by_id = {delivery.pk: delivery for delivery in deliveries}
    for delivery in deliveries:
        by_channel[delivery.channel].append(delivery)

    def tick(results: list[Outcome | Hold], starting: list[Delivery]) -> None:
        # 5. record what is known and mark the next sends in flight: one short
        # transaction, while the claim is ours (notify.delivery.inflight)
        outcomes = [r for r in results if not isinstance(r, Hold)]
        holds = [r for r in results if isinstance(r, Hold)]
        with lease.held() as token:
            if holds:
                stats.held += hold_deliveries(holds, token)
            stats.recorded += record_outcomes(outcomes, token, [d.pk for d in starting])
        for outcome in outcomes:
            stats.count(outcome)
        if log.isEnabledFor(logging.DEBUG):
            for result in results:
                delivery = by_id[result.delivery_id]
                with log_context(
                    event_id=delivery.notification.event_id,
                    delivery_id=delivery.pk,
                    attempt=getattr(result, "attempt", delivery.attempts),
                    channel=delivery.channel,
                ):
                    if isinstance(result, Hold):
                        log.debug("delivery %s held: %s", delivery.pk, result.reason)
                    else:
                        log.debug(
                            "delivery %s attempt %s: %s", delivery.pk, result.attempt, result.status
                        )

    # Only the batch's last channel grows: the others' deliveries must not wait behind it.
    growing = list(by_channel)[-1] if grow else None
    for alias, batch in by_channel.items():
        if kinds[alias] is None:
            reason = f"channel '{alias}' is not configured"
            unsent: list[Outcome | Hold] = []
            for delivery in batch:
                if is_dry_run(delivery):
                    prefs_of = prefs.get(delivery.notification.user_id)
                    unsent.append(dry_run_outcome(delivery, None, prefs_of, reason))
                else:
                    target = Target(delivery.pk, delivery.attempts)
                    unsent.append(config_failure(target, now or timezone.now(), reason))
            tick(unsent, [])
            continue
        address_kind, message_format = kinds[alias]
        # A queuing channel (in-app: the batch's items in one statement) makes
        # its sends at flush: a fresh instance per batch, its outcomes written
        # after the flush, never before. Any other keeps its sessions in this
        # thread's pool across batches.
        queuing = build_channel(alias) if channel_class(alias).queues_sends else None
        if queuing is not None:
            queuing.open()
            pool = SendPool(alias, 1, first=queuing)
        else:
            pool = pool_for(alias)

        def more(limit: int, a: str = alias) -> list[Delivery]:
            # Claimed under the batch's claim, loaded and decided as the claimed ones.
            if time.monotonic() - started >= GROW_SECONDS:
                return []
            with lease.held() as token:
                grown = load_claimed(claim_more(limit, token, a), token)
            prefs.update(_load_prefs(grown, kinds))
            by_id.update((d.pk, d) for d in grown)
            stats.grown += len(grown)
            return grown

        try:
            stopped_at = send_all(
                batch,
                pool,
                prepare=lambda d, kind=address_kind, fmt=message_format: _prepare(
                    d, kind, fmt, prefs, policy, cancels
                ),
                finish=lambda send, answers: send.outcome(answers, policy),
                tick=tick,
                refuse=lambda rest, exc, a=alias, p=pool: refused_configuration(
                    a, rest, exc, p.provider_name
                ),
                should_stop=lambda: time.monotonic() - started >= budget or stopping(),
                context=lambda d, a=alias: log_context(
                    event_id=d.notification.event_id,
                    delivery_id=d.pk,
                    attempt=d.attempts,
                    channel=a,
                ),
                alone=lambda d: d.hold_reason == SUSPECT,
                flush=None
                if queuing is None
                else lambda results, c=queuing: _flush(c, results, policy),
                more=more if alias == growing else None,  # send_all: not if queuing
            )
        finally:
            if queuing is not None:
                pool.close()
        if stopped_at is not None:
            rest = [d.pk for b in by_channel.values() for d in b]
            rest = rest[rest.index(batch[stopped_at].pk) :]
            with lease.held() as token:
                stats.released = release(rest, token)
            log.info(
                "batch stopped after %.0f s (WORKER_BATCH_SECONDS %.0f, or the "
                "worker stopping): %d deliveries put back",
                time.monotonic() - started,
                budget,
                stats.released,
            )
            return stats
    return stats


def _load_prefs(deliveries: list[Delivery], kinds: dict) -> dict[int, UserPrefs]:
    """The current preferences of these deliveries' users (step 2)."""
    return load_preferences(
        list({d.notification.user_id for d in deliveries}),
        {d.notification.category_id for d in deliveries},
        {k[0] for k in kinds.values() if k and k[0]},
    )


def _flush(channel: Channel, results: list[Outcome | Hold], policy: RetryPolicy) -> None:
    """Make a queuing channel's sends; a failed flush turns their "sent" outcomes
    in ``results`` into its error's (``flush_queued``)."""
    at = [i for i, r in enumerate(results) if isinstance(r, Outcome)]
    outcomes = [results[i] for i in at]
    flush_queued(channel, outcomes, 0, policy)  # type: ignore[arg-type]
    for i, outcome in zip(at, outcomes, strict=True):
        results[i] = outcome


def refused_configuration(
    alias: str, rest: list[Delivery], exc: ChannelConfigurationError, provider: str
) -> list[Outcome]:
    """A channel refused its configuration mid-batch (credentials revoked, a
    401): what was sent before is already recorded; the delivery that met the
    error fails with it on record, and the rest of this channel's batch fails
    untried (no attempt used) with a reason naming it, never re-sent by
    a reclaim. Ops fix the channel and retry them from admin."""
    first, *others = rest
    log.error(
        "channel '%s' refused its configuration while sending delivery %s: %s; "
        "%d more deliveries of this batch failed untried: %s",
        alias,
        first.pk,
        exc,
        len(others),
        [d.pk for d in others],
    )
    now = timezone.now()
    message = f"channel '{alias}' configuration error: {exc}"
    outcomes = [
        done(
            Target(first.pk, first.attempts),
            now,
            Status.FAILED,
            Attempt.PERMANENT,
            error_code="config",
            error_message=message,
            provider=provider,
        )
    ]
    for delivery in others:
        outcomes.append(
            Outcome(
                delivery_id=delivery.pk,
                status=Status.FAILED,
                attempt=delivery.attempts,
                started_at=now,
                finished_at=now,
                attempt_outcome="",  # not tried: no attempt on record
                refund_attempt=True,
                error_code="config",
                error_message=f"not sent: {message} (at delivery {first.pk})",
            )
        )
    return outcomes


def _prepare(
    delivery: Delivery,
    address_kind: str | None,
    message_format: str,
    prefs: dict,
    policy: RetryPolicy,
    cancels: CancelCheck | None = None,
) -> Outcome | Hold | Send:
    """Decide again and render one claimed delivery (steps 2 and 3): its outcome
    or hold when it is not to be sent now, else its ``Send``."""
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
    if devices is not None:  # a push: every device of the user not reached yet
        reached = devices_already_sent(target)
        messages = tuple(replace(message, to=d) for d in devices if d not in reached)
        return Send(target, messages, started, devices=True, reached_before=bool(reached))
    return Send(target, (message,), started)


@dataclass(frozen=True, slots=True)
class Send:
    """A delivery decided and rendered: its messages (one, or one per device of
    a push), to send through a channel (``send(channel)``: nothing but the
    sends, safe in a send pool's thread) and map to its outcome (``outcome``,
    in the batch's thread: it may read and write the database)."""

    target: Target
    messages: tuple[OutgoingMessage, ...]
    started: datetime
    devices: bool = False
    reached_before: bool = False

    def __call__(self, channel: Channel) -> list[SendResult | Exception]:
        return [attempt(channel, message) for message in self.messages]

    def outcome(self, answers: list[SendResult | Exception], policy: RetryPolicy) -> Outcome:
        parts = [
            outcome_of(self.target, message, answer, policy, self.started)
            for message, answer in zip(self.messages, answers, strict=True)
        ]
        if not self.devices:
            return parts[0]
        return sum_outcomes(self.target, self.started, parts, self.reached_before)


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
            attempts=Greatest(F("attempts") - 1, 0),
            sending_since=None,
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
