"""Preview: what an event would do, with nothing written and nothing sent.

``plan_preview`` runs the fan-out sequence (``notify.fanout.sequence.plan_event``)
on one event with ``record=False`` (a deduplication key is read, not claimed)
and keeps what it decides: every candidate rule (with why it did not match),
the recipients (counted up to ``COUNTED_RECIPIENTS``), and for the first
``shown`` of them each channel's decision and reason. The event is a stored one
(a past event) or an unsaved one built from a pasted payload.

Rendering the previewed messages is the admin surface's part
(``notify.admin.preview.render_preview``, through delivery's message
building): fan-out never renders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone

from notify.fanout import sequence
from notify.fanout.context import condition_context
from notify.models import Category, Event
from notify.models.status import Status
from notify.preferences.decide import CategoryInfo, UserPrefs
from rules.index import (
    RULE_FIELDS,
    CompiledRule,
    RuleMatch,
    build_index,
    compile_rule,
    rule_index,
)
from rules.models import Rule

SHOWN_RECIPIENTS = 20
COUNTED_RECIPIENTS = 1000


@dataclass
class ChannelPreview:
    channel: str
    status: str
    skip_reason: str = ""
    hold_reason: str = ""
    due_at: datetime | None = None
    # What the channel would send, filled in by the admin surface's renderer.
    address: str = ""
    subject: str = ""
    text: str = ""
    html: str = ""
    error: str = ""

    @property
    def decision(self) -> str:
        if self.status == Status.PENDING and self.due_at is not None:
            return f"held until {timezone.localtime(self.due_at):%Y-%m-%d %H:%M %Z} ({self.hold_reason})"
        if self.status == Status.PENDING:
            return "send now"
        if self.status == Status.DIGEST:
            return f"held for the digest ({self.skip_reason})"
        return f"skipped: {self.skip_reason}"


@dataclass
class RecipientPreview:
    user_id: int
    username: str
    email: str
    channels: list[ChannelPreview] = field(default_factory=list)
    user: Any = None  # the user row, for rendering
    prefs: UserPrefs | None = None  # their preferences as loaded for the decisions


@dataclass
class RulePreview:
    rule: CompiledRule
    matched: bool
    reason: str = ""
    focus: bool = False
    inactive: bool = False
    notes: list[str] = field(default_factory=list)
    recipients: list[RecipientPreview] = field(default_factory=list)
    recipient_count: int = 0
    more: bool = False  # more than COUNTED_RECIPIENTS
    row: Rule | None = None  # for rendering
    category: CategoryInfo | None = None
    category_row: Category | None = None


@dataclass
class Preview:
    event: Event
    rules: list[RulePreview] = field(default_factory=list)
    now: datetime | None = None  # when the decisions were made

    @property
    def matched(self) -> list[RulePreview]:
        return [r for r in self.rules if r.matched]


def focus_match(rule: Rule, event: Event, context: dict[str, Any]) -> RuleMatch:
    """The previewed rule's own verdict when the index leaves it out
    (inactive, or another event type): evaluated as if it were active."""
    row = {name: getattr(rule, name) for name in RULE_FIELDS}
    index = build_index([row])
    if rule.pk in index.broken:
        placeholder = CompiledRule(
            rule.pk, rule.name, rule.event_type, None, rule.category_id, (), (), rule.message
        )
        return RuleMatch(placeholder, False, f"the rule does not compile: {index.broken[rule.pk]}")
    found = index.match(event.type, context)
    if found:
        return found[0]
    compiled = compile_rule(row)
    return RuleMatch(compiled, False, f"the rule is for '{rule.event_type}', not '{event.type}'")


def plan_preview(
    event: Event,
    *,
    focus: Rule | None = None,
    now: datetime | None = None,
    shown: int = SHOWN_RECIPIENTS,
) -> Preview:
    """Everything ``fan_out`` would decide for ``event``, for the first
    ``shown`` recipients per matched rule. Writes nothing."""
    now = now or timezone.now()
    preview = Preview(event, now=now)
    context = condition_context(event)
    matches = list(rule_index.get().match(event.type, context))
    if focus is not None and all(m.rule.id != focus.pk for m in matches):
        extra = focus_match(focus, event, context)
        if extra is not None:
            matches.append(extra)
    rule_rows = {r.pk: r for r in Rule.objects.filter(pk__in=[m.rule.id for m in matches])}
    for plan in sequence.plan_event(event, now=now, matches=matches, record=False):
        row = rule_rows.get(plan.rule.id)
        item = RulePreview(
            plan.rule,
            plan.match.matched,
            plan.match.reason,
            focus=focus is not None and plan.rule.id == focus.pk,
            inactive=row is not None and not row.is_active,
            row=row,
            category=plan.category,
            category_row=plan.category_row,
        )
        preview.rules.append(item)
        if plan.match.matched and row is not None:
            preview_rule(item, plan, shown)
    return preview


def preview_rule(item: RulePreview, plan: sequence.RulePlan, shown: int) -> None:
    """One matched rule's notes, recipient count and first recipients' decisions."""
    if plan.stop == sequence.NO_ROUTE:
        item.notes.append("no category or no configured channel: the rule writes nothing")
        return
    if plan.stop in (sequence.BAD_SEND_TIME, sequence.DEDUP_FAILED):
        item.notes.append(f"fails for this event: {plan.why}; nothing would be sent for this rule")
        return
    policy = plan.policy
    if policy is not None and policy.note:
        item.notes.append(policy.note)
    if plan.stop == sequence.DUPLICATE:
        item.notes.append(f"{plan.why}: nobody would be notified again")
        return
    if plan.rule.dry_run:
        item.notes.append("dry run: deliveries are recorded as skipped (dry_run), nothing is sent")
    user_ids = []
    for user_id in plan.recipients():
        user_ids.append(user_id)
        if len(user_ids) > COUNTED_RECIPIENTS:
            item.more = True
            break
    item.recipient_count = min(len(user_ids), COUNTED_RECIPIENTS)
    chunk = user_ids[:shown]
    if not chunk:
        return
    planned = plan.plan(chunk)
    users = get_user_model().objects.in_bulk(chunk)
    for notification in planned.planned:
        user = users.get(notification.user_id)
        if user is None:
            continue
        person = RecipientPreview(
            notification.user_id,
            user.get_username(),
            getattr(user, "email", ""),
            user=user,
            prefs=planned.prefs.get(notification.user_id),
        )
        person.channels = [
            ChannelPreview(d.channel, d.status, d.skip_reason, d.hold_reason, d.due_at)
            for d in notification.deliveries
        ]
        item.recipients.append(person)
