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

Then the most the one process does (closed loop, ``load.run_closed``): M
triggers over 8 keep-alive connections (baseline: M ``/healthz`` the same
way), M triggers each on a connection of its own ("single": no keep-alive),
and batches of 1,000 events over 2 connections (``POST /api/v1/events/batch``,
10 x M events; baseline: the keep-alive triggers' events/s). ``cpu_ms`` is
the server process's CPU time (user + system, worker pool included) per
trigger at the fixed rate: a figure that a busy machine inflates less than
latency. Each run ends when the pool has fanned out every event it took.

Last, the web side alone (``measure_web``): a second ``notify run
--no-worker --no-scheduler`` on the same database, as a scaled-out web process
runs, storing events scheduled a day ahead so that no pool works beside it
(the same insert, plus one date to validate): the most it takes over 8
keep-alive connections (baseline: its own ``/healthz``), its CPU per trigger,
and batches of 1,000. The keep-alive phase in ``notify run`` also reports
``processed_during``: of its M events, how many the pool had taken when the
last answer came.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.forked_peer import free_port
from bench.load import http_request, run_closed, run_load
from bench.measure import cpu_seconds, isolated
from bench.processes import bench_env, notify_run
from bench.registry import Context, Figure, Workload, register
from notify.models import ApiKey, Event

EVENT_TYPE = "bench.api"
WEB_EVENT_TYPE = "bench.api.web"  # scheduled a day ahead: no pool takes them
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


def start_server(ctx: Context, *options: str) -> tuple[Any, int]:
    port = free_port()
    ctx.say(f"api: starting notify run {' '.join(options)} on port {port}".replace("  ", " "))
    server = notify_run(port, bench_env(), *options)
    server.start()
    try:
        wait_for_health(port)
    except Exception:
        server.stop()
        raise
    return server, port


def setup(ctx: Context) -> dict[str, Any]:
    _key, token = ApiKey.issue("bench-api")
    server, port = start_server(ctx)
    try:
        # The web side alone, as scaled out (README, "Scaling out"): the same
        # command without the pool and the scheduler, on the same database;
        # the first server's pool fans out what it stores.
        web, web_port = start_server(ctx, "--no-worker", "--no-scheduler")
    except Exception:
        server.stop()
        raise
    state = {
        "server": server,
        "port": port,
        "web": web,
        "web_port": web_port,
        "token": token,
        "run": 0,
    }
    # Warm up every path (first requests import and compile lazily).
    measure(state, "trigger", 50, 50.0)
    measure(state, "healthz", 50, 50.0)
    closed(state, trigger_request(state, 0, web_port, **later()), 50, 8, True, web_port)
    closed(state, healthz_request(state, web_port), 50, 8, True, web_port)
    Event.objects.filter(type=WEB_EVENT_TYPE).delete()
    return state


def teardown(state: dict[str, Any]) -> None:
    state["web"].stop()
    state["server"].stop()


def later() -> dict[str, str]:
    """For the web-alone figures: events due tomorrow, which no pool takes now."""
    return {"scheduled_for": (datetime.now(UTC) + timedelta(days=1)).isoformat()}


def trigger_request(state: dict[str, Any], run: int, port: int | None = None, **extra: Any):
    host = f"{HOST}:{port or state['port']}"
    token = state["token"]
    prefix = uuid.uuid4().hex[:8]
    event_type = WEB_EVENT_TYPE if extra else EVENT_TYPE

    def make(number: int) -> bytes:
        body = json.dumps(
            {
                "type": event_type,
                "payload": {"order_id": f"{prefix}-{number}", "total": 80},
                **extra,
            }
        ).encode()
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Idempotency-Key": f"bench-{prefix}-{run}-{number}",
        }
        return http_request("POST", "/api/v1/events", host, headers, body)

    return make


def batch_request(
    state: dict[str, Any], run: int, size: int, port: int | None = None, **extra: Any
):
    host = f"{HOST}:{port or state['port']}"
    token = state["token"]
    prefix = uuid.uuid4().hex[:8]
    event_type = WEB_EVENT_TYPE if extra else EVENT_TYPE

    def make(number: int) -> bytes:
        events = [
            {
                "type": event_type,
                "payload": {"order_id": f"{prefix}-{number}-{i}", "total": 80},
                "idempotency_key": f"bench-{prefix}-{run}-{number}-{i}",
                **extra,
            }
            for i in range(size)
        ]
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        body = json.dumps({"events": events}).encode()
        return http_request("POST", "/api/v1/events/batch", host, headers, body)

    return make


def close_after(make):
    """The same requests, each asking the server to close its connection."""

    def make_closing(number: int) -> bytes:
        return make(number).replace(b"Connection: keep-alive", b"Connection: close", 1)

    return make_closing


def waiting_events() -> int:
    """Bench events the pool has not taken yet."""
    return Event.objects.filter(type=EVENT_TYPE, status=Event.State.RECEIVED).count()


def wait_for_fan_out(timeout: float = 300.0) -> None:
    """Until the pool has taken every bench event (so runs do not overlap)."""
    deadline = time.monotonic() + timeout
    waiting = Event.objects.filter(type=EVENT_TYPE, status=Event.State.RECEIVED)
    while waiting.exists() and time.monotonic() < deadline:
        time.sleep(0.2)


def healthz_request(state: dict[str, Any], port: int | None = None):
    request = http_request("GET", "/healthz", f"{HOST}:{port or state['port']}")
    return lambda number: request


def measure(state: dict[str, Any], what: str, count: int, per_second: float) -> dict[str, Any]:
    state["run"] += 1
    make = trigger_request(state, state["run"]) if what == "trigger" else healthz_request(state)
    return isolated(lambda: run_load(HOST, state["port"], make, count, per_second))


def closed(
    state: dict[str, Any],
    make,
    count: int,
    connections: int,
    keep_alive: bool,
    port: int | None = None,
):
    port = port or state["port"]
    return isolated(lambda: run_closed(HOST, port, make, count, connections, keep_alive))


def stored_since(before: int) -> int:
    return Event.objects.filter(type=EVENT_TYPE).count() - before


def check(what: str, result: dict[str, Any], status: str, count: int, stored: int, events: int):
    if result["statuses"] != {status: count} or stored != events:
        raise RuntimeError(
            f"api {what}: {count} requests, answers {result['statuses']}, "
            f"{result['errors']} errors, {stored} of {events} events stored"
        )


def run(ctx: Context, state: dict[str, Any]) -> dict[str, Any]:
    count = ctx.emails
    per_second = rate()
    pid = state["server"].process.pid
    ctx.say(f"api run {ctx.run_number}: {count:,} requests at {per_second:.0f}/s, /healthz first")
    baseline = measure(state, "healthz", count, per_second)
    before = Event.objects.filter(type=EVENT_TYPE).count()
    cpu_before = cpu_seconds(pid)
    trigger = measure(state, "trigger", count, per_second)
    cpu_ms = (cpu_seconds(pid) - cpu_before) * 1000 / count
    check("trigger", trigger, "202", count, stored_since(before), count)
    ctx.say(
        f"api run {ctx.run_number}: trigger p50 {trigger['p50_ms']:.1f} ms, "
        f"p99 {trigger['p99_ms']:.1f} ms; /healthz p99 {baseline['p99_ms']:.1f} ms"
    )
    wait_for_fan_out()

    state["run"] += 1
    healthz_max = closed(state, healthz_request(state), count, 8, True)
    before = Event.objects.filter(type=EVENT_TYPE).count()
    keep_alive = closed(state, trigger_request(state, state["run"]), count, 8, True)
    check("keep-alive", keep_alive, "202", count, stored_since(before), count)
    # How much of the pool's work kept pace with the web threads: the same
    # rate with more events processed meanwhile is the CPU moved, not lost.
    keep_alive["processed_during"] = count - waiting_events()
    wait_for_fan_out()
    state["run"] += 1
    before = Event.objects.filter(type=EVENT_TYPE).count()
    single = closed(state, close_after(trigger_request(state, state["run"])), count, 8, False)
    check("single", single, "202", count, stored_since(before), count)
    wait_for_fan_out()

    state["run"] += 1
    size = 1000
    batches = max(2, count * 10 // size)
    before = Event.objects.filter(type=EVENT_TYPE).count()
    batch = closed(state, batch_request(state, state["run"], size), batches, 2, True)
    check("batch", batch, "200", batches, stored_since(before), batches * size)
    batch["events_per_second"] = batches * size / batch["seconds"]
    ctx.say(
        f"api run {ctx.run_number}: keep-alive {keep_alive['achieved_rate']:.0f}/s "
        f"(/healthz {healthz_max['achieved_rate']:.0f}/s), single {single['achieved_rate']:.0f}/s, "
        f"batch {batch['events_per_second']:,.0f} events/s"
    )
    wait_for_fan_out()

    web = measure_web(ctx, state, count, size, batches)
    return {
        **trigger,
        "web": web,
        "baseline": baseline,
        "ratio": trigger["p99_ms"] / baseline["p99_ms"],
        "cpu_ms": cpu_ms,
        "max": {
            "keep_alive": keep_alive,
            "healthz": healthz_max,
            "single": single,
            "batch": batch,
            "keep_alive_vs_healthz": keep_alive["achieved_rate"] / healthz_max["achieved_rate"],
            "single_vs_keep_alive": single["achieved_rate"] / keep_alive["achieved_rate"],
            "batch_vs_keep_alive": batch["events_per_second"] / keep_alive["achieved_rate"],
        },
    }


def measure_web(ctx: Context, state: dict[str, Any], count: int, size: int, batches: int):
    """The web process alone (``--no-worker --no-scheduler``), with events due
    tomorrow so that no pool works beside it: the most it takes over 8
    keep-alive connections (baseline: its ``/healthz`` the same way), its CPU
    per trigger, and batches of ``size`` over 2 connections. The events are
    deleted afterwards."""
    port, pid = state["web_port"], state["web"].process.pid
    web_events = Event.objects.filter(type=WEB_EVENT_TYPE)
    healthz = closed(state, healthz_request(state, port), count, 8, True, port)
    state["run"] += 1
    before = web_events.count()
    cpu_before = cpu_seconds(pid)
    make = trigger_request(state, state["run"], port, **later())
    keep_alive = closed(state, make, count, 8, True, port)
    cpu_ms = (cpu_seconds(pid) - cpu_before) * 1000 / count
    check("web keep-alive", keep_alive, "202", count, web_events.count() - before, count)
    state["run"] += 1
    before = web_events.count()
    make = batch_request(state, state["run"], size, port, **later())
    batch = closed(state, make, batches, 2, True, port)
    check("web batch", batch, "200", batches, web_events.count() - before, batches * size)
    batch["events_per_second"] = batches * size / batch["seconds"]
    web_events.delete()
    ctx.say(
        f"api run {ctx.run_number}: web process alone: keep-alive "
        f"{keep_alive['achieved_rate']:.0f}/s (/healthz {healthz['achieved_rate']:.0f}/s), "
        f"{cpu_ms:.2f} ms CPU per trigger, batch {batch['events_per_second']:,.0f} events/s"
    )
    return {
        "keep_alive": keep_alive,
        "healthz": healthz,
        "cpu_ms": cpu_ms,
        "batch": batch,
        "keep_alive_vs_healthz": keep_alive["achieved_rate"] / healthz["achieved_rate"],
    }


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
            Figure("server CPU per trigger", "cpu_ms", "ms"),
            Figure(
                "keep-alive, most /s",
                "max.keep_alive.achieved_rate",
                "/s",
                baseline="max.healthz.achieved_rate",
            ),
            Figure("keep-alive / baseline", "max.keep_alive_vs_healthz", "x"),
            Figure("keep-alive p99", "max.keep_alive.p99_ms", "ms", baseline="max.healthz.p99_ms"),
            Figure("single (no keep-alive), most /s", "max.single.achieved_rate", "/s"),
            Figure("single / keep-alive", "max.single_vs_keep_alive", "x"),
            Figure("batch of 1,000: events/s", "max.batch.events_per_second", "/s"),
            Figure("batch p50 per request", "max.batch.p50_ms", "ms"),
            Figure("batch / keep-alive single events", "max.batch_vs_keep_alive", "x"),
            Figure(
                "web alone: keep-alive, most /s",
                "web.keep_alive.achieved_rate",
                "/s",
                baseline="web.healthz.achieved_rate",
            ),
            Figure("web alone: keep-alive / baseline", "web.keep_alive_vs_healthz", "x"),
            Figure(
                "web alone: keep-alive p99",
                "web.keep_alive.p99_ms",
                "ms",
                baseline="web.healthz.p99_ms",
            ),
            Figure("web alone: CPU per trigger", "web.cpu_ms", "ms"),
            Figure("web alone: batch of 1,000: events/s", "web.batch.events_per_second", "/s"),
            Figure("web alone: batch p50 per request", "web.batch.p50_ms", "ms"),
        ),
    )
)
