"""Workflow runs over HTTP: the event's detail shows its runs and their steps;
a run is cancelled by API (only the calling key's; an ended run is a 409)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from notify.models import ApiKey, WorkflowRun
from notify.runtime.worker import run_until_idle
from tests.workflows.conftest import NOW


@pytest.fixture
def api_token(db):
    return ApiKey.issue("shop")[1]


def post(client, token, path, body=None):
    return client.post(
        path,
        json.dumps(body) if body is not None else "",
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )


def test_event_detail_shows_runs_and_steps_and_a_run_is_cancelled_by_api(
    client, clock, smtp_mailer, escalation, make_user, api_token
):
    escalation()
    alice = make_user("alice")
    body = {"type": "order.shipped", "payload": {"order_id": "R1"}, "recipients": [alice.pk]}
    event_id = post(client, api_token, "/api/v1/events", body).json()["id"]
    run_until_idle()
    detail = client.get(
        f"/api/v1/events/{event_id}", headers={"Authorization": f"Bearer {api_token}"}
    )
    data = detail.json()
    [run] = data["runs"]
    assert (run["state"], run["next_step"], run["due_at"]) == (
        "waiting",
        3,
        (NOW + timedelta(minutes=30)).isoformat().replace("+00:00", "Z"),
    )
    assert [(s["step"], s["kind"], s["decision"]) for s in run["steps"]] == [
        (1, "channel", "sent"),
        (2, "delay", "waited"),
    ]
    assert run["steps"][0]["deliveries"] == [["inapp", "pending"]]
    schema = client.get("/api/v1/openapi.json").json()["components"]["schemas"]
    assert set(run) == set(schema["WorkflowRun"]["properties"])
    assert set(run["steps"][0]) == set(schema["WorkflowStep"]["properties"])

    other = ApiKey.issue("other")[1]
    assert post(client, other, f"/api/v1/runs/{run['id']}/cancel").status_code == 404
    response = post(client, api_token, f"/api/v1/runs/{run['id']}/cancel")
    assert response.status_code == 200
    assert response.json()["state"] == "cancelled"
    assert response.json()["steps"][-1]["decision"] == "cancelled"
    clock.move_to(NOW + timedelta(hours=3))
    run_until_idle()
    assert smtp_mailer.messages == []
    assert WorkflowRun.objects.get().state == "cancelled"
    again = post(client, api_token, f"/api/v1/runs/{run['id']}/cancel")
    assert (again.status_code, again.json()["error"]) == (409, "run_ended")
