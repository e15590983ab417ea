"""API: latency of ``POST /api/v1/events`` at a fixed rate, against ``notify run``.

``manage.py notify run`` (uvicorn, the worker pool and the scheduler in one
process: the embedded default) serves the throwaway database. A load process
of its own (``load.run_load``, forked) sends M requests at 200 per second
(``NOTIFY_BENCH_API_RATE``) over 8 keep-alive connections, open loop, and
measures each from when it was due to when its answer was read. Each request
is a new event with an API key and an ``Idempotency-Key`` of its own: auth,
validation, the idempotency lookup, the insert, the commit, and the wake-up
of the worker pool, which claims the event in the same process and marks it
processed (no rule matches ``bench.api``: the figure is the API's, not
fan-out's; see BENCHMARKS.md for the same with fan-out).

The baseline, in the same run and server: M ``GET /healthz`` (a trivial
Django view) at the same rate. ``ratio`` = p99 / baseline p99.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
import uuid
from typing import Any

from bench.forked_peer import free_port
from bench.load import http_request, run_load
from bench.measure import isolated
from bench.processes import bench_env, notify_run
from bench.registry import Context, Figure, Workload, register
from notify.models import ApiKey, Event

EVENT_TYPE = "bench.api"
HOST = "127.0.0.1"


def rate() -> float:
    return float(os.environ.get("NOTIFY_BENCH_API_RATE", "200"))


def wait_for_health(port: int, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"notify run did not answer /healthz on port {port} in {timeout:.0f} s")


def setup(ctx: Context) -> dict[str, Any]:
    _key, token = ApiKey.issue("bench-api")
    port = free_port()
    ctx.say(f"api: starting notify run on port {port}")
    server = notify_run(port, bench_env())
    server.start()
    try:
        wait_for_health(port)
    except Exception:
        server.stop()
        raise
    state = {"server": server, "port": port, "token": token, "run": 0}
    # Warm up both paths (first requests import and compile lazily).
    measure(state, "trigger", 50, 50.0)
    measure(state, "healthz", 50, 50.0)
    return state


def teardown(state: dict[str, Any]) -> None:
    state["server"].stop()


def trigger_request(state: dict[str, Any], run: int):
    host = f"{HOST}:{state['port']}"
    token = state["token"]
    prefix = uuid.uuid4().hex[:8]

    def make(number: int) -> bytes:
        body = json.dumps(
            {"type": EVENT_TYPE, "payload": {"order_id": f"{prefix}-{number}", "total": 80}}
        ).encode()
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Idempotency-Key": f"bench-{prefix}-{run}-{number}",
        }
        return http_request("POST", "/api/v1/events", host, headers, body)

    return make


def healthz_request(state: dict[str, Any]):
    request = http_request("GET", "/healthz", f"{HOST}:{state['port']}")
    return lambda number: request


def measure(state: dict[str, Any], what: str, count: int, per_second: float) -> dict[str, Any]:
    state["run"] += 1
    make = trigger_request(state, state["run"]) if what == "trigger" else healthz_request(state)
    return isolated(lambda: run_load(HOST, state["port"], make, count, per_second))


def run(ctx: Context, state: dict[str, Any]) -> dict[str, Any]:
    count = ctx.emails
    per_second = rate()
    ctx.say(f"api run {ctx.run_number}: {count:,} requests at {per_second:.0f}/s, /healthz first")
    baseline = measure(state, "healthz", count, per_second)
    stored_before = Event.objects.filter(type=EVENT_TYPE).count()
    trigger = measure(state, "trigger", count, per_second)
    stored = Event.objects.filter(type=EVENT_TYPE).count() - stored_before
    if trigger["statuses"] != {"202": count} or stored != count:
        raise RuntimeError(
            f"api: {count} requests, answers {trigger['statuses']}, {trigger['errors']} "
            f"errors, {stored} events stored"
        )
    ctx.say(
        f"api run {ctx.run_number}: trigger p50 {trigger['p50_ms']:.1f} ms, "
        f"p99 {trigger['p99_ms']:.1f} ms; /healthz p99 {baseline['p99_ms']:.1f} ms"
    )
    return {**trigger, "baseline": baseline, "ratio": trigger["p99_ms"] / baseline["p99_ms"]}


register(
    Workload(
        name="api",
        title="API: POST /api/v1/events at a fixed rate against notify run (uvicorn)",
        setup=setup,
        teardown=teardown,
        run=run,
        figures=(
            Figure("requests", "requests"),
            Figure("rate asked", "rate", "/s", baseline="baseline.rate"),
            Figure("rate achieved", "achieved_rate", "/s", baseline="baseline.achieved_rate"),
            Figure("latency p50", "p50_ms", "ms", baseline="baseline.p50_ms"),
            Figure("latency p90", "p90_ms", "ms", baseline="baseline.p90_ms"),
            Figure("latency p99", "p99_ms", "ms", baseline="baseline.p99_ms"),
            Figure("latency max", "max_ms", "ms", baseline="baseline.max_ms"),
            Figure("errors", "errors", baseline="baseline.errors"),
            Figure("p99 / baseline p99", "ratio", "x"),
        ),
    )
)
