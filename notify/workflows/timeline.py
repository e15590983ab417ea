"""The preview timeline: what a rule's workflow would do for one user and one
payload, step by step, with simulated engagement ("read at +12 min").

Nothing is written or sent. The decisions come from the engine the runner
uses (``notify.workflows.engine.advance``), called at each time the run would
wake; each channel step shows what the user's current preferences would
decide per channel (``notify.fanout.sequence.plan_chunk``, as the runner
plans it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from notify import conf
from notify.fanout.context import condition_context
from notify.fanout.sequence import plan_chunk, rule_channels
from notify.models import Category, Event
from notify.models.status import Status
from notify.preferences.directory import category_info, load_preferences
from notify.workflows.engine import (
    COLLECTED,
    DONE,
    SENT,
    WAITING,
    Engagement,
    RunInput,
    advance,
    relative,
)
from notify.workflows.runner import prefs_context
from rules.index import CompiledRule
from rules.workflow import BATCH

ENGAGEMENTS = ("seen", "read", "clicked", "opened")
MAX_WAKES = 50


@dataclass
class TimelineEntry:
    at: datetime
    offset: str  # "+30 min"
    step: int  # 1-based
    kind: str
    decision: str
    reason: str
    channels: list[str] = field(default_factory=list)  # "email: send now", ...


@dataclass
class Timeline:
    user_id: int
    start: datetime
    engagement: str = ""  # "read at +12 min", as simulated
    entries: list[TimelineEntry] = field(default_factory=list)
    end: str = ""


def simulated(kind: str, minutes: float | None, start: datetime) -> Engagement:
    """An engagement of ``kind`` at ``start`` + ``minutes`` (none without both)."""
    if kind not in ENGAGEMENTS or minutes is None:
        return Engagement()
    return Engagement(**{f"{kind}_at": start + timedelta(minutes=minutes)})


def channel_outcomes(
    rule: CompiledRule, category: Any, channels: tuple[str, ...], prefs: Any, at: datetime
) -> list[str]:
    aliases = rule_channels(rule, channels)
    planned = plan_chunk([prefs.user_id], category, aliases, {prefs.user_id: prefs}, at)
    out = []
    for d in planned[0].deliveries if planned else ():
        if d.status == Status.PENDING and d.due_at is not None:
            out.append(f"{d.channel}: held until {d.due_at:%H:%M} UTC ({d.hold_reason})")
        elif d.status == Status.PENDING:
            out.append(f"{d.channel}: send")
        elif d.status == Status.DIGEST:
            out.append(f"{d.channel}: into the digest ({d.skip_reason})")
        else:
            out.append(f"{d.channel}: skipped ({d.skip_reason})")
    missing = [a for a in channels if a not in aliases]
    out += [f"{a}: not configured" for a in missing]
    return out


def build_timeline(
    rule: CompiledRule,
    event: Event,
    user_id: int,
    *,
    engagement: str = "",
    minutes: float | None = None,
    now: datetime | None = None,
) -> Timeline:
    """Simulate the run of ``rule`` for ``user_id`` from ``now`` to its end."""
    start = now or event.received_at
    category_row = Category.objects.get(pk=rule.category_id)
    category = category_info(category_row)
    kinds = {k for k in rule_channels(rule, [a for s in rule.steps for a in s.channels]).values()}
    prefs = load_preferences([user_id], [category.id], {k for k in kinds if k}).get(user_id)
    sim = simulated(engagement, minutes, start)
    timeline = Timeline(user_id, start)
    if sim != Engagement():
        timeline.engagement = (
            f"{engagement} at {relative(start + timedelta(minutes=minutes or 0), start)}"
        )
    if prefs is None:
        timeline.end = "no such active user"
        return timeline
    context = condition_context(event)
    context["prefs"] = prefs_context(prefs, category)
    context["category"] = {
        "key": category.key,
        "name": category_row.name,
        "critical": category.critical,
    }
    context["batch"] = {"count": 1, "actors": [], "others": 0, "summary": "", "events": []}
    position, at = 0, start
    if rule.steps and rule.steps[0].kind == BATCH:
        window = rule.steps[0].batch_window or timedelta(0)
        timeline.entries.append(
            TimelineEntry(
                at,
                relative(at, start),
                1,
                BATCH,
                "collecting",
                f"{rule.steps[0].describe()}: this event opens a batch",
            )
        )
        at = start + window
    for _ in range(MAX_WAKES):
        result = advance(
            rule.steps,
            RunInput(position, context, sim, prefs.timezone, start),
            at,
            conf.get("WORKFLOW_WORKING_HOURS"),
        )
        for d in result.decisions:
            entry = TimelineEntry(
                at, relative(at, start), d.position + 1, d.kind, d.decision, d.reason
            )
            if d.decision == SENT:
                entry.channels = channel_outcomes(rule, category, d.channels, prefs, at)
            if d.decision == COLLECTED:
                entry.reason = "the batch window ends: the batch is sent as one notification"
            timeline.entries.append(entry)
        if result.state != WAITING or result.due_at is None:
            timeline.end = "done" if result.state == DONE else f"{result.state}: {result.reason}"
            break
        position, at = result.position, result.due_at
    return timeline
