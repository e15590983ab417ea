"""Preview: what an event would do, with nothing written and nothing sent.

``preview_event`` runs the fan-out's own stages on one event — match (every
candidate rule, with why it did not match), recipients, preferences
(``load_preferences`` + ``decide`` through ``plan_chunk``), the rule's ops
controls (``RulePolicy`` with ``record=False``: a deduplication key is read,
not claimed) — and renders every channel's message for the first recipients
with ``dispatch.build_message``, the function the workers render with. The
event is a stored one (a past event) or an unsaved one built from a pasted
payload. Nothing is written and no channel is opened.

What can differ from the real send: one-click unsubscribe links are signed
when the message is sent (their token holds the time), notification ids do
not exist yet, and preferences or data may change before the send.

``rule_preview`` is the admin page behind the "Preview / dry run" button of
a rule (``rules.admin.RuleAdmin.preview_view`` finds it by dotted path).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from jinja2.exceptions import TemplateError

from notify.delivery.send import build_message
from notify.fanout.payload import to_json
from notify.fanout.pipeline import EXPLICIT, condition_context, plan_chunk, rule_channels
from notify.fanout.policies import RulePolicy
from notify.fanout.send_time import SendAtError, send_time
from notify.intake.trigger import validate_event_type
from notify.models import Category, Delivery, Event, Notification
from notify.models.status import Status
from notify.preferences.decide import decide
from notify.preferences.directory import DatabaseDirectory, category_info, load_preferences
from notify.registry import describe
from rules.index import (
    RULE_FIELDS,
    CompiledRule,
    RuleMatch,
    build_index,
    compile_rule,
    rule_index,
)
from rules.models import Rule
from rules.recipients import EventRecipients, resolve_recipients

SHOWN_RECIPIENTS = 20
COUNTED_RECIPIENTS = 1000


@dataclass
class ChannelPreview:
    channel: str
    status: str
    skip_reason: str = ""
    hold_reason: str = ""
    due_at: datetime | None = None
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


@dataclass
class Preview:
    event: Event
    rules: list[RulePreview] = field(default_factory=list)

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


def preview_event(
    event: Event,
    *,
    focus: Rule | None = None,
    now: datetime | None = None,
    shown: int = SHOWN_RECIPIENTS,
) -> Preview:
    """Everything ``fan_out`` would decide for ``event``, and the rendered
    messages of the first ``shown`` recipients per matched rule."""
    now = now or timezone.now()
    preview = Preview(event)
    context = condition_context(event)
    matches = list(rule_index.get().match(event.type, context))
    if focus is not None and all(m.rule.id != focus.pk for m in matches):
        extra = focus_match(focus, event, context)
        if extra is not None:
            matches.append(extra)
    rule_rows = {r.pk: r for r in Rule.objects.filter(pk__in=[m.rule.id for m in matches])}
    categories = {
        c.pk: c for c in Category.objects.filter(pk__in={m.rule.category_id for m in matches})
    }
    directory = DatabaseDirectory()
    recipients = EventRecipients(
        payload=event.payload if isinstance(event.payload, dict) else {},
        actor_id=event.actor_id,
        explicit=tuple(event.recipients or ()),
        object_ref=event.object_ref,
    )
    for match in matches:
        row = rule_rows.get(match.rule.id)
        item = RulePreview(
            match.rule,
            match.matched,
            match.reason,
            focus=focus is not None and match.rule.id == focus.pk,
            inactive=row is not None and not row.is_active,
        )
        preview.rules.append(item)
        if match.matched and row is not None:
            plan_rule(
                item,
                row,
                categories.get(row.category_id),
                event,
                context,
                recipients,
                directory,
                now,
                shown,
            )
    return preview


def plan_rule(
    item: RulePreview,
    row: Rule,
    category_row: Category | None,
    event: Event,
    context: dict[str, Any],
    recipients: EventRecipients,
    directory: DatabaseDirectory,
    now: datetime,
    shown: int,
) -> None:
    rule = item.rule
    channels = rule_channels(rule)
    if category_row is None or not channels:
        item.notes.append("no category or no configured channel: the rule writes nothing")
        return
    try:
        due_at, hold_reason = send_time(rule, event.payload, now)
    except SendAtError as exc:
        item.notes.append(f"{exc}; nothing would be sent for this rule")
        return
    policy = RulePolicy.start(rule, event, context, now, record=False)
    if policy.note:
        item.notes.append(policy.note)
    if policy.skip:
        item.notes.append(f"{policy.skip}: nobody would be notified again")
        return
    due_at, hold_reason = policy.when(due_at, hold_reason, now)
    if rule.dry_run:
        item.notes.append("dry run: deliveries are recorded as skipped (dry_run), nothing is sent")
    user_ids = []
    for user_id in resolve_recipients(
        rule.recipients or EXPLICIT, recipients, directory, exclude_actor=rule.exclude_actor
    ):
        user_ids.append(user_id)
        if len(user_ids) > COUNTED_RECIPIENTS:
            item.more = True
            break
    item.recipient_count = min(len(user_ids), COUNTED_RECIPIENTS)
    chunk = user_ids[:shown]
    if not chunk:
        return
    category = category_info(category_row)
    prefs = load_preferences(chunk, [category.id], {k for k in channels.values() if k})
    planned = plan_chunk(
        chunk, category, channels, prefs, now, due_at=due_at, hold_reason=hold_reason
    )
    planned = policy.adjust(event.pk, category, channels, planned, now)
    users = get_user_model().objects.in_bulk(chunk)
    for plan in planned:
        user = users.get(plan.user_id)
        if user is None:
            continue
        shown_user = RecipientPreview(plan.user_id, user.get_username(), getattr(user, "email", ""))
        notification = Notification(event=event, rule=row, user=user, category=category_row)
        user_prefs = prefs.get(plan.user_id)
        for d in plan.deliveries:
            channel = ChannelPreview(d.channel, d.status, d.skip_reason, d.hold_reason, d.due_at)
            render_channel(
                channel,
                Delivery(notification=notification, channel=d.channel),
                category,
                user_prefs,
                now,
            )
            shown_user.channels.append(channel)
        item.recipients.append(shown_user)


def render_channel(
    channel: ChannelPreview, delivery: Delivery, category: Any, prefs: Any, now: datetime
) -> None:
    """Render what this channel would send, whatever was decided (ops want to
    see the text of a channel the recipient has turned off, too)."""
    try:
        address_kind, message_format = describe(channel.channel)
        address, locale = "", ""
        if prefs is not None:
            locale = prefs.locale
            address = decide(category, channel.channel, address_kind, prefs, now).address
        message = build_message(delivery, message_format, address, locale)
    except TemplateError as exc:
        channel.error = f"the template does not render: {exc}"
        return
    except Exception as exc:  # a channel that is not configured properly
        channel.error = f"{type(exc).__name__}: {exc}"
        return
    channel.address = message.to
    channel.subject, channel.text, channel.html = message.subject, message.text, message.html


# -- the admin page -----------------------------------------------------------------------


class PreviewForm(forms.Form):
    SOURCES = (("event", "a past event"), ("payload", "a payload"))

    source = forms.ChoiceField(choices=SOURCES, widget=forms.RadioSelect, initial="event")
    event = forms.IntegerField(
        required=False, min_value=1, help_text="The id of a stored event (see the list below)."
    )
    event_type = forms.CharField(required=False, max_length=200)
    payload = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 8, "cols": 80, "style": "font-family: monospace"}),
        help_text="A JSON object.",
    )
    actor = forms.IntegerField(required=False, min_value=1, help_text="The acting user's id.")
    recipients = forms.CharField(
        required=False, help_text="Explicit recipients: user ids or emails, separated by commas."
    )
    object_ref = forms.CharField(
        required=False,
        max_length=200,
        help_text="What the event is about (app_label.model:pk), for 'followers'.",
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if cleaned.get("source") == "event":
            if not cleaned.get("event"):
                self.add_error("event", "Pick a stored event (its id).")
            elif not Event.objects.filter(pk=cleaned["event"]).exists():
                self.add_error("event", f"There is no event #{cleaned['event']}.")
            return cleaned
        try:
            validate_event_type(cleaned.get("event_type") or "")
        except ValidationError as exc:
            self.add_error("event_type", exc)
        try:
            payload = json.loads(cleaned.get("payload") or "{}")
        except json.JSONDecodeError as exc:
            self.add_error("payload", f"Not valid JSON: {exc}")
        else:
            if not isinstance(payload, dict):
                self.add_error(
                    "payload", 'The payload must be a JSON object, e.g. {"order_id": 7}.'
                )
            else:
                try:
                    cleaned["payload_data"] = to_json(payload)
                except ValidationError as exc:
                    self.add_error("payload", exc)
        actor = cleaned.get("actor")
        if actor and not get_user_model().objects.filter(pk=actor).exists():
            self.add_error("actor", f"There is no user #{actor}.")
        return cleaned

    def build_event(self) -> Event:
        data = self.cleaned_data
        if data["source"] == "event":
            return Event.objects.select_related("actor").get(pk=data["event"])
        refs: list[Any] = []
        for part in (data.get("recipients") or "").split(","):
            part = part.strip()
            if part:
                refs.append(int(part) if part.isdigit() else part)
        actor = (
            get_user_model().objects.filter(pk=data["actor"]).first() if data.get("actor") else None
        )
        return Event(
            type=data["event_type"],
            payload=data.get("payload_data", {}),
            actor=actor,
            recipients=refs,
            object_ref=(data.get("object_ref") or "").strip(),
            source=Event.Source.PYTHON,
            received_at=timezone.now(),
        )


def rule_preview(model_admin: Any, request: HttpRequest, rule: Rule) -> HttpResponse:
    """The "Preview / dry run" page of one rule. Reading only: a GET with the
    form's fields runs the preview."""
    recent = list(
        Event.objects.filter(type=rule.event_type).order_by("-received_at")[:15]
        if not any(ch in rule.event_type for ch in "*?[")
        else Event.objects.order_by("-received_at")[:15]
    )
    for event in recent:
        event.payload_json = json.dumps(event.payload, ensure_ascii=False)
    initial: dict[str, Any] = {"source": "event" if recent else "payload"}
    if recent:
        initial["event"] = recent[0].pk
    if not any(ch in rule.event_type for ch in "*?["):
        initial["event_type"] = rule.event_type
    sample = recent[0].payload if recent else {}
    initial["payload"] = json.dumps(sample, indent=2, ensure_ascii=False)
    submitted = "source" in request.GET
    # A link runs a preview with a few fields; the others keep their defaults.
    data = {**{k: str(v) for k, v in initial.items()}, **request.GET.dict()} if submitted else None
    form = PreviewForm(data, initial=initial)
    preview = None
    if submitted and form.is_valid():
        preview = preview_event(form.build_event(), focus=rule)
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "original": rule,
        "title": f"Preview: {rule.name}",
        "form": form,
        "preview": preview,
        "recent": recent,
        "shown_recipients": SHOWN_RECIPIENTS,
        "counted_recipients": COUNTED_RECIPIENTS,
        "has_view_permission": True,
    }
    return TemplateResponse(request, "admin/rules/rule/preview.html", context)
