"""kill -9 a worker process in the middle of a growing batch (issue 14).

A real ``manage.py notify worker`` (two threads, the default) sends 600
deliveries to the local counting provider answering in 0.5 s, with sends in
flight switched on (``SENDS_IN_FLIGHT`` 64: the counting channel's own 32 per
batch) and batches of 10 (the default): so more than 20 in flight at the
provider means the batches grew under their claims
(``notify.outbox.rows.claim_more``). Then it is killed with SIGKILL and
started again. Every delivery must reach the provider (counted per
``X-Notify-Delivery``), and again only if it was marked in flight at the kill;
our books exact (one successful attempt each). Twice: short claims (6 s) and
the defaults (a dead worker's claim expires after ``CLAIM_TTL``, 120 s).
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from notify import trigger
from notify.models import Delivery
from notify.models.status import Status
from tests.peers.counting_provider import CountingProvider
from tests.peers.http import running
from tests.runtime.test_crash import crew_rule
from tests.scaleout import final_count, notify_worker, our_books, process_env, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

DELIVERIES = 600
LATENCY = 0.5
THREADS = 2  # the default
BATCH = 10  # WORKER_BATCH_SIZE's default: 20 in flight at most without growth
OPTIONS = {"SENDS_IN_FLIGHT": 64}  # the README's switch for slow providers


@pytest.fixture
def slow_provider():
    def slow() -> CountingProvider:
        provider = CountingProvider()
        provider.latency = LATENCY
        return provider

    yield from running(slow)


def in_flight_at_the_provider_above(provider: CountingProvider, count: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if provider.in_flight > count:
            return True
        time.sleep(0.005)
    return False


@pytest.mark.parametrize(
    "overrides",
    [{"CLAIM_TTL": 6.0, "POLL_INTERVAL": 0.2}, {}],
    ids=["short-claims", "defaults"],
)
def test_kill_9_a_worker_mid_growing_batch(postgres, tmp_path, slow_provider, overrides):
    crew_rule(DELIVERIES)
    env = process_env(
        tmp_path / "var", provider_url=slow_provider.url, overrides={**OPTIONS, **overrides}
    )
    worker = notify_worker("grower", env, tmp_path, threads=THREADS, skip_checks=True)
    try:
        worker.start()
        worker.wait_ready(90)
        trigger("order.shipped", {"order_id": "G-9"})

        assert in_flight_at_the_provider_above(slow_provider, THREADS * BATCH, 60), (
            slow_provider.peak_in_flight,
            worker.text()[-3000:],
        )
        worker.kill()
        marked = Delivery.objects.filter(status=Status.SENDING, sending_since__isnull=False)
        in_flight = marked.count()
        assert 0 < in_flight <= THREADS * 32
        worker.start()
        worker.wait_ready(90)

        finished = wait_until(lambda: final_count() == DELIVERIES, timeout=300, interval=0.5)
        assert finished, (our_books(), worker.text()[-3000:])
    finally:
        worker.stop()

    books = our_books()
    assert books["statuses"] == {Status.SENT: DELIVERIES}, books
    assert books["sent_twice"] == [] and books["sent_attempts"] == DELIVERIES, books
    arrivals = Counter({pk: len(times) for pk, times in slow_provider.arrivals().items()})
    ids = set(Delivery.objects.values_list("pk", flat=True))
    assert set(arrivals) == ids  # every delivery reached the provider
    duplicates = sum(n - 1 for n in arrivals.values())
    assert duplicates <= in_flight, (duplicates, in_flight)
    print(f"{DELIVERIES} deliveries, {in_flight} in flight at the kill, {duplicates} duplicates")
