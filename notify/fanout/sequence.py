"""The fan-out sequence: what one event would do, per matched rule and per
recipient, with each channel's decision and its reason. It plans; it does not
write the outbox, render or send.

Three callers run it, so the three cannot drift apart:

- ``notify.fanout.pipeline.fan_out`` plans with ``record=True`` and writes
  every planned chunk to the outbox;
- ``notify.fanout.preview.plan_preview`` (the admin "Preview / dry run")
  plans with ``record=False`` and shows what it got;
- ``notify.pages.sendtest.send_test`` ("send me a test") plans one system rule
  for one user on one channel, then writes and sends that one delivery.

``plan_event`` yields one ``RulePlan`` per rule, in match order:

1. the rule's configured channels and its category; a rule without them plans
   nothing (``NO_ROUTE``);
2. when its deliveries are due: a delay or a payload time
   (``notify.fanout.send_time``); an invalid time plans nothing for the rule
   (``BAD_SEND_TIME``);
3. the rule's ops controls (``notify.fanout.policies.RulePolicy``): the
   deduplication key is claimed (``record=True``, the one write made here:
   claiming is what makes the next event a duplicate) or only read; a
   duplicate plans nothing (``DUPLICATE``); then the active window may hold
   the deliveries until it opens.

A rule that got this far plans its recipients on demand, streamed in chunks
(``RulePlan.chunks``) or for a given list (``RulePlan.plan``):

4. recipients: the rule's resolvers, or the user ids the caller names;
5. per chunk: preferences and addresses loaded (a fixed number of queries),
   each (user, channel) decided (``plan_chunk``, pure), then fallback,
   throttling and dry run (``RulePolicy.adjust``).

The rule is consumed lazily: a caller that writes a chunk before asking for
the next one sees earlier chunks' rows (throttling counts them), exactly as
fan-out always did.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils import timezone

from notify import conf
from notify.fanout.context import condition_context
from notify.fanout.policies import RulePolicy
from notify.fanout.send_time import SendAtError, send_time
from notify.models import Category, Event
from notify.models.status import Status
from notify.outbox.rows import PlannedDelivery, PlannedNotification
from notify.preferences.decide import SEND, SKIP, CategoryInfo, UserPrefs, decide
from notify.preferences.directory import DatabaseDirectory, category_info, load_preferences
from notify.preferences.quiet_hours import QUIET_HOURS, applies_to, quiet_until
from notify.registry import describe
from rules.index import CompiledRule, RuleMatch, rule_index
from rules.recipients import EventRecipients, RecipientSpec, resolve_recipients

log = logging.getLogger("notify.fanout.pipeline")

EXPLICIT = (RecipientSpec("explicit"),)

# Why a rule plans nothing (``RulePlan.stop``).
NOT_MATCHED = "not_matched"  # only for the matches a caller passes in
NO_ROUTE = "no_route"  # no category or no configured channel
BAD_SEND_TIME = "bad_send_time"  # the payload time is missing or invalid
DUPLICATE = "duplicate"  # the deduplication key was notified already
CONDITION_FAILED = "condition_failed"  # the rule's condition raised (a rule error)
DEDUP_FAILED = "dedup_failed"  # the deduplication key could not be evaluated (a rule error)


def chunked(ids: Iterable[int], size: int) -> Iterator[list[int]]:
    iterator = iter(ids)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def plan_chunk(
    user_ids: Iterable[int],
    category: CategoryInfo,
    channels: dict[str, str | None],
    prefs: dict[int, UserPrefs],
    now: datetime,
    *,
    due_at: datetime | None = None,
    hold_reason: str = "",
) -> list[PlannedNotification]:
    """Decide every (user, channel) of a chunk. Pure: data in, rows out.

    ``due_at`` and ``hold_reason`` come from the rule (delayed or scheduled).
    A delivery that is due later is planned pending even if it is held for a
    digest today: dispatch decides again when it is due.

    Most users have no preference, pause or quiet hours of their own: their
    decisions depend only on the state of their address for each channel
    (``address_state``), so they are made once per state and shared (the
    tuples are immutable), not once per user."""
    planned = []
    shared: dict[tuple[int, ...], tuple[PlannedDelivery, ...]] = {}
    kinds = tuple(channels.values())
    for user_id in user_ids:
        user_prefs = prefs.get(user_id)
        if user_prefs is None:  # deleted between resolution and loading
            continue
        if (
            user_prefs.is_active
            and not user_prefs.modes
            and not user_prefs.channels
            and user_prefs.paused_until is None
            and user_prefs.quiet_start is None
        ):
            key = tuple([address_state(user_prefs, kind) for kind in kinds])
            deliveries = shared.get(key)
            if deliveries is None:
                deliveries = shared[key] = plan_user(
                    category, channels, user_prefs, now, due_at, hold_reason
                )
        else:
            deliveries = plan_user(category, channels, user_prefs, now, due_at, hold_reason)
        planned.append(PlannedNotification(user_id, deliveries))
    return planned


def address_state(prefs: UserPrefs, kind: str | None) -> int:
    """All ``decide`` reads of a user's address for a channel: none needed (0),
    missing (1), unverified (2), suppressed (3), usable (4)."""
    if kind is None:
        return 0
    found = prefs.addresses.get(kind)
    if found is None:
        return 1
    if not found.verified:
        return 2
    return 3 if (kind, found.value.lower()) in prefs.suppressed else 4


def plan_user(
    category: CategoryInfo,
    channels: dict[str, str | None],
    user_prefs: UserPrefs,
    now: datetime,
    due_at: datetime | None,
    hold_reason: str,
) -> tuple[PlannedDelivery, ...]:
    """One user's deliveries, a decision per channel."""
    deliveries = []
    for alias, address_kind in channels.items():
        decision = decide(category, alias, address_kind, user_prefs, now)
        if decision.action == SKIP:
            deliveries.append(PlannedDelivery(alias, Status.SKIPPED, decision.reason))
        elif decision.action == SEND or due_at is not None:
            deliveries.append(
                plan_send(alias, address_kind, category, user_prefs, now, due_at, hold_reason)
            )
        else:
            deliveries.append(PlannedDelivery(alias, Status.DIGEST, decision.reason))
    return tuple(deliveries)


def plan_send(
    alias: str,
    address_kind: str | None,
    category: CategoryInfo,
    prefs: UserPrefs,
    now: datetime,
    due_at: datetime | None,
    hold_reason: str,
) -> PlannedDelivery:
    """A pending delivery, due at ``due_at`` or, if that falls in the user's
    quiet hours (and they apply), when the quiet hours end."""
    if prefs.quiet_start is not None and applies_to(address_kind, category.critical):
        quiet_end = quiet_until(due_at or now, prefs.quiet_start, prefs.quiet_end, prefs.timezone)
        if quiet_end is not None:
            return PlannedDelivery(alias, Status.PENDING, "", QUIET_HOURS, quiet_end)
    return PlannedDelivery(alias, Status.PENDING, "", hold_reason, due_at)


def rule_channels(
    rule: CompiledRule, aliases: Sequence[str] | None = None
) -> dict[str, str | None]:
    """The rule's channel aliases (or ``aliases``), configured ones only, with
    their address kinds."""
    configured = conf.get("CHANNELS")
    if aliases is None:
        aliases = rule.channels or tuple(conf.get("DEFAULT_CHANNELS"))
    channels = {}
    for alias in aliases:
        if alias not in configured:
            log.warning("rule %s names channel %r, which is not configured", rule.id, alias)
            continue
        channels[alias] = describe(alias)[0]
    return channels


@dataclass(slots=True)
class PlannedChunk:
    """Some recipients of one rule, decided: the rows fan-out would write."""

    user_ids: list[int]
    prefs: dict[int, UserPrefs]
    planned: list[PlannedNotification]


@dataclass(slots=True)
class RulePlan:
    """One rule's part of an event. ``stop`` (one of ``NOT_MATCHED``,
    ``NO_ROUTE``, ``BAD_SEND_TIME``, ``DUPLICATE``) says why it plans nothing,
    ``why`` the detail; otherwise its recipients are planned on demand."""

    match: RuleMatch
    event: Event
    now: datetime
    audience: EventRecipients
    directory: DatabaseDirectory
    user_ids: Sequence[int] | None = None  # given by the caller instead of the resolvers
    category: CategoryInfo | None = None
    category_row: Category | None = None
    channels: dict[str, str | None] = field(default_factory=dict)
    due_at: datetime | None = None
    hold_reason: str = ""
    policy: RulePolicy | None = None
    stop: str = ""
    why: str = ""

    @property
    def rule(self) -> CompiledRule:
        return self.match.rule

    def recipients(self) -> Iterator[int]:
        """The rule's recipients, streamed (none for a rule that stopped)."""
        if self.stop:
            return iter(())
        if self.user_ids is not None:
            return iter(self.user_ids)
        rule = self.rule
        return iter(
            resolve_recipients(
                rule.recipients or EXPLICIT,
                self.audience,
                self.directory,
                exclude_actor=rule.exclude_actor,
            )
        )

    def plan(self, user_ids: list[int]) -> PlannedChunk:
        """Load these users' preferences and decide each (user, channel)."""
        category, channels, policy = self.category, self.channels, self.policy
        assert category is not None and policy is not None and not self.stop
        prefs = load_preferences(user_ids, [category.id], {k for k in channels.values() if k})
        planned = plan_chunk(
            user_ids,
            category,
            channels,
            prefs,
            self.now,
            due_at=self.due_at,
            hold_reason=self.hold_reason,
        )
        planned = policy.adjust(self.event.pk, category, channels, planned, self.now)
        return PlannedChunk(user_ids, prefs, planned)

    def chunks(self, size: int | None = None) -> Iterator[PlannedChunk]:
        """Every recipient, planned ``size`` at a time (``FANOUT_CHUNK_SIZE``)."""
        for user_ids in chunked(self.recipients(), size or conf.get("FANOUT_CHUNK_SIZE")):
            yield self.plan(user_ids)


def plan_event(
    event: Event,
    *,
    now: datetime | None = None,
    matches: Iterable[RuleMatch] | None = None,
    record: bool = False,
    recipients: Sequence[int] | None = None,
    channels: Sequence[str] | None = None,
) -> Iterator[RulePlan]:
    """Plan ``event``: one ``RulePlan`` per rule (see the module docstring).

    ``matches``: the rules to plan (default: the matched rules of the index);
    ``record``: claim deduplication keys (fan-out) rather than read them;
    ``recipients``: these user ids instead of each rule's resolvers;
    ``channels``: these channel aliases instead of each rule's.
    """
    now = now or timezone.now()
    context: dict[str, Any] = condition_context(event)
    if matches is None:
        matches = [m for m in rule_index.get().match(event.type, context) if m.matched or m.failed]
    matches = list(matches)
    matched = {m.rule.category_id for m in matches if m.matched}
    categories = {c.pk: c for c in Category.objects.filter(pk__in=matched)} if matched else {}
    audience = EventRecipients(
        payload=event.payload if isinstance(event.payload, dict) else {},
        actor_id=event.actor_id,
        explicit=tuple(event.recipients or ()),
        object_ref=event.object_ref,
    )
    directory = DatabaseDirectory()
    for match in matches:
        plan = RulePlan(match, event, now, audience, directory, user_ids=recipients)
        if not match.matched:
            plan.stop = CONDITION_FAILED if match.failed else NOT_MATCHED
            plan.why = match.reason
            yield plan
            continue
        rule = match.rule
        plan.category_row = categories.get(rule.category_id)
        plan.category = category_info(plan.category_row) if plan.category_row else None
        plan.channels = rule_channels(rule, channels)
        if plan.category is None or not plan.channels:
            plan.stop = NO_ROUTE
            yield plan
            continue
        try:
            due_at, hold_reason = send_time(rule, event.payload, now)
        except SendAtError as exc:
            plan.stop, plan.why = BAD_SEND_TIME, str(exc)
            yield plan
            continue
        plan.policy = RulePolicy.start(rule, event, context, now, record=record)
        if plan.policy.failed:
            plan.stop, plan.why = DEDUP_FAILED, plan.policy.failed
            yield plan
            continue
        if plan.policy.skip:
            plan.stop, plan.why = DUPLICATE, plan.policy.skip
            yield plan
            continue
        plan.due_at, plan.hold_reason = plan.policy.when(due_at, hold_reason, now)
        yield plan
