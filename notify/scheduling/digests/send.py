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
   through the send step single deliveries use (``notify.delivery.outcomes``:
   the same channel call, error mapping and retry policy; items are decided
   again by ``notify.delivery.send.decide_again``). During the user's quiet
   hours the row waits until they end.
   The digests of a channel go through the send loop deliveries use
   (``notify.delivery.inflight.send_all``): deciding and rendering in the
   batch's thread, up to the channel's ``CONCURRENCY`` (capped by
   ``SENDS_IN_FLIGHT``, 1 by default) in flight, each on a channel instance
   of its own, kept for the whole run.
   The claim is a lease the sender keeps (``notify.scheduling.digests.lease``):
   extended while the batch is in flight, so a live leader's digests are never
   claimed again, and left to expire when the leader dies. Each digest carries
   its own ``X-Notify-Delivery: digest-<id>``.
3. **Record** (``notify.scheduling.digests.record``), at each tick of the send
   loop: the digests that returned since the last, in one transaction, before
   the next ones are sent (a killed leader leaves unrecorded at most the
   digests in flight, which the next leader sends again with the same
   ``X-Notify-Delivery``). A channel that cannot send (a
   configuration error) fails the rest of its batch with the reason; what was
   sent before stays recorded. The outcome goes on the row (status, provider, message id,
   attempts, error) and on its items (sent, failed or dead), each item with
   the attempt a single send would have recorded (``Outcome.attempt_row``,
   plus ``sent["digest"]``); a transient error leaves the items claimed, with
   a transient attempt each, and the row pending until the retry policy's
   next time.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from jinja2.exceptions import TemplateError

from channels.base import Channel, ChannelConfigurationError, OutgoingMessage, SendResult
from notify import conf
from notify.delivery.cancel import CancelCheck
from notify.delivery.inflight import SendPool, concurrency_of, send_all
from notify.delivery.outcomes import Target, attempt, config_failure, outcome_of, template_failure
from notify.delivery.retry import RetryPolicy
from notify.delivery.send import decide_again
from notify.logs import log_context
from notify.models import Category, Delivery, Digest, Event
from notify.models.status import Status
from notify.outbox.rows import Outcome, _skip_locked
from notify.preferences.decide import UserPrefs
from notify.preferences.directory import load_preferences
from notify.preferences.quiet_hours import applies_to, quiet_until
from notify.registry import build_channel, describe
from notify.scheduling.digests.build import build_due_digests
from notify.scheduling.digests.lease import DigestLease
from notify.scheduling.digests.message import TitleCache, build_digest_message
from notify.scheduling.digests.record import HELD, DigestOutcome, DigestStats, record_digests
from rules.models import Rule

__all__ = ["DigestOutcome", "DigestStats", "build_and_send_due_digests", "record_digests"]

log = logging.getLogger("notify.scheduling.digests.send")


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
    # One send pool per alias for the whole run: its SMTP sessions (or HTTP
    # connection pools) carry every batch, not just one.
    pools = SendPools()
    try:
        while True:
            claimed, token = claim_due_digests(
                now, conf.get("DIGEST_BATCH_SIZE"), conf.get("CLAIM_TTL")
            )
            if not claimed:
                return stats
            send_digests(claimed, token, policy, stats, pools)
    finally:
        pools.close()


def send_digests(
    claimed: dict[int, datetime],
    token: datetime,
    policy: RetryPolicy,
    stats: DigestStats,
    pools: SendPools,
) -> None:
    """Send one claimed batch through ``pools`` (the run's: ``send_due_digests``)."""
    digests = list(
        Digest.objects.filter(pk__in=list(claimed), status=Status.SENDING, due_at=token)
        .select_related("user")
        .order_by("channel", "pk")
    )
    items = load_items(digests)
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
    titles: TitleCache = {}  # the batch's recipients share their items' titles
    by_channel: dict[str, list[Digest]] = defaultdict(list)
    for digest in digests:
        by_channel[digest.channel].append(digest)
    lease = DigestLease([d.pk for d in digests], token, conf.get("CLAIM_TTL"))

    def tick(results: list[DigestOutcome | None], starting: list[Digest]) -> None:
        # The digests that returned since the last tick, in one transaction,
        # under the claim's current token, before the next ones are sent: a
        # killed leader leaves unrecorded at most the digests in flight.
        lease.keep()
        outcomes = [r for r in results if r is not None]
        record_digests(outcomes, lease.token, claimed, stats)
        for outcome in outcomes:
            lease.release(outcome.digest.pk)

    def prepare(digest: Digest, kind: str | None, fmt: str) -> DigestOutcome | DigestSend | None:
        if not lease.holds(digest.pk):  # the claim expired: another leader has it
            return None
        return prepare_digest(
            digest, items[digest.pk], kind, fmt, prefs.get(digest.user_id), cancels, titles
        )

    gather = GATHER if connection.vendor == "postgresql" else 0.0
    for alias, batch in by_channel.items():
        kind = kinds[alias]
        if kind is None:
            tick(fail_for_config(batch, items, f"channel '{alias}' is not configured"), [])
            continue
        send_all(
            batch,
            pools.get(alias),
            prepare=lambda d, k=kind: prepare(d, *k),
            finish=lambda send, answer: send.outcome(answer, policy),
            tick=tick,
            refuse=lambda rest, exc, a=alias: refused_configuration(a, rest, items, exc),
            should_stop=lambda: False,
            context=lambda d, a=alias: log_context(digest_id=d.pk, channel=a),
            gather=gather,
        )


# Seconds a tick on PostgreSQL waits, once a digest has returned, for others in
# flight to return too, so that one commit records them.
GATHER = 0.005


class SendPools:
    """The send pools of one run, one per channel alias (its sessions carry
    every batch), built on first use and closed at the run's end."""

    def __init__(self) -> None:
        self.open: dict[str, SendPool] = {}

    def get(self, alias: str) -> SendPool:
        pool = self.open.get(alias)
        if pool is None:
            first = build_channel(alias)
            pool = self.open[alias] = SendPool(alias, concurrency_of(alias, first), first=first)
            pool.prefill()  # the tick's commit is the slow part, not the provider
        return pool

    def close(self) -> None:
        for pool in self.open.values():
            pool.close()
        self.open.clear()


def refused_configuration(
    alias: str,
    rest: list[Digest],
    items: dict[int, list[Delivery]],
    exc: ChannelConfigurationError,
) -> list[DigestOutcome]:
    """Nothing more can go through this channel: the digest that met the error
    and the rest of its batch not started fail with the reason; what was sent
    stays recorded (the send pool closed the instance that met it)."""
    log.error("digests on channel '%s' cannot be sent: %s", alias, exc)
    return fail_for_config(rest, items, f"channel '{alias}': {exc}")


# The columns an item is decided, titled and recorded with: the rest (a dozen
# timestamps, the rendered parts) would be converted for nothing.
ITEM_FIELDS = (
    "digest_id",
    "channel",
    "status",
    "attempts",
    "created_at",
    "notification__event_id",
    "notification__rule_id",
    "notification__user_id",
    "notification__category_id",
    "notification__title",
    "notification__url",
)


def load_items(digests: list[Digest]) -> dict[int, list[Delivery]]:
    """The items of ``digests`` still waiting in them, oldest first, by digest.

    Two model instances an item (the delivery and its notification); the
    events, rules, categories and users they share are read once per batch and
    attached, instead of one copy of each per item through ``select_related``."""
    items: dict[int, list[Delivery]] = defaultdict(list)
    rows = list(
        Delivery.objects.filter(digest_id__in=[d.pk for d in digests], status=Status.DIGEST)
        .select_related("notification")
        .only(*ITEM_FIELDS)
        .order_by("created_at", "pk")
    )
    notifications = [row.notification for row in rows]
    events = Event.objects.select_related("actor").in_bulk({n.event_id for n in notifications})
    rules = Rule.objects.in_bulk({n.rule_id for n in notifications if n.rule_id is not None})
    categories = Category.objects.in_bulk({n.category_id for n in notifications})
    users = {d.user_id: d.user for d in digests}
    missing = {n.user_id for n in notifications} - users.keys()
    if missing:  # an item of another user's digest: not built so, but read anyway
        users |= get_user_model().objects.in_bulk(missing)
    for row, notification in zip(rows, notifications, strict=True):
        notification.event = events[notification.event_id]
        notification.rule = rules.get(notification.rule_id) if notification.rule_id else None
        notification.category = categories[notification.category_id]
        notification.user = users[notification.user_id]
        items[row.digest_id].append(row)
    return items


def fail_for_config(
    digests: list[Digest], items: dict[int, list[Delivery]], reason: str
) -> list[DigestOutcome]:
    """Fail ``digests`` and their items for a channel that cannot send (not
    configured, refused by its provider as misconfigured): retrying cannot help
    until ops fix it, and each item says why, as a single delivery would."""
    outcomes = []
    for digest in digests:
        failure = config_failure(_target(digest, None), timezone.now(), reason)
        outcomes.append(DigestOutcome(digest, Status.FAILED, items[digest.pk], result=failure))
    return outcomes


def _target(digest: Digest, address_kind: str | None) -> Target:
    return Target(digest.pk, digest.attempts, address_kind, label="digest")


def prepare_digest(
    digest: Digest,
    items: list[Delivery],
    address_kind: str | None,
    message_format: str,
    prefs: UserPrefs | None,
    cancels: CancelCheck,
    titles: TitleCache | None = None,
) -> DigestOutcome | DigestSend:
    """Decide each item again and render the digest: its outcome when nothing
    is to be sent (skipped, held), else its ``DigestSend``; nothing is written
    here (``record_digests``, at the send loop's next tick)."""
    started = timezone.now()
    keep, dropped, address = [], [], ""
    for item in items:
        # Each item is decided as a single send would be, as its next attempt.
        item_target = Target(item.pk, item.attempts + 1, address_kind)
        decision = decide_again(item, item_target, address_kind, prefs, cancels, started)
        if isinstance(decision, Outcome):
            dropped.append((item, decision))
            continue
        keep.append(item)
        address = decision.address
    if prefs is None:
        return DigestOutcome(digest, Status.SKIPPED, dropped=dropped, note="user deleted")
    if not keep:
        first = dropped[0][1] if dropped else None
        note = (first.skip_reason or first.error_code) if first else "no items"
        return DigestOutcome(digest, Status.SKIPPED, dropped=dropped, note=note)
    if applies_to(address_kind) and prefs.quiet_start is not None:
        quiet_end = quiet_until(started, prefs.quiet_start, prefs.quiet_end, prefs.timezone)
        if quiet_end is not None:
            return DigestOutcome(digest, HELD, dropped=dropped, next_at=quiet_end)
    target = _target(digest, address_kind)
    try:
        message = build_digest_message(digest, keep, address, message_format, prefs.locale, titles)
    except TemplateError as exc:
        failure = template_failure(target, started, exc)
        return DigestOutcome(digest, failure.status, keep, dropped, result=failure)
    return DigestSend(digest, keep, dropped, target, message, started)


@dataclass(frozen=True, slots=True)
class DigestSend:
    """A digest decided and rendered: ``send(channel)`` makes the send (nothing
    else: safe in a send pool's thread), ``outcome`` maps its answer through the
    send step single deliveries use (in the batch's thread)."""

    digest: Digest
    keep: list[Delivery]
    dropped: list[tuple[Delivery, Outcome]]
    target: Target
    message: OutgoingMessage
    started: datetime

    def __call__(self, channel: Channel) -> SendResult | Exception:
        return attempt(channel, self.message)

    def outcome(self, answer: SendResult | Exception, policy: RetryPolicy) -> DigestOutcome:
        result = outcome_of(self.target, self.message, answer, policy, self.started)
        return DigestOutcome(self.digest, result.status, self.keep, self.dropped, result=result)
