"""Workflow runs over HTTP: each run of an event with its steps (in the event's
detail, ``GET /api/v1/events/{id}``) and ``POST /api/v1/runs/{id}/cancel``."""

from __future__ import annotations

from typing import Any

from django.db.models import Q
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from notify.api.auth import api_key_required
from notify.api.errors import ApiError, api_view
from notify.api.ratelimit import limited_per_address, limited_per_key
from notify.models import WorkflowRun, WorkflowStepLog
from notify.outbox.runs import cancel_runs

CANCELLED_BY_API = "cancelled through the API"


def step_json(entry: WorkflowStepLog) -> dict[str, Any]:
    return {
        "step": entry.position + 1,
        "kind": entry.kind,
        "decision": entry.decision,
        "reason": entry.reason,
        "at": entry.at,
        "until": entry.until,
        "deliveries": entry.deliveries,
    }


def run_json(run: WorkflowRun) -> dict[str, Any]:
    return {
        "id": run.pk,
        "rule": run.rule_id,
        "user": run.user_id,
        "batch_key": run.batch_key,
        "state": run.state,
        "next_step": run.step + 1,
        "due_at": run.due_at if run.state in WorkflowRun.OPEN else None,
        "reason": run.reason,
        "notification": run.notification_id,
        "created_at": run.created_at,
        "finished_at": run.finished_at,
        "steps": [step_json(entry) for entry in run.log.all()],
    }


@csrf_exempt  # bearer auth: no cookies, so no cross-site request to forge
@api_view("POST")
@limited_per_address
@api_key_required
@limited_per_key
def cancel_run(request: HttpRequest, run_id: int) -> JsonResponse:
    """Stop a run of an event sent with the calling key: no step runs again and
    its deliveries still waiting are cancelled. 404 for another key's run; 409
    for a run that has ended."""
    run = WorkflowRun.objects.filter(pk=run_id, event__api_key=request.api_key).first()
    if run is None:
        raise ApiError(404, "not_found", f"No workflow run {run_id} for this API key.")
    if run.state not in WorkflowRun.OPEN:
        raise ApiError(409, "run_ended", f"Run {run_id} has ended ({run.state}).")
    stopped = cancel_runs(Q(pk=run.pk), CANCELLED_BY_API, timezone.now())
    run.refresh_from_db()
    if not stopped:  # it ended between the two looks
        raise ApiError(409, "run_ended", f"Run {run_id} has ended ({run.state}).")
    return JsonResponse(run_json(run))
