"""A rule's ops controls at fan-out: deduplication, active window, fallback,
throttling and dry runs. The decisions are pure (``rules.dedup``,
``rules.windows``, ``rules.fallback``, ``rules.throttle``); this module is
their database edge and the glue ``notify.fanout.pipeline.fan_out`` calls, per
matched rule:

1. ``RulePolicy.start``: the deduplication key is evaluated and claimed (one
   upsert, only for rules with a key); a duplicate sets ``skip`` and the rule
   writes nothing for the event;
2. ``when``: outside the rule's active window the deliveries are held until
   it opens (``hold_reason`` ``outside_active_window``);
3. ``adjust``, per chunk: fallback channels, then throttling (one counting
   query per chunk, only for throttled rules), then the dry run;
4. ``written``, per chunk of a dry-run rule: the deliveries whose text is to
   be kept become references for the delivery stage (pending, ``skip_reason``
   ``dry_run``); the worker renders them as it would send them and records a
   skipped attempt instead of calling the channel (``notify.delivery.dry_run``).
   Fan-out itself renders nothing.

The admin preview (``notify.admin.preview``) runs the same steps with
``record=False``: the deduplication key is read, not claimed, and nothing is
written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Count
from django.utils import timezone

from notify.models import Delivery, Notification
from notify.models.status import Status
from notify.outbox.rows import PlannedNotification
from notify.preferences.decide import CategoryInfo
from notify.preferences.directory import users_filter
from rules import dedup
from rules.conditions import ConditionError
from rules.fallback import apply_fallback
from rules.index import CompiledRule
from rules.throttle import SCOPE_RULE, THROTTLED, over_limit, throttle_deliveries, window_start
from rules.windows import OUTSIDE_ACTIVE_WINDOW, next_open

DRY_RUN = "dry_run"
# Rendered (by the worker) and kept per (event, rule) of a dry-run rule; the
# rest are recorded as skipped without their text.
DRY_RUN_RENDER_LIMIT = 100


@dataclass(slots=True)
class RulePolicy:
    rule: CompiledRule
    skip: str = ""  # why the rule writes nothing for this event
    note: str = ""  # worth recording, not stopping
    failed: str = ""  # the deduplication key could not be evaluated: the rule failed
    duplicate_of: int | None = None  # the event that holds the deduplication key
    rendered: int = 0  # dry-run deliveries handed to the worker to render so far

    @classmethod
    def start(
        cls,
        rule: CompiledRule,
        event: Any,
        context: dict[str, Any],
        now: datetime,
        *,
        record: bool = True,
    ) -> RulePolicy:
        policy = cls(rule)
        if rule.dedup_key is None or not rule.dedup_window:
            return policy
        try:
            key = dedup.key_digest(rule.dedup_key.evaluate(context))
        except ConditionError as exc:
            # Sending anyway could notify everyone again for each duplicate:
            # the rule fails for this event, visibly (notify.fanout.pipeline).
            policy.failed = f"deduplication key not evaluated: {exc}"
            policy.skip = f"failed: {policy.failed}"
            return policy
        if key is None:
            return policy
        at = getattr(event, "received_at", None) or now
        if record:
            claim = dedup.claim(rule.id, key, event.pk, at, rule.dedup_window)
        else:
            claim = dedup.holder(rule.id, key, at)
            if claim is not None and claim.event_id == event.pk:
                claim = None
        if claim is not None and not claim.first:
            policy.duplicate_of = claim.event_id
            until = timezone.localtime(dedup.window_end(claim.first_seen_at, rule.dedup_window))
            policy.skip = (
                f"{dedup.DEDUPLICATED}: key {key[1]} was notified for event #{claim.event_id} "
                f"(window until {until:%Y-%m-%d %H:%M:%S %Z})"
            )
        return policy

    def when(
        self, due_at: datetime | None, hold_reason: str, now: datetime
    ) -> tuple[datetime | None, str]:
        """Hold the rule's deliveries until its active window opens."""
        opens = next_open(self.rule.active_window, due_at or now)
        if opens is None:
            return due_at, hold_reason
        return opens, OUTSIDE_ACTIVE_WINDOW

    def adjust(
        self,
        event_id: int | None,
        category: CategoryInfo,
        channels: dict[str, str | None],
        planned: Sequence[PlannedNotification],
        now: datetime,
    ) -> list[PlannedNotification]:
        rule = self.rule
        out = list(planned)
        if rule.fallback:
            fallback = dict(rule.fallback)
            out = [p._replace(deliveries=apply_fallback(p.deliveries, fallback)) for p in out]
        if rule.throttle is not None and out:
            user_ids = [p.user_id for p in out]
            counts = throttle_counts(rule, category.id, user_ids, now, event_id)
            over = over_limit(rule.throttle, user_ids, counts)
            if over:
                action = rule.throttle.action
                out = [
                    p._replace(deliveries=throttle_deliveries(p.deliveries, action, channels))
                    if p.user_id in over
                    else p
                    for p in out
                ]
        if rule.dry_run:
            out = [p._replace(deliveries=tuple(dry(d) for d in p.deliveries)) for p in out]
        return out

    def written(self, event: Any, user_ids: Sequence[int], prefs: object = None) -> int:
        """Hand the deliveries of a dry-run rule for these users (up to the
        render limit) to the delivery stage, which renders what they would have
        sent and keeps it; return how many. Only references cross: the rows
        turn pending, still marked ``dry_run``, and due now. (``prefs`` is not
        read: the worker decides with the preferences of send time.)"""
        if not self.rule.dry_run or self.rendered >= DRY_RUN_RENDER_LIMIT:
            return 0
        limit = DRY_RUN_RENDER_LIMIT - self.rendered
        ids = list(
            Delivery.objects.filter(
                notification__event_id=event.pk,
                notification__rule_id=self.rule.id,
                notification__user_id__in=list(user_ids),
                status=Status.SKIPPED,
                skip_reason=DRY_RUN,
                attempt_log__isnull=True,
            )
            .order_by("pk")
            .values_list("pk", flat=True)[:limit]
        )
        now = timezone.now()
        handed = Delivery.objects.filter(pk__in=ids).update(
            status=Status.PENDING, next_attempt_at=now, updated_at=now
        )
        self.rendered += handed
        return handed


def dry(delivery: Any) -> Any:
    """A delivery of a dry-run rule: whatever would have gone out (now, later or
    in a digest) is skipped as ``dry_run``; what preferences skip stays as it is."""
    if delivery.status in (Status.PENDING, Status.DIGEST):
        return delivery._replace(
            status=Status.SKIPPED, skip_reason=DRY_RUN, hold_reason="", due_at=None
        )
    return delivery


def throttle_counts(
    rule: CompiledRule,
    category_id: int,
    user_ids: Sequence[int],
    now: datetime,
    event_id: int | None = None,
) -> dict[int, int]:
    """Per user: notifications in the rule's throttle window (by this rule or in
    this category), the throttled ones left out. One query."""
    spec = rule.throttle
    assert spec is not None
    query = Notification.objects.filter(
        users_filter(user_ids), created_at__gt=window_start(now, spec)
    )
    if spec.scope == SCOPE_RULE:
        query = query.filter(rule_id=rule.id)
    else:
        query = query.filter(category_id=category_id)
    if event_id is not None:  # a fan-out run again does not count itself
        query = query.exclude(event_id=event_id)
    query = query.exclude(deliveries__skip_reason=THROTTLED)
    return dict(
        query.order_by().values("user_id").annotate(n=Count("id")).values_list("user_id", "n")
    )
