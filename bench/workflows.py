"""Workflows: N runs come due at once; 2 runner processes advance them.

Setup seeds N users (``--recipients``, 100,000 by default) and a workflow
rule: wait 30 minutes, then in-app "if not read". Each run fans out one event
to all of them (untimed: N runs), moves every run past its delay, due in the
future, and starts two runner processes (``bench.workflow_runner``, each
looping ``advance_due_runs``: lock a chunk of due runs with ``SKIP LOCKED``,
load engagement and preferences, evaluate the condition, plan the chunk's
in-app deliveries and write them with fan-out's writer, write the runs' next
state and history, commit). Then every run is made due at once (the goal's
"100,000 runs due in one minute", all in its first instant) and the clock
runs until none is open: steps per second.

The baseline, in the same run: the same N in-app deliveries written by a
one-step rule's fan-out (``write_fanout_chunk``, today's path), so the figure
says what the workflow's bookkeeping costs over writing the same rows.
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from typing import Any

from django.db import connections
from django.utils import timezone

from bench.fanout import seed_users
from bench.measure import Stopwatch
from bench.processes import BenchProcess, bench_env
from bench.registry import Context, Figure, Workload, register
from notify.fanout.pipeline import process_event
from notify.models import Category, Delivery, Event, Notification, WorkflowRun, WorkflowStepLog
from notify.models.status import Status
from notify.outbox.rows import PlannedDelivery, PlannedNotification, write_fanout_chunk
from rules.index import rule_index
from rules.models import Rule, WorkflowStep

EVENT_TYPE = "bench.workflow"
GROUP = "bench-workflow"
RUNNERS = 2
FAR = timedelta(days=365)


def setup(ctx: Context) -> dict[str, Any]:
    ctx.say(f"workflows: seeding {ctx.recipients:,} users")
    category = Category.objects.create(key="bench-workflow", name="Bench workflow")
    ids = seed_users("wf", ctx.recipients, {GROUP: ctx.recipients})
    rule = Rule.objects.create(
        name="bench workflow",
        event_type=EVENT_TYPE,
        category=category,
        recipients=[f"group:{GROUP}"],
        channels=["inapp"],
        message="order_shipped",
    )
    WorkflowStep.objects.create(rule=rule, position=0, kind="delay", delay=timedelta(minutes=30))
    WorkflowStep.objects.create(
        rule=rule, position=1, kind="channel", channels=["inapp"], condition="not read"
    )
    rule_index.clear()
    return {"category": category.pk, "rule": rule.pk, "users": ids}


def start_runners() -> list[BenchProcess]:
    connections.close_all()
    env = bench_env()
    argv = [sys.executable, "-m", "bench.workflow_runner"]
    runners = [
        BenchProcess(f"workflow-runner-{n}", argv, env, "runner ready").start()
        for n in range(RUNNERS)
    ]
    for runner in runners:
        runner.wait_ready(120)
    return runners


def open_runs() -> int:
    return WorkflowRun.objects.filter(state__in=WorkflowRun.OPEN).count()


def run(ctx: Context, state: dict[str, Any]) -> dict[str, Any]:
    WorkflowRun.objects.all().delete()
    Event.objects.filter(type=EVENT_TYPE).delete()
    event = Event.objects.create(type=EVENT_TYPE, payload={"order_id": "W-1"})
    with Stopwatch() as fan:
        process_event(event.pk)  # untimed in the figures below: N runs at step 1
    runs = WorkflowRun.objects.filter(event=event)
    count = runs.count()
    runs.update(step=1, due_at=timezone.now() + FAR)  # past the delay, not yet due
    runners = start_runners()
    try:
        steps_before = WorkflowStepLog.objects.count()
        with Stopwatch() as watch:
            runs.update(due_at=timezone.now())
            while open_runs():  # a count of the open runs: every 0.25 s, not to load the server
                time.sleep(0.25)
        steps = WorkflowStepLog.objects.count() - steps_before
    finally:
        for runner in runners:
            runner.stop()
    written = Delivery.objects.filter(notification__event=event, channel="inapp").count()
    baseline = baseline_fanout(state, count)
    seconds = watch.seconds
    return {
        "runs": count,
        "steps": steps,
        "deliveries": written,
        "seconds": seconds,
        "steps_per_second": steps / seconds if seconds else 0.0,
        "fanout_seconds": fan.seconds,
        "baseline": baseline,
        "ratio": seconds / baseline["seconds"] if baseline["seconds"] else 0.0,
    }


def baseline_fanout(state: dict[str, Any], count: int) -> dict[str, Any]:
    """The same N in-app deliveries, written the one-step way (no runs)."""
    event = Event.objects.create(type="bench.workflow_baseline", payload={"order_id": "W-0"})
    users = state["users"][:count]
    planned = [
        PlannedNotification(user_id, (PlannedDelivery("inapp", Status.PENDING),))
        for user_id in users
    ]
    now = timezone.now()
    with Stopwatch() as watch:
        for start in range(0, len(planned), 2000):
            write_fanout_chunk(
                event.pk, state["rule"], state["category"], planned[start : start + 2000], now
            )
    Notification.objects.filter(event=event).delete()
    event.delete()
    rows = len(planned)
    return {
        "seconds": watch.seconds,
        "rows_per_second": rows / watch.seconds if watch.seconds else 0,
    }


register(
    Workload(
        name="workflows",
        title=f"Workflows: N due runs advanced by {RUNNERS} runner processes",
        setup=setup,
        run=run,
        figures=(
            Figure("runs due at once", "runs"),
            Figure("steps advanced", "steps"),
            Figure("time to advance every run", "seconds", "s", "baseline.seconds"),
            Figure("steps per second", "steps_per_second", "/s"),
            Figure(
                "one-step fan-out of the same rows (baseline)", "baseline.rows_per_second", "/s"
            ),
        ),
    )
)
