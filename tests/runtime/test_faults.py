"""Faults, on PostgreSQL: a provider that misbehaves, and a burst of retried API calls.

* 2,000 deliveries through real Celery workers to a provider that answers 503
  to 30 % of requests, hangs past the client's time-out on 10 % and refuses
  (422) 10 %: every delivery ends sent, failed or dead, none is left pending
  or sending, each retry waited within ``RetryPolicy.bounds`` and never less
  than asked, and a refusal is never tried again.
* 50 concurrent ``POST /api/v1/events`` with one ``Idempotency-Key`` against a
  live server (``uvicorn notify.project.asgi:application --workers 2`` on the test
  database) from 50 real threads: one event, 50 identical answers; the same
  key with another body is refused (422).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import urllib.error
import urllib.request
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

import notify
from notify import celery as notify_celery
from notify.delivery.retry import RetryPolicy
from notify.models import ApiKey, Category, Delivery, DeliveryAttempt, Event
from notify.models.status import Status
from rules.models import Rule
from tests.peers.counting_provider import CountingProvider, Faults
from tests.peers.http import running
from tests.scaleout import (
    RABBITMQ_URL,
    Proc,
    celery_worker,
    drop_broker_queue,
    free_port,
    our_books,
    process_env,
    reachable,
    scheduler,
    seed_group,
    unique_queue,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


# -- a provider that misbehaves -------------------------------------------------------------------

FAULTS = Faults(unavailable=0.30, hang=0.10, refuse=0.10, hang_seconds=1.0)
TIMEOUT = 0.25  # the client's time-out: a hang is a time-out
POLICY = {
    "MAX_ATTEMPTS": 4,
    "RETRY_BASE_DELAY": 0.5,
    "RETRY_FACTOR": 2.0,
    "RETRY_MAX_DELAY": 5.0,
    "RETRY_JITTER": 0.2,
}
SLACK = 0.05  # seconds: clocks are the same; rounding and the order of two now() calls


@pytest.fixture
def faulty_provider():
    yield from running(lambda: CountingProvider(faults=FAULTS))


def test_a_provider_failing_a_third_of_the_time_and_hanging_and_refusing(
    postgres, settings, tmp_path, faulty_provider
):
    if not reachable("127.0.0.1", 5672):
        pytest.skip("RabbitMQ is not running on 127.0.0.1:5672")
    total = 2000
    category = Category.objects.create(key="orders", name="Orders")
    seed_group("crew", total)
    Rule.objects.create(
        name="crew",
        event_type="order.shipped",
        category=category,
        recipients=["group:crew"],
        channels=["counting"],
        message="order_shipped",
    )
    queue = unique_queue()
    overrides = {**POLICY, "CLAIM_TTL": 30.0, "RELAY_INTERVAL": 1.0, "RELAY_GRACE": 5.0}
    env = process_env(
        tmp_path / "var",
        provider_url=faulty_provider.url,
        broker_url=RABBITMQ_URL,
        queue=queue,
        overrides=overrides,
        provider_timeout=TIMEOUT,
        # At the breaker's defaults: it judges the failure rate (40 % here, below
        # its 70 %), so this flaky-but-working provider keeps its traffic.
    )
    settings.NOTIFY = {**settings.NOTIFY, "BROKER_URL": RABBITMQ_URL, "CELERY_QUEUE": queue}
    notify_celery.configure()
    # Threads: the work is waiting on the provider (time-outs), not computing.
    workers = [celery_worker(f"w{i}", env, tmp_path, concurrency=6, pool="threads") for i in (1, 2)]
    relay = scheduler("scheduler", env, tmp_path)
    try:
        for process in (*workers, relay):
            process.start()
        for process in (*workers, relay):
            process.wait_ready(90)
        notify.trigger("order.shipped", {"order_id": "F"})

        def settled() -> bool:
            return (
                Delivery.objects.count() == total
                and not Delivery.objects.exclude(status__in=Status.FINAL).exists()
            )

        assert wait_until(settled, 55, interval=0.5), (our_books(), workers[0].text()[-3000:])
    finally:
        for process in (*workers, relay):
            process.stop()
        drop_broker_queue(RABBITMQ_URL, queue)

    books = our_books()
    assert set(books["statuses"]) <= {Status.SENT, Status.FAILED, Status.DEAD}, books
    assert books["sent_twice"] == []
    policy = RetryPolicy(
        max_attempts=POLICY["MAX_ATTEMPTS"],
        base_delay=POLICY["RETRY_BASE_DELAY"],
        factor=POLICY["RETRY_FACTOR"],
        max_delay=POLICY["RETRY_MAX_DELAY"],
        jitter=POLICY["RETRY_JITTER"],
    )
    attempts = defaultdict(list)
    for attempt in DeliveryAttempt.objects.order_by("delivery_id", "number"):
        attempts[attempt.delivery_id].append(attempt)
    statuses = dict(Delivery.objects.values_list("pk", "status"))
    arrivals = faulty_provider.arrivals()
    Outcome = DeliveryAttempt.Outcome
    for delivery_id, tries in attempts.items():
        status = statuses[delivery_id]
        assert [a.number for a in tries] == list(range(1, len(tries) + 1)), tries
        *earlier, last = tries
        # Every try before the last was transient and scheduled the next one
        # within the policy's bounds; the next one came no sooner.
        for attempt, following in zip(earlier, tries[1:], strict=True):
            assert attempt.outcome == Outcome.TRANSIENT, (delivery_id, tries)
            low, high = policy.bounds(attempt.number)
            waited = (attempt.retry_at - attempt.finished_at).total_seconds()
            assert low - SLACK <= waited <= high + SLACK, (delivery_id, attempt.number, waited)
            assert following.started_at >= attempt.retry_at - timedelta(seconds=SLACK)
        if status == Status.SENT:
            assert last.outcome == Outcome.SENT
        elif status == Status.FAILED:
            # A refusal (4xx) is final: never tried again, here or at the provider.
            assert last.outcome == Outcome.PERMANENT and last.error_code == "422"
            assert arrivals[delivery_id][-1].outcome == "refuse"
            assert [a.outcome for a in arrivals[delivery_id]].count("refuse") == 1
        else:
            assert status == Status.DEAD
            assert len(tries) == POLICY["MAX_ATTEMPTS"]
            assert last.outcome == Outcome.TRANSIENT and last.retry_at is None
    assert len(attempts) == total  # every delivery was tried
    # Each kind of answer happened (the draw is fixed by delivery id and try).
    assert books["statuses"].get(Status.SENT, 0) > total // 2
    assert books["statuses"].get(Status.FAILED, 0) > 0
    timeouts = DeliveryAttempt.objects.filter(error_code="timeout").count()
    unavailable = DeliveryAttempt.objects.filter(error_code="503").count()
    assert timeouts > 0 and unavailable > 0
    print(f"{total} deliveries: {books['statuses']}; {unavailable} 503s, {timeouts} time-outs")


# -- one Idempotency-Key, fifty requests at once ---------------------------------------------------


class LiveServer:
    """``uvicorn notify.project.asgi:application --workers 2`` on the test database."""

    def __init__(self, tmp_path) -> None:
        self.port = free_port()
        env = process_env(tmp_path / "var")
        argv = [
            str(os.path.join(os.path.dirname(sys.executable), "uvicorn")),
            "notify.project.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "2",
            "--no-access-log",
        ]
        self.process = Proc("uvicorn", argv, env, tmp_path, ready="Application startup complete")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.process.start()
        self.process.wait_ready(60)
        # Both worker processes up: the second "startup complete" line.
        wait_until(lambda: self.process.text().count("Application startup complete") >= 2, 30)
        return self

    def __exit__(self, *exc) -> None:
        self.process.stop()


def post(base: str, token: str, body: dict, key: str) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"{base}/api/v1/events",
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Idempotency-Key": key,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def all_at_once(n: int, call) -> list:
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait(timeout=30)
        return call(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n)))


ORDER = {"type": "order.shipped", "payload": {"order_id": "A1", "total": 150}}


def test_fifty_concurrent_requests_with_one_key_on_a_live_server(postgres, tmp_path):
    _, token = ApiKey.issue("burst")
    with LiveServer(tmp_path) as server:
        answers = all_at_once(50, lambda _: post(server.base, token, ORDER, "burst"))

        assert {status for status, _ in answers} == {202}, answers[:3]
        assert len({body for _, body in answers}) == 1  # identical answers
        event = Event.objects.get()
        assert json.loads(answers[0][1])["id"] == event.pk

        # The same key with another body, raced: one body wins, the other is refused.
        bodies = [ORDER, {**ORDER, "payload": {"order_id": "B2"}}]
        raced = all_at_once(
            20, lambda i: (bodies[i % 2], *post(server.base, token, bodies[i % 2], "race"))
        )
        # And again afterwards, plainly.
        late = post(server.base, token, {**ORDER, "payload": {"order_id": "C3"}}, "burst")

    assert late[0] in (409, 422) and json.loads(late[1])["error"] == "idempotency_key_reused"
    winner = Event.objects.get(idempotency_key="race")
    for body, status, content in raced:
        if body["payload"] == winner.payload:
            assert status == 202 and json.loads(content)["id"] == winner.pk
        else:
            assert status in (409, 422), (status, content)
            assert json.loads(content)["error"] == "idempotency_key_reused"
    assert Event.objects.count() == 2
