"""Celery as the scale-out engine: the app, its reliability settings, the tasks,
the dispatch seam and the relay; then real ``celery -A notify worker``
processes over RabbitMQ and Redis.

The unit tests publish through the real Celery app to kombu's in-memory
transport (``memory://``) and read the messages back, so what they check is
what a broker would have received.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from celery.app.utils import find_app
from django.contrib.auth import get_user_model
from django.utils import timezone

import notify
from notify import celery as notify_celery
from notify.fanout.pipeline import process_event
from notify.models import Category, Delivery, DeliveryAttempt, Event
from notify.models.status import Status
from notify.outbox.rows import claim_due_deliveries
from notify.runtime import handoff as dispatchers
from notify.runtime import relay
from notify.runtime.tasks import deliver_deliveries, fan_out_events
from notify.runtime.worker import run_until_idle
from notify.scheduling import scheduler
from rules.models import Rule
from tests.peers.counting_provider import CountingProvider
from tests.peers.http import running
from tests.scaleout import (
    RABBITMQ_URL,
    REDIS_SERVER,
    RedisServer,
    celery_worker,
    drop_broker_queue,
    machine_to_ourselves,
    our_books,
    process_env,
    reachable,
    seed_group,
    unique_queue,
    wait_until,
)

# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def provider():
    yield from running(CountingProvider)


def counting_channel(url: str, timeout: float = 5.0) -> dict:
    return {
        "BACKEND": "tests.peers.counting_provider.CountingChannel",
        "OPTIONS": {"URL": url, "TIMEOUT": timeout},
    }


@pytest.fixture
def counting(settings, provider):
    """The ``counting`` channel, posting to the provider."""
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {**settings.NOTIFY["CHANNELS"], "counting": counting_channel(provider.url)},
    }
    return provider


@pytest.fixture
def memory_broker(settings):
    """Celery on kombu's in-memory transport, with a queue of this test's own."""
    queue = unique_queue()
    settings.NOTIFY = {**settings.NOTIFY, "BROKER_URL": "memory://", "CELERY_QUEUE": queue}
    notify_celery.configure()
    relay.recently_relayed.clear()
    yield queue
    drain(queue)
    relay.recently_relayed.clear()


def drain(queue: str) -> list[dict]:
    """The messages waiting in the in-memory queue: task name, ids, countdown."""
    app = notify_celery.app
    found = []
    with app.connection_for_read() as conn:
        simple = conn.SimpleQueue(queue, no_ack=True)
        try:
            while True:
                try:
                    message = simple.get(block=False)
                except simple.Empty:
                    break
                args, _kwargs, _embed = message.decode()
                eta = message.headers.get("eta")
                found.append({"task": message.headers["task"], "ids": args[0], "eta": eta})
        finally:
            simple.close()
    return found


@pytest.fixture
def group_rule(db, counting, category):
    """A rule sending order.shipped to the members of group "crew" on ``counting``."""
    seed_group("crew", 5)
    return Rule.objects.create(
        name="crew",
        event_type="order.shipped",
        category=category,
        recipients=["group:crew"],
        channels=["counting"],
        message="order_shipped",
    )


def fanned_out(**payload) -> Event:
    event = notify.trigger("order.shipped", {"order_id": "C-1", **payload})
    process_event(event.pk)
    Event.objects.filter(pk=event.pk).update(status=Event.State.PROCESSED)
    return event


# -- the app ----------------------------------------------------------------------------------


def test_celery_dash_A_notify_finds_the_app():
    """``celery -A notify worker`` resolves ``notify`` -> ``notify.celery.app``."""
    assert find_app("notify") is notify_celery.app
    assert {"notify.fan_out", "notify.deliver"} <= set(notify_celery.app.tasks)


def test_reliability_settings_for_rabbitmq(settings):
    settings.NOTIFY = {**settings.NOTIFY, "BROKER_URL": RABBITMQ_URL, "CLAIM_TTL": 120.0}
    config = notify_celery.celery_config()
    assert config["task_acks_late"] is True
    assert config["task_reject_on_worker_lost"] is True
    assert config["worker_prefetch_multiplier"] == 1
    assert config["broker_transport_options"] == {"confirm_publish": True}
    # A batch's longest run (WORKER_BATCH_SECONDS, 60) and room for its last send
    # and a suspect's batch of one before it.
    assert config["task_time_limit"] == 60.0 + 2 * 120.0
    assert config["task_serializer"] == "json" and config["accept_content"] == ["json"]


def test_redis_visibility_timeout_outlasts_tasks_and_countdowns(settings):
    settings.NOTIFY = {**settings.NOTIFY, "BROKER_URL": "redis://127.0.0.1:6379/5"}
    config = notify_celery.celery_config()
    visibility = config["broker_transport_options"]["visibility_timeout"]
    assert visibility > config["task_time_limit"]
    assert visibility > dispatchers.countdown_for(10**6)
    # No countdown the broker would hold past the visibility timeout.
    settings.NOTIFY = {**settings.NOTIFY, "BROKER_MAX_COUNTDOWN": 10**6}
    assert dispatchers.countdown_for(10**7) <= visibility / 2


def test_the_dispatcher_is_chosen_by_the_broker_url(settings):
    assert isinstance(dispatchers.get_dispatcher(), dispatchers.InProcessDispatcher)
    settings.NOTIFY = {**settings.NOTIFY, "BROKER_URL": "memory://"}
    assert isinstance(dispatchers.get_dispatcher(), dispatchers.CeleryDispatcher)
    assert dispatchers.get_dispatcher() is dispatchers.get_dispatcher()


# -- hand-off after commit ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_committed_event_is_handed_to_celery_by_id(memory_broker, counting):
    event = notify.trigger("order.shipped", {"order_id": "X"})  # autocommit: on_commit runs now
    assert drain(memory_broker) == [{"task": "notify.fan_out", "ids": [event.pk], "eta": None}]


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_event_hands_nothing_off(memory_broker, counting):
    from django.db import transaction

    with pytest.raises(RuntimeError), transaction.atomic():
        notify.trigger("order.shipped", {"order_id": "X"})
        raise RuntimeError("rollback")
    assert drain(memory_broker) == []


@pytest.mark.django_db(transaction=True)
def test_a_dead_broker_does_not_fail_the_trigger_and_backs_off(settings, counting):
    port_nobody_listens_on = 9
    settings.NOTIFY = {
        **settings.NOTIFY,
        "BROKER_URL": f"amqp://guest:guest@127.0.0.1:{port_nobody_listens_on}//",
        "CELERY_QUEUE": unique_queue(),
    }
    started = time.monotonic()
    first = notify.trigger("order.shipped", {"order_id": "1"})
    first_took = time.monotonic() - started
    started = time.monotonic()
    second = notify.trigger("order.shipped", {"order_id": "2"})
    second_took = time.monotonic() - started
    assert Event.objects.filter(pk__in=[first.pk, second.pk]).count() == 2  # stored: accepted
    assert first_took < 10
    assert second_took < 0.5  # backing off: left to the relay without trying


# -- the tasks ----------------------------------------------------------------------------------


def test_the_fan_out_task_fans_out_once_and_hands_off_what_it_wrote(
    memory_broker, group_rule, make_rule
):
    later = make_rule(
        name="later",
        recipients=["group:crew"],
        channels=["counting"],
        delay=timedelta(seconds=20),
    )
    much_later = make_rule(
        name="much later",
        recipients=["group:crew"],
        channels=["counting"],
        delay=timedelta(hours=1),
    )
    event = notify.trigger("order.shipped", {"order_id": "F-1"})

    assert fan_out_events([event.pk]) == 1
    assert fan_out_events([event.pk]) == 0  # processed: a second message does nothing

    messages = drain(memory_broker)
    now_ids = set(
        Delivery.objects.filter(notification__rule=group_rule).values_list("pk", flat=True)
    )
    later_ids = set(Delivery.objects.filter(notification__rule=later).values_list("pk", flat=True))
    assert len(now_ids) == len(later_ids) == 5
    assert {i for m in messages if m["eta"] is None for i in m["ids"]} == now_ids
    assert {i for m in messages if m["eta"] is not None for i in m["ids"]} == later_ids
    # Due in an hour: beyond BROKER_MAX_COUNTDOWN, so no ETA in the broker; the relay's.
    assert not Delivery.objects.filter(
        notification__rule=much_later, pk__in=[i for m in messages for i in m["ids"]]
    ).exists()
    assert all(m["task"] == "notify.deliver" for m in messages)


def test_the_deliver_task_sends_only_what_is_still_due(group_rule, provider):
    fanned_out()
    ids = list(Delivery.objects.values_list("pk", flat=True))

    assert deliver_deliveries(ids) == 5
    assert deliver_deliveries(ids) == 0  # a redelivered message: nothing left to claim

    assert set(Delivery.objects.values_list("status", flat=True)) == {Status.SENT}
    assert sorted(provider.accepted().values()) == [1] * 5


def test_a_retry_goes_back_with_a_countdown_and_a_later_one_to_the_relay(
    settings, memory_broker, group_rule, provider
):
    fanned_out()
    ids = list(Delivery.objects.order_by("pk").values_list("pk", flat=True))
    settings.NOTIFY = {**settings.NOTIFY, "RETRY_BASE_DELAY": 5.0, "RETRY_JITTER": 0.0}
    provider.fail_next(2, status=503)
    assert deliver_deliveries(ids[:2]) == 0
    [message] = drain(memory_broker)
    assert message["task"] == "notify.deliver" and sorted(message["ids"]) == ids[:2]
    assert message["eta"] is not None  # about 5 s from now

    settings.NOTIFY = {**settings.NOTIFY, "RETRY_BASE_DELAY": 600.0}
    provider.fail_next(1, status=503)
    assert deliver_deliveries(ids[2:3]) == 0
    assert drain(memory_broker) == []  # ten minutes: the relay hands it off when due


# -- a message that kills its worker -------------------------------------------------------------


def expire_claims() -> None:
    """The worker died while sending what it held."""
    Delivery.objects.filter(status=Status.SENDING).update(
        sending_since=timezone.now() - timedelta(seconds=2),
        claimed_until=timezone.now() - timedelta(seconds=1),
    )


def test_a_delivery_whose_worker_dies_at_every_attempt_ends_dead(settings, group_rule):
    settings.NOTIFY = {**settings.NOTIFY, "MAX_ATTEMPTS": 3}
    fanned_out()
    poison = Delivery.objects.order_by("pk").first()
    for attempt in (1, 2, 3):
        ids, _ = claim_due_deliveries(limit=10, ttl=60, ids=[poison.pk])
        assert ids == [poison.pk]
        assert Delivery.objects.get(pk=poison.pk).attempts == attempt
        expire_claims()  # ... and the worker died holding it

    ids, _ = claim_due_deliveries(limit=10, ttl=60, ids=[poison.pk])

    assert ids == []
    poison.refresh_from_db()
    assert (poison.status, poison.error_code, poison.claimed_until) == (
        Status.DEAD,
        "worker_lost",
        None,
    )
    # Every loss is on record; the last one ended it (MAX_ATTEMPTS and
    # MAX_WORKER_LOSSES are both 3 here).
    assert [(a.number, a.outcome) for a in poison.attempt_log.order_by("number")] == [
        (n, DeliveryAttempt.Outcome.LOST) for n in (1, 2, 3)
    ]
    # The in-process pool takes the same path.
    assert run_until_idle() > 0
    assert Delivery.objects.filter(status=Status.SENT).count() == 4


# -- the relay -------------------------------------------------------------------------------------


def test_without_a_broker_the_relay_does_nothing(group_rule):
    fanned_out()
    Delivery.objects.update(next_attempt_at=timezone.now() - timedelta(hours=1))
    assert not relay.relay()


def test_the_relay_hands_off_what_the_broker_lost(memory_broker, group_rule, settings):
    settings.NOTIFY = {**settings.NOTIFY, "RELAY_GRACE": 15.0, "BROKER_MAX_COUNTDOWN": 60.0}
    now = timezone.now()
    fresh_event = notify.trigger("order.shipped", {"order_id": "fresh"})
    lost_event = notify.trigger("order.shipped", {"order_id": "lost"})
    Event.objects.filter(pk=lost_event.pk).update(received_at=now - timedelta(seconds=60))
    scheduled = notify.schedule("order.shipped", {"order_id": "due"}, at=now + timedelta(hours=1))
    Event.objects.filter(pk=scheduled.pk).update(scheduled_for=now - timedelta(seconds=1))

    fanned_out()
    d = list(Delivery.objects.order_by("pk"))
    # 0: just written and handed off at commit: its message is on its way.
    # 1: due for a minute and still pending: its hand-off was lost.
    Delivery.objects.filter(pk=d[1].pk).update(next_attempt_at=now - timedelta(seconds=60))
    # 2: a delayed send written an hour ago, due now: nothing was handed off for it.
    Delivery.objects.filter(pk=d[2].pk).update(
        updated_at=now - timedelta(hours=1), next_attempt_at=now - timedelta(seconds=1)
    )
    # 3: claimed by a worker that died before sending it: handed off as
    # untried; 4: in flight when its worker died: it travels alone now.
    Delivery.objects.filter(pk=d[3].pk).update(
        status=Status.SENDING, attempts=1, claimed_until=now - timedelta(seconds=1)
    )
    Delivery.objects.filter(pk=d[4].pk).update(
        status=Status.SENDING,
        attempts=2,
        claimed_until=now - timedelta(seconds=2),
        sending_since=now - timedelta(seconds=3),
    )

    stats = relay.relay(now)

    messages = drain(memory_broker)
    fan_outs = {i for m in messages if m["task"] == "notify.fan_out" for i in m["ids"]}
    assert fan_outs == {lost_event.pk, scheduled.pk}
    assert fresh_event.pk not in fan_outs
    delivery_messages = [m["ids"] for m in messages if m["task"] == "notify.deliver"]
    assert sorted(i for ids in delivery_messages for i in ids) == [
        d[1].pk,
        d[2].pk,
        d[3].pk,
        d[4].pk,
    ]
    assert [d[4].pk] in delivery_messages
    assert (stats.events, stats.pending, stats.lost) == (2, 2, 2)

    # Relayed once per claim TTL, not on every run.
    assert not relay.relay(now)
    assert drain(memory_broker) == []


def test_with_a_broker_the_scheduler_leaves_due_work_to_the_workers(memory_broker, group_rule):
    fanned_out()
    assert scheduler.dispatch_due() == 0
    assert not Delivery.objects.exclude(status=Status.PENDING).exists()
    assert "relay" in [name for name, _func, _seconds in scheduler.JOBS]


# -- real workers --------------------------------------------------------------------------------


@pytest.fixture
def machine():
    with machine_to_ourselves():
        yield


def start_workers(tmp_path, broker_url, queue, provider, *, count=1, concurrency=2, **env_extra):
    env = process_env(
        tmp_path / "var",
        provider_url=provider.url,
        broker_url=broker_url,
        queue=queue,
        **env_extra,
    )
    workers = [
        celery_worker(f"w{i}", env, tmp_path, concurrency=concurrency).start() for i in range(count)
    ]
    try:
        for worker in workers:
            worker.wait_ready(90)
    except Exception:
        for worker in workers:
            worker.stop()
        raise
    return workers


def use_broker(settings, provider, broker_url, queue, **notify):
    settings.NOTIFY = {
        **settings.NOTIFY,
        "BROKER_URL": broker_url,
        "CELERY_QUEUE": queue,
        "CHANNELS": {**settings.NOTIFY["CHANNELS"], "counting": counting_channel(provider.url)},
        **notify,
    }
    notify_celery.configure()


@pytest.fixture(params=["rabbitmq", "redis"])
def broker_url(request, tmp_path):
    if request.param == "rabbitmq":
        if not reachable("127.0.0.1", 5672):
            pytest.skip("RabbitMQ is not running on 127.0.0.1:5672")
        yield RABBITMQ_URL
        return
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_celery_worker_delivers_an_event_end_to_end(
    machine, settings, tmp_path, provider, broker_url
):
    queue = unique_queue()
    category = Category.objects.create(key="orders", name="Orders")
    seed_group("crew", 120)
    Rule.objects.create(
        name="crew",
        event_type="order.shipped",
        category=category,
        recipients=["group:crew"],
        channels=["counting"],
        message="order_shipped",
    )
    use_broker(settings, provider, broker_url, queue)
    [worker] = start_workers(tmp_path, broker_url, queue, provider)
    try:
        event = notify.trigger("order.shipped", {"order_id": "E2E"})
        assert wait_until(lambda: Delivery.objects.filter(status=Status.SENT).count() == 120, 45), (
            our_books(),
            worker.text()[-3000:],
        )
    finally:
        worker.stop()
        drop_broker_queue(broker_url, queue)
    assert Event.objects.get(pk=event.pk).status == Event.State.PROCESSED
    books = our_books()
    assert books["sent_twice"] == [] and books["sent_attempts"] == 120
    assert len(provider.accepted()) == 120
    assert set(provider.accepted().values()) == {1}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_message_that_kills_its_worker_ends_dead_and_the_rest_is_sent(
    machine, settings, tmp_path, provider
):
    """A pool process SIGKILLs itself on the poison message at every try: the
    message is requeued (reject on worker lost), the claim expires, the relay
    hands it off alone, and after MAX_ATTEMPTS claims it ends dead."""
    if not reachable("127.0.0.1", 5672):
        pytest.skip("RabbitMQ is not running on 127.0.0.1:5672")
    queue = unique_queue()
    category = Category.objects.create(key="orders", name="Orders")
    seed_group("crew", 30)
    Rule.objects.create(
        name="crew",
        event_type="order.shipped",
        category=category,
        recipients=["group:crew"],
        channels=["counting"],
        message="order_shipped",
    )
    Rule.objects.create(
        name="one",
        event_type="order.poison",
        category=category,
        recipients=["explicit"],
        channels=["counting"],
        message="order_shipped",
    )
    victim = get_user_model().objects.order_by("pk").first()
    overrides = {"MAX_ATTEMPTS": 3, "CLAIM_TTL": 2.0, "WORKER_BATCH_SIZE": 10}
    use_broker(settings, provider, RABBITMQ_URL, queue, **overrides, RELAY_GRACE=2.0)
    [worker] = start_workers(
        tmp_path, RABBITMQ_URL, queue, provider, kill_on="POISON", overrides=overrides
    )
    try:
        poison = notify.trigger("order.poison", {"order_id": "POISON"}, recipients=[victim])
        fine = notify.trigger("order.shipped", {"order_id": "FINE"})

        def settled() -> bool:
            relay.relay()  # the scheduler's job, run here
            return not Delivery.objects.exclude(status__in=Status.FINAL).exists() and (
                Delivery.objects.count() == 31
            )

        assert wait_until(settled, 50, interval=0.5), (our_books(), worker.text()[-4000:])
        assert worker.alive  # the main process survived its pool processes' deaths
    finally:
        worker.stop()
        drop_broker_queue(RABBITMQ_URL, queue)
    dead = Delivery.objects.filter(notification__event=poison)
    assert set(dead.values_list("status", "error_code")) == {(Status.DEAD, "worker_lost")}
    assert list(dead.values_list("attempts", flat=True)) == [3]
    sent = Delivery.objects.filter(notification__event=fine)
    assert set(sent.values_list("status", flat=True)) == {Status.SENT}
    assert our_books()["sent_twice"] == []
    assert "WorkerLostError" in worker.text() or "SIGKILL" in worker.text()


def test_while_messages_wait_in_the_queue_the_relay_waits_longer(
    memory_broker, group_rule, settings
):
    """A backlog is not a lost hand-off: with messages waiting, overdue work may
    be among them, so the relay waits RELAY_GRACE_QUEUED instead of RELAY_GRACE."""
    settings.NOTIFY = {**settings.NOTIFY, "RELAY_GRACE": 15.0, "RELAY_GRACE_QUEUED": 300.0}
    now = timezone.now()
    fanned_out()
    backlog, lost = list(Delivery.objects.order_by("pk"))[:2]
    Delivery.objects.filter(pk=backlog.pk).update(next_attempt_at=now - timedelta(seconds=60))
    Delivery.objects.filter(pk=lost.pk).update(next_attempt_at=now - timedelta(seconds=400))
    dispatchers.get_dispatcher().hand_off_events([123456])  # something waiting in the queue

    stats = relay.relay(now)

    assert stats.queued == 1
    relayed = [i for m in drain(memory_broker) if m["task"] == "notify.deliver" for i in m["ids"]]
    assert relayed == [lost.pk]
