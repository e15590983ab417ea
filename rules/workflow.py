"""A rule's workflow steps, compiled once with the rule (``rules.index``).

Pure: step rows (dicts of ``WorkflowStep``'s fields) in, ``CompiledStep``
tuples out, or a ``ValueError`` naming the step and what is wrong. The runner
that executes them lives in the pipeline (``notify.workflows``).

The rules a workflow keeps, checked here so admin refuses them at save time:

* a batch step, if any, is the first step: events are collected into a batch
  when they arrive, before anything is sent;
* a channel appears in one channel step only (one delivery per notification
  and channel: a second step on the same channel would have nothing to write);
* a delay step says how long (fixed), or which payload time, or waits for the
  user's working hours.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from .conditions import (
    CONDITION_NAMES,
    CompiledCondition,
    CompiledExpression,
    ConditionError,
    compile_condition,
    compile_expression,
)

CHANNEL, DELAY, BATCH = "channel", "delay", "batch"
FIXED, PAYLOAD, WORKING_HOURS = "fixed", "payload", "working_hours"

# What a step's condition sees, besides the event: engagement with what the
# earlier steps sent (``seen``, ``read``, ``clicked``, ``opened``: of the
# notification, in any channel; ``delivered``: a delivery reported delivered),
# the recipient's preferences (``prefs``), the category and, in a batch, the batch.
STEP_CONDITION_NAMES = (
    *CONDITION_NAMES,
    "seen",
    "read",
    "clicked",
    "opened",
    "delivered",
    "prefs",
    "category",
    "batch",
)

STEP_FIELDS = (
    "id",
    "rule_id",
    "position",
    "kind",
    "condition",
    "channels",
    "message",
    "delay_mode",
    "delay",
    "delay_until_path",
    "batch_window",
    "batch_key",
    "batch_max",
)
# What ops edit in admin (``rules.forms``): all but the keys.
EDITABLE_STEP_FIELDS = STEP_FIELDS[2:]


class StepError(ValueError):
    """A step that cannot run; ``field`` names the field at fault ("" if none)."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class CompiledStep:
    position: int  # 0-based index in the workflow
    kind: str
    condition: CompiledCondition | None = None
    channels: tuple[str, ...] = ()
    message: str = ""  # empty: the rule's message
    delay_mode: str = FIXED
    delay: timedelta | None = None
    delay_until_path: str = ""
    batch_window: timedelta | None = None
    batch_key: CompiledExpression | None = None
    batch_max: int | None = None
    id: int | None = None  # the step row's id (a run follows its step by id)

    def describe(self) -> str:
        """One line for ops (admin, preview, run history)."""
        if self.kind == CHANNEL:
            text = f"send on {', '.join(self.channels) or 'the default channels'}"
        elif self.kind == DELAY:
            if self.delay_mode == PAYLOAD:
                text = f"wait until payload.{self.delay_until_path}"
                if self.delay:
                    text += f" {'+' if self.delay >= timedelta(0) else '-'} {abs(self.delay)}"
            elif self.delay_mode == WORKING_HOURS:
                text = "wait until the user's working hours"
            else:
                text = f"wait {self.delay}"
        else:
            text = f"collect for {self.batch_window}"
            if self.batch_key is not None:
                text += f" by {self.batch_key.source}"
            if self.batch_max:
                text += f", at most {self.batch_max}"
        if self.condition is not None:
            text += f" if {self.condition.source}"
        return text


def _where(row: dict[str, Any]) -> str:
    return f"step {int(row.get('position') or 0) + 1} ({row.get('kind') or '?'})"


def compile_step(row: dict[str, Any], position: int) -> CompiledStep:
    """One step row, checked; raises ``ValueError`` naming the step."""
    step = _compile_step(row, position)
    return replace(step, id=row["id"]) if row.get("id") is not None else step


def _compile_step(row: dict[str, Any], position: int) -> CompiledStep:
    kind = row.get("kind") or CHANNEL
    where = f"step {position + 1} ({kind})"
    try:
        condition = compile_condition(row.get("condition") or "", STEP_CONDITION_NAMES)
    except ConditionError as exc:
        raise StepError(f"{where}: condition: {exc}", "condition") from exc
    if kind == CHANNEL:
        channels = tuple(row.get("channels") or ())
        if not channels:
            raise StepError(f"{where}: name at least one channel", "channels")
        return CompiledStep(
            position, kind, condition, channels=channels, message=row.get("message") or ""
        )
    if kind == DELAY:
        mode = row.get("delay_mode") or FIXED
        delay = row.get("delay")
        path = (row.get("delay_until_path") or "").strip()
        if mode == FIXED and (delay is None or delay <= timedelta(0)):
            raise StepError(f"{where}: a fixed delay needs a positive duration", "delay")
        if mode == PAYLOAD and not path:
            raise StepError(
                f"{where}: say which payload time to wait for (e.g. starts_at)", "delay_until_path"
            )
        if mode not in (FIXED, PAYLOAD, WORKING_HOURS):
            raise StepError(f"{where}: unknown delay mode {mode!r}", "delay_mode")
        return CompiledStep(
            position, kind, condition, delay_mode=mode, delay=delay, delay_until_path=path
        )
    if kind == BATCH:
        window = row.get("batch_window")
        if window is None or window <= timedelta(0):
            raise StepError(f"{where}: a batch needs a positive window", "batch_window")
        try:
            key = compile_expression(row.get("batch_key") or "")
        except ConditionError as exc:
            raise StepError(f"{where}: batch key: {exc}", "batch_key") from exc
        cap = row.get("batch_max")
        if cap is not None and cap < 1:
            raise StepError(f"{where}: the maximum batch size must be at least 1", "batch_max")
        return CompiledStep(
            position, kind, condition, batch_window=window, batch_key=key, batch_max=cap or None
        )
    raise StepError(f"{where}: unknown kind {kind!r}", "kind")


def compile_steps(rows: Iterable[dict[str, Any]]) -> tuple[CompiledStep, ...]:
    """A rule's steps in order, checked as a whole; raises ``ValueError``."""
    ordered = sorted(rows, key=lambda r: (int(r.get("position") or 0), r.get("id") or 0))
    steps = tuple(compile_step(row, number) for number, row in enumerate(ordered))
    seen: dict[str, int] = {}
    for step in steps:
        if step.kind == BATCH and step.position != 0:
            raise ValueError(
                f"step {step.position + 1} (batch): a batch step must be the first step "
                "(events are collected as they arrive)"
            )
        for alias in step.channels:
            if alias in seen:
                raise ValueError(
                    f"step {step.position + 1} (channel): channel {alias!r} is already sent "
                    f"by step {seen[alias] + 1}; a channel can be in one step only"
                )
            seen[alias] = step.position
    if steps and not any(s.kind == CHANNEL for s in steps):
        raise ValueError("the workflow sends nothing: add a channel step")
    return steps
