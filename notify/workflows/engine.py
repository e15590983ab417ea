"""The workflow engine: which steps a run takes now, and when it is due next.

Pure: a run's position, its steps, what the recipient did with what was sent
(``Engagement``) and the time in; ``Advance`` out (a decision per step taken,
the channel steps to write, the next position and due time). The runner
(``notify.workflows.runner``) and the preview timeline
(``notify.workflows.timeline``) both call ``advance``, so what ops preview is
what runs.

A run goes from its position through the steps until a delay makes it wait or
the steps end:

* a batch step (always the first) is reached when its window has ended: the
  batch is closed with its items (``collected``);
* a step's condition, if any, is evaluated when the step runs; false skips it;
  an error fails the run (said in its history; never guessed);
* a delay step computes its time; a time to come makes the run wait;
* a channel step asks the edge to write its deliveries (preferences, quiet
  hours, fallback, throttling and dry run apply there, as at fan-out).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from notify.fanout.send_time import SendAtError, parse_send_at, payload_value
from rules.conditions import ConditionError
from rules.windows import WindowError, make_window, next_open
from rules.workflow import BATCH, CHANNEL, DELAY, PAYLOAD, WORKING_HOURS, CompiledStep

SENT, SKIPPED, WAITED, COLLECTED, CANCELLED, FAILED, MOVED = (
    "sent",
    "skipped",
    "waited",
    "collected",
    "cancelled",
    "failed",
    "moved",  # the run's step was deleted by ops: it goes on at another (the runner)
)
WAITING, DONE = "waiting", "done"


@dataclass(frozen=True, slots=True)
class Engagement:
    """What the recipient did with the run's notification, and when (any channel)."""

    seen_at: datetime | None = None
    read_at: datetime | None = None
    clicked_at: datetime | None = None
    opened_at: datetime | None = None
    delivered: tuple[tuple[str, datetime], ...] = ()  # (channel, when)

    def context(self, now: datetime) -> dict[str, Any]:
        """The condition names, as of ``now`` (the preview simulates times to come)."""

        def happened(at: datetime | None) -> bool:
            return at is not None and at <= now

        read = happened(self.read_at) or happened(self.clicked_at)
        return {
            "read": read,
            "seen": read or happened(self.seen_at) or happened(self.opened_at),
            "clicked": happened(self.clicked_at),
            "opened": happened(self.opened_at) or happened(self.clicked_at),
            "delivered": any(at <= now for _, at in self.delivered),
        }

    def first(self, now: datetime) -> tuple[str, datetime] | None:
        """The earliest engagement up to ``now`` (for "skipped because read at +12 min")."""
        found = [
            (name, at)
            for name, at in (
                ("read", self.read_at),
                ("clicked", self.clicked_at),
                ("opened", self.opened_at),
                ("seen", self.seen_at),
            )
            if at is not None and at <= now
        ]
        return min(found, key=lambda item: item[1]) if found else None


@dataclass(slots=True)
class Decision:
    position: int
    kind: str
    decision: str
    reason: str = ""
    at: datetime | None = None
    until: datetime | None = None
    channels: tuple[str, ...] = ()
    message: str = ""


@dataclass(slots=True)
class Advance:
    """What a run does now: its decisions in order, where it stops, when it is due."""

    decisions: list[Decision] = field(default_factory=list)
    position: int = 0
    state: str = WAITING
    due_at: datetime | None = None
    reason: str = ""

    @property
    def sends(self) -> list[Decision]:
        return [d for d in self.decisions if d.decision == SENT]


@dataclass(frozen=True, slots=True)
class RunInput:
    """Everything ``advance`` reads about a run besides its steps."""

    position: int
    context: dict[str, Any]  # payload, event, actor, prefs, category, batch
    engagement: Engagement
    timezone: str = "UTC"
    started_at: datetime | None = None  # when the run was made (relative times in reasons)


def delay_until(
    step: CompiledStep, payload: Any, zone: str, now: datetime, hours: dict
) -> datetime:
    """When a delay step ends; raises ``SendAtError`` for a payload time that is
    missing or invalid, ``WindowError`` for bad working hours."""
    if step.delay_mode == PAYLOAD:
        try:
            at = parse_send_at(payload_value(payload, step.delay_until_path))
        except KeyError:
            raise SendAtError(f"the payload has no '{step.delay_until_path}'") from None
        return at + (step.delay or timedelta(0))
    if step.delay_mode == WORKING_HOURS:
        window = make_window(
            hours.get("days", [0, 1, 2, 3, 4]),
            _time(hours.get("from", "09:00")),
            _time(hours.get("until", "17:00")),
            zone if _zone_ok(zone) else "UTC",
        )
        return next_open(window, now) or now
    return now + (step.delay or timedelta(0))


def _time(value: Any) -> time:
    return value if isinstance(value, time) else time.fromisoformat(str(value))


def _zone_ok(zone: str) -> bool:
    try:
        ZoneInfo(zone)
    except Exception:
        return False
    return True


def relative(at: datetime, start: datetime | None) -> str:
    """``+12 min``, ``+2 h``, ``+1 h 30 min`` after ``start`` (or the time itself)."""
    if start is None:
        return at.strftime("%Y-%m-%d %H:%M UTC")
    minutes = round((at - start).total_seconds() / 60)
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    if hours and mins:
        return f"{sign}{hours} h {mins} min"
    if hours:
        return f"{sign}{hours} h"
    return f"{sign}{mins} min"


def advance(
    steps: tuple[CompiledStep, ...], run: RunInput, now: datetime, working_hours: dict | None = None
) -> Advance:
    """Run the steps from ``run.position`` until one makes the run wait, or the end."""
    result = Advance(position=run.position)
    position = run.position
    context = {**run.context, **run.engagement.context(now)}
    while position < len(steps):
        step = steps[position]
        if step.kind == BATCH:
            count = (run.context.get("batch") or {}).get("count", 1)
            result.decisions.append(
                Decision(position, BATCH, COLLECTED, f"{count} event(s) collected", now)
            )
            position += 1
            continue
        if step.condition is not None:
            try:
                holds = step.condition.evaluate(context)
            except ConditionError as exc:
                result.decisions.append(Decision(position, step.kind, FAILED, str(exc)[:300], now))
                result.position, result.state, result.reason = position, FAILED, str(exc)[:200]
                return result
            if not holds:
                result.decisions.append(
                    Decision(position, step.kind, SKIPPED, _why_skipped(step, run, now), now)
                )
                position += 1
                continue
        if step.kind == DELAY:
            payload = run.context.get("payload")
            try:
                until = delay_until(step, payload, run.timezone, now, working_hours or {})
            except (SendAtError, WindowError) as exc:
                reason = f"delay: {exc}"[:300]
                result.decisions.append(Decision(position, DELAY, FAILED, reason, now))
                result.position, result.state, result.reason = position, FAILED, reason[:200]
                return result
            position += 1
            if until > now:
                result.decisions.append(
                    Decision(position - 1, DELAY, WAITED, step.describe(), now, until)
                )
                result.position, result.state, result.due_at = position, WAITING, until
                return result
            result.decisions.append(
                Decision(position - 1, DELAY, WAITED, f"{step.describe()}: already passed", now)
            )
            continue
        if step.kind == CHANNEL:
            result.decisions.append(
                Decision(
                    position,
                    CHANNEL,
                    SENT,
                    step.describe(),
                    now,
                    channels=step.channels,
                    message=step.message,
                )
            )
        position += 1
    result.position, result.state = position, DONE
    return result


def _why_skipped(step: CompiledStep, run: RunInput, now: datetime) -> str:
    """The reason ops read: the condition, and the engagement that made it false."""
    assert step.condition is not None
    what = " and ".join(step.channels) if step.channels else f"step {step.position + 1}"
    reason = f"{what} skipped: condition false ({step.condition.source})"
    first = run.engagement.first(now)
    if first is not None:
        name, at = first
        item = "in-app item" if name in ("read", "seen") else "message"
        reason = (
            f"{what} skipped because the {item} was {name} at {relative(at, run.started_at)} "
            f"({step.condition.source})"
        )
    return reason[:300]
