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
   The claim is a lease the sender keeps (``notify.scheduling.digests.lease``):
   extended while the batch is in flight, so a live leader's digests are never
   claimed again, and left to expire when the leader dies. Each digest carries
   its own ``X-Notify-Delivery: digest-<id>``.
3. **Record**, digest by digest as each is sent (a killed leader leaves at most
   the one in flight to be sent again). A channel that cannot send (a
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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from jinja2.exceptions import TemplateError

from channels.base import Channel, ChannelConfigurationError
from notify import conf
from notify.delivery.cancel import CancelCheck
from notify.delivery.outcomes import Target, config_failure, template_failure
from notify.delivery.outcomes import send_one as send_message
from notify.delivery.retry import RetryPolicy
from notify.delivery.send import decide_again
from notify.models import Category, Delivery, Digest, Event
from notify.models.status import Status
from notify.outbox.rows import Outcome, _skip_locked, attempt_values, insert_attempt_values
from notify.preferences.decide import UserPrefs
from notify.preferences.directory import load_preferences
from notify.preferences.quiet_hours import applies_to, quiet_until
from notify.registry import build_channel, describe
from notify.scheduling.digests.build import build_due_digests
from notify.scheduling.digests.lease import DigestLease
from notify.scheduling.digests.message import TitleCache, build_digest_message
from rules.models import Rule

log = logging.getLogger("notify.scheduling.digests.periods")

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
    # One channel instance per alias for the whole run: its SMTP session (or
    # HTTP connection pool) carries every batch, not just one.
    channels = ChannelCache()
    try:
        while True:
            claimed, token = claim_due_digests(
                now, conf.get("DIGEST_BATCH_SIZE"), conf.get("CLAIM_TTL")
            )
            if not claimed:
                return stats
            send_digests(claimed, token, policy, stats, channels)
    finally:
        channels.close()


class ChannelCache:
    """The channel instances of one run, built on first use and closed at its end."""

    def __init__(self) -> None:
        self.open: dict[str, Channel] = {}

    def get(self, alias: str) -> Channel:
        channel = self.open.get(alias)
        if channel is None:
            channel = self.open[alias] = build_channel(alias)
        return channel

    def drop(self, alias: str) -> None:
        """Close ``alias``'s instance (it failed): the next batch builds a fresh one."""
        channel = self.open.pop(alias, None)
        if channel is not None:
            channel.close()

    def close(self) -> None:
        for alias in list(self.open):
            self.drop(alias)


@dataclass(slots=True)
class DigestOutcome:
    """What happened to one claimed digest: ``result`` is the send step's outcome
    for its message (``None`` when nothing was sent: skipped or held)."""

    status: str  # SENT, SKIPPED, FAILED, DEAD, PENDING (retry) or HELD
    sent_items: list[Delivery] = field(default_factory=list)  # what the message carried
    dropped: list[tuple[Delivery, Outcome]] = field(default_factory=list)  # decided out
    result: Outcome | None = None
    note: str = ""  # why nothing was sent, for the row
    next_at: datetime | None = None  # end of quiet hours (HELD)


def send_digests(
    claimed: dict[int, datetime],
    token: datetime,
    policy: RetryPolicy,
    stats: DigestStats,
    channels: ChannelCache | None = None,
) -> None:
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

    def record(digest: Digest, outcome: DigestOutcome) -> None:
        # Each digest on the books as soon as it is sent, under the claim's
        # current token: a crash re-sends at most the one in flight.
        record_digest(digest, items[digest.pk], outcome, lease.token, claimed[digest.pk], stats)
        lease.release(digest.pk)

    own = channels is None
    channels = channels if channels is not None else ChannelCache()
    try:
        for alias, batch in by_channel.items():
            if kinds[alias] is None:
                fail_for_config(batch, items, f"channel '{alias}' is not configured", record)
                continue
            address_kind, message_format = kinds[alias]
            channel = channels.get(alias)
            for index, digest in enumerate(batch):
                if not lease.holds(digest.pk):  # the claim expired: another leader has it
                    continue
                try:
                    outcome = send_one(
                        digest,
                        items[digest.pk],
                        channel,
                        address_kind,
                        message_format,
                        prefs.get(digest.user_id),
                        policy,
                        cancels,
                        titles,
                    )
                except ChannelConfigurationError as exc:
                    # Nothing more can go through this channel: the rest of its
                    # batch fails with the reason, what was sent stays recorded.
                    log.error("digests on channel '%s' cannot be sent: %s", alias, exc)
                    channels.drop(alias)
                    fail_for_config(batch[index:], items, f"channel '{alias}': {exc}", record)
                    break
                record(digest, outcome)
    finally:
        if own:
            channels.close()


def load_items(digests: list[Digest]) -> dict[int, list[Delivery]]:
    """The items of ``digests`` still waiting in them, oldest first, by digest.

    Two model instances an item (the delivery and its notification); the
    events, rules, categories and users they share are read once per batch and
    attached, instead of one copy of each per item through ``select_related``."""
    items: dict[int, list[Delivery]] = defaultdict(list)
    rows = list(
        Delivery.objects.filter(digest_id__in=[d.pk for d in digests], status=Status.DIGEST)
        .select_related("notification")
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
    digests: list[Digest],
    items: dict[int, list[Delivery]],
    reason: str,
    record: Callable[[Digest, DigestOutcome], None],
) -> None:
    """Fail ``digests`` and their items for a channel that cannot send (not
    configured, refused by its provider as misconfigured): retrying cannot help
    until ops fix it, and each item says why, as a single delivery would."""
    for digest in digests:
        failure = config_failure(_target(digest, None), timezone.now(), reason)
        record(digest, DigestOutcome(Status.FAILED, items[digest.pk], result=failure))


def _target(digest: Digest, address_kind: str | None) -> Target:
    return Target(digest.pk, digest.attempts, address_kind, label="digest")


def send_one(
    digest: Digest,
    items: list[Delivery],
    channel: Channel,
    address_kind: str | None,
    message_format: str,
    prefs: UserPrefs | None,
    policy: RetryPolicy,
    cancels: CancelCheck,
    titles: TitleCache | None = None,
) -> DigestOutcome:
    """Decide each item again, render the digest and send it through the send
    step single deliveries use; nothing is written here (``record_digest``)."""
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
        return DigestOutcome(Status.SKIPPED, dropped=dropped, note="user deleted")
    if not keep:
        first = dropped[0][1] if dropped else None
        note = (first.skip_reason or first.error_code) if first else "no items"
        return DigestOutcome(Status.SKIPPED, dropped=dropped, note=note)
    if applies_to(address_kind) and prefs.quiet_start is not None:
        quiet_end = quiet_until(started, prefs.quiet_start, prefs.quiet_end, prefs.timezone)
        if quiet_end is not None:
            return DigestOutcome(HELD, dropped=dropped, next_at=quiet_end)
    target = _target(digest, address_kind)
    try:
        message = build_digest_message(digest, keep, address, message_format, prefs.locale, titles)
    except TemplateError as exc:
        result = template_failure(target, started, exc)
    else:
        result = send_message(channel, target, message, policy, started)
    return DigestOutcome(result.status, keep, dropped, result=result)


# -- 3. record -----------------------------------------------------------------------------


def record_digest(
    digest: Digest,
    items: list[Delivery],
    outcome: DigestOutcome,
    token: datetime,
    due_before: datetime,
    stats: DigestStats,
) -> bool:
    """Write the outcome on the row and its items while the claim is ours.

    The digest-only bookkeeping: the row, and closing its items; each item's
    attempt is the one a single send with the same outcome records."""
    result = outcome.result
    error = outcome.note
    if result is not None:
        error = f"[{result.error_code}] {result.error_message}" if result.error_code else ""
        error = error or result.error_message
    fields: dict[str, Any] = {"error_message": error[:2000]}
    provider = result.provider[:50] if result is not None else ""
    if outcome.status == HELD:
        # The claim counted an attempt that was not made: give it back.
        fields.update(status=Status.PENDING, due_at=outcome.next_at, attempts=REFUND)
    elif outcome.status == Status.PENDING:
        assert result is not None
        fields.update(status=Status.PENDING, due_at=result.next_attempt_at, provider=provider)
    else:
        fields.update(status=outcome.status, due_at=due_before, provider=provider)
    if result is not None and result.status == Status.SENT:
        fields.update(
            provider_message_id=result.message_id[:255],
            sent=result.sent or {},
            sent_at=result.finished_at,
            item_count=len(outcome.sent_items),
        )
    elif result is not None and result.sent is not None:
        fields["sent"] = result.sent
    with transaction.atomic(), connection.cursor() as cursor:
        if not _update_row(cursor, digest.pk, token, fields):
            return False  # the claim expired and someone else has it now
        attempts: list[list[Any]] = []
        for item, dropped in outcome.dropped:
            _close_items(cursor, digest, [item], dropped)
            attempts.append(attempt_values(dropped.attempt_row(digest=digest.pk)))
        if result is not None and outcome.sent_items:
            _close_items(cursor, digest, outcome.sent_items, result)
            attempts += _item_attempts(result, outcome.sent_items, digest.pk)
        if attempts:
            insert_attempt_values(cursor, attempts)
    key = {Status.SENT: "sent", Status.DELIVERED: "sent", Status.SKIPPED: "skipped"}
    key |= {HELD: "held", Status.PENDING: "retried"}
    name = key.get(outcome.status, "failed")
    setattr(stats, name, getattr(stats, name) + 1)
    return True


REFUND = object()  # ``attempts`` one lower, not below 0


def _update_row(cursor, digest_id: int, token: datetime, fields: dict[str, Any]) -> bool:
    """Write ``fields`` on the digest row if its claim is still ``token``, with
    one prepared ``UPDATE`` (the ORM compiled each); whether it was ours."""
    ops = connection.ops
    sets, params = [], []
    for name, value in fields.items():
        column = ops.quote_name(Digest._meta.get_field(name).column)
        if value is REFUND:
            sets.append(f"{column} = CASE WHEN {column} > 0 THEN {column} - 1 ELSE 0 END")
            continue
        sets.append(f"{column} = %s")
        params.append(Digest._meta.get_field(name).get_db_prep_save(value, connection))
    cursor.execute(
        f"UPDATE {ops.quote_name(Digest._meta.db_table)} SET {', '.join(sets)} "
        "WHERE id = %s AND status = %s AND due_at = %s",
        [*params, digest_id, Status.SENDING, ops.adapt_datetimefield_value(token)],
    )
    return cursor.rowcount == 1


def _item_attempts(result: Outcome, items: list[Delivery], digest_id: int) -> list[list[Any]]:
    """Each item's attempt for the digest's outcome, as ``Outcome.attempt_row``
    writes it: the values are prepared once (the message sent, as JSON, is the
    same for every item) and only the item's id and attempt number differ."""
    shared = attempt_values(result.attempt_row(0, 0, digest=digest_id))
    rows = []
    for item in items:
        row = list(shared)
        row[0], row[1] = item.pk, item.attempts + 1  # delivery_id, number
        rows.append(row)
    return rows


def _close_items(cursor, digest: Digest, items: Iterable[Delivery], outcome: Outcome) -> int:
    """Write ``outcome`` on items still waiting in ``digest``, as
    ``record_outcomes`` does on a single delivery; an item stays in the digest
    (status ``digest``) while the digest is retried, and keeps its
    ``skip_reason`` (the frequency it waited for) unless decided out.
    One prepared ``UPDATE`` (the ORM's compiler cost more than the statement)."""
    ids = [i.pk for i in items]
    if not ids:
        return 0
    ops = connection.ops
    retry = outcome.status == Status.PENDING
    sent = outcome.status == Status.SENT
    finished = ops.adapt_datetimefield_value(outcome.finished_at)
    next_at = ops.adapt_datetimefield_value(outcome.next_attempt_at) if retry else None
    skip = ", skip_reason = %s" if outcome.skip_reason else ""
    table = ops.quote_name(Delivery._meta.db_table)
    cursor.execute(
        f"UPDATE {table} SET status = %s{skip}, provider = %s, provider_message_id = %s, "
        "error_code = %s, error_message = %s, attempts = attempts + 1, "
        "next_attempt_at = %s, sent_at = %s, updated_at = %s "
        f"WHERE id IN ({', '.join(['%s'] * len(ids))}) AND digest_id = %s AND status = %s",
        [
            Status.DIGEST if retry else outcome.status,
            *([outcome.skip_reason[:50]] if skip else []),
            outcome.provider[:50],
            outcome.message_id[:255],
            outcome.error_code[:50],
            outcome.error_message[:2000],
            next_at or finished,
            finished if sent else None,
            finished,
            *ids,
            digest.pk,
            Status.DIGEST,
        ],
    )
    return cursor.rowcount
