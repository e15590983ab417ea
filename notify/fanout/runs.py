"""Fan-out of a rule with workflow steps: runs, not deliveries.

A rule without steps writes its deliveries at fan-out as it always did (no
run rows, the fast path). A rule with steps writes one ``WorkflowRun`` per
recipient, due when the rule's own timing says (delay, payload time, active
window; ``plan.due_at``), and the runner (``notify.workflows.runner``) takes
it from there. Matching, the rule's condition, recipients and deduplication
apply here, before any run exists; preferences, quiet hours, fallback,
throttling and dry run apply at each channel step.

A workflow that starts with a batch step puts the event into the recipient's
open batch for its key instead (``notify.outbox.runs.join_batch``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from notify import conf
from notify.fanout.sequence import RulePlan, chunked
from notify.outbox.runs import join_batch, write_runs
from rules.conditions import ConditionError
from rules.workflow import BATCH


class BatchKeyError(ValueError):
    """A batch key that could not be evaluated for the event."""


@dataclass(slots=True)
class RunsStarted:
    runs: int = 0  # new runs
    joined: int = 0  # events added to an open batch


def batch_key(plan: RulePlan, context: dict[str, Any]) -> str:
    """The batch key's value for this event as a string ("" without a key
    expression: one batch per user). Long keys are hashed to fit the column."""
    step = plan.rule.steps[0]
    if step.batch_key is None:
        return "*"
    try:
        value = step.batch_key.evaluate(context)
    except ConditionError as exc:
        raise BatchKeyError(f"batch key not evaluated: {exc}") from exc
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    text = text or "*"
    if len(text) > 200:
        text = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return text


def start_runs(plan: RulePlan, context: dict[str, Any], now: datetime) -> RunsStarted:
    """Write the runs (or batch items) of one rule for every recipient."""
    started = RunsStarted()
    event, rule = plan.event, plan.rule
    first = rule.steps[0]
    if first.kind == BATCH:
        assert first.batch_window is not None
        key = batch_key(plan, context)
        for user_id in plan.recipients():
            joined = join_batch(
                event.pk, rule.id, user_id, key, first.batch_window, first.batch_max, now
            )
            if joined is not None:
                started.joined += 1
                started.runs += joined.opened
        return started
    due = plan.due_at or now
    for user_ids in chunked(plan.recipients(), conf.get("FANOUT_CHUNK_SIZE")):
        started.runs += write_runs(event.pk, rule.id, user_ids, due, now)
    return started
