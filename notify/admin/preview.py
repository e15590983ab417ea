"""The rule preview page: what an event would do, with nothing written and
nothing sent.

The decisions come from the fan-out sequence itself
(``notify.fanout.preview.plan_preview``, which runs
``notify.fanout.sequence.plan_event`` without recording anything); this
surface adds the text: every channel's message for the first recipients is
rendered with ``notify.delivery.message.build_message``, the function the workers
render with. Nothing is written and no channel is opened.

What can differ from the real send: one-click unsubscribe links are signed
when the message is sent (their token holds the time), notification ids do
not exist yet, and preferences or data may change before the send.

``rule_preview`` is the admin page behind the "Preview / dry run" button of
a rule (``rules.admin.RuleAdmin.preview_view`` finds it by dotted path).

Personal data: a viewer without ``notify.view_personal_data`` (the ops group)
sees addresses, payloads and rendered messages masked, and no working
unsubscribe or verification link (``notify.preferences.masking``).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from jinja2.exceptions import TemplateError

from notify.delivery.message import build_message
from notify.fanout.payload import to_json
from notify.fanout.preview import (
    COUNTED_RECIPIENTS,
    SHOWN_RECIPIENTS,
    ChannelPreview,
    Preview,
    plan_preview,
)
from notify.intake.trigger import validate_event_type
from notify.models import Delivery, Event, Notification
from notify.preferences.decide import decide
from notify.preferences.masking import can_see_personal_data, mask_address, mask_data, mask_text
from notify.registry import describe
from notify.workflows.timeline import ENGAGEMENTS, Timeline, build_timeline
from rules.index import RULE_FIELDS, attach_steps, compile_rule
from rules.models import Rule


def preview_event(
    event: Event,
    *,
    focus: Rule | None = None,
    now: datetime | None = None,
    shown: int = SHOWN_RECIPIENTS,
) -> Preview:
    """Everything ``fan_out`` would decide for ``event``, and the rendered
    messages of the first ``shown`` recipients per matched rule."""
    preview = plan_preview(event, focus=focus, now=now, shown=shown)
    render_preview(preview)
    return preview


def render_preview(preview: Preview) -> None:
    """Fill in every previewed channel's message, whatever was decided (ops
    want to see the text of a channel the recipient has turned off, too)."""
    now = preview.now or timezone.now()
    for item in preview.matched:
        for person in item.recipients:
            notification = Notification(
                event=preview.event, rule=item.row, user=person.user, category=item.category_row
            )
            for channel in person.channels:
                render_channel(
                    channel,
                    Delivery(notification=notification, channel=channel.channel),
                    item.category,
                    person.prefs,
                    now,
                )


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


def mask_preview(preview: Preview) -> None:
    """What a viewer without ``notify.view_personal_data`` may see of a preview."""
    for item in preview.matched:
        for person in item.recipients:
            person.email = mask_address(person.email)
            for channel in person.channels:
                channel.address = mask_address(channel.address)
                channel.subject = mask_text(channel.subject)
                channel.text = mask_text(channel.text)
                channel.html = mask_text(channel.html)
                channel.error = mask_text(channel.error)


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
    # The workflow timeline (rules with steps): one user, simulated engagement.
    timeline_user = forms.IntegerField(
        required=False, min_value=1, help_text="Workflows: the user whose timeline to show."
    )
    engagement = forms.ChoiceField(
        required=False,
        choices=[("", "no engagement"), *((k, k) for k in ENGAGEMENTS)],
        help_text="Workflows: simulate that the user did this…",
    )
    engagement_minutes = forms.FloatField(
        required=False, min_value=0, help_text="…this many minutes after the event."
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        user = cleaned.get("timeline_user")
        if user and not get_user_model().objects.filter(pk=user).exists():
            self.add_error("timeline_user", f"There is no user #{user}.")
        if cleaned.get("engagement") and cleaned.get("engagement_minutes") is None:
            self.add_error("engagement_minutes", "Say when (minutes after the event).")
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


def rule_timeline(rule: Rule, event: Event, data: dict[str, Any]) -> Timeline | None:
    """The workflow timeline of ``rule`` for the chosen user (rules with steps;
    compiled from the rule's rows, so an inactive rule previews too)."""
    if not data.get("timeline_user"):
        return None
    row = Rule.objects.filter(pk=rule.pk).values(*RULE_FIELDS).first()
    if row is None:
        return None
    rows = [row]
    attach_steps(rows)
    if not rows[0]["steps"]:
        return None
    compiled = compile_rule(rows[0])
    return build_timeline(
        compiled,
        event,
        data["timeline_user"],
        engagement=data.get("engagement") or "",
        minutes=data.get("engagement_minutes"),
        now=event.received_at or timezone.now(),
    )


def rule_preview(model_admin: Any, request: HttpRequest, rule: Rule) -> HttpResponse:
    """The "Preview / dry run" page of one rule. Reading only: a GET with the
    form's fields runs the preview."""
    recent = list(
        Event.objects.filter(type=rule.event_type).order_by("-received_at")[:15]
        if not any(ch in rule.event_type for ch in "*?[")
        else Event.objects.order_by("-received_at")[:15]
    )
    personal = can_see_personal_data(request.user)
    shown = (lambda payload: payload) if personal else mask_data
    for event in recent:
        event.payload_json = json.dumps(shown(event.payload), ensure_ascii=False)
    initial: dict[str, Any] = {"source": "event" if recent else "payload"}
    if recent:
        initial["event"] = recent[0].pk
    if not any(ch in rule.event_type for ch in "*?["):
        initial["event_type"] = rule.event_type
    sample = shown(recent[0].payload) if recent else {}
    initial["payload"] = json.dumps(sample, indent=2, ensure_ascii=False)
    submitted = "source" in request.GET
    # A link runs a preview with a few fields; the others keep their defaults.
    data = {**{k: str(v) for k, v in initial.items()}, **request.GET.dict()} if submitted else None
    form = PreviewForm(data, initial=initial)
    preview = timeline = None
    if submitted and form.is_valid():
        event = form.build_event()
        preview = preview_event(event, focus=rule)
        if not personal:
            mask_preview(preview)
        timeline = rule_timeline(rule, event, form.cleaned_data)
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "original": rule,
        "title": f"Preview: {rule.name}",
        "form": form,
        "preview": preview,
        "timeline": timeline,
        "steps": list(rule.steps.all()) if rule.pk else [],
        "recent": recent,
        "shown_recipients": SHOWN_RECIPIENTS,
        "counted_recipients": COUNTED_RECIPIENTS,
        "has_view_permission": True,
        "personal_data_masked": not personal,
    }
    return TemplateResponse(request, "admin/rules/rule/preview.html", context)
