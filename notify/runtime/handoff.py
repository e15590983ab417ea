"""The dispatch seam: who runs fan-out and deliveries once their rows are committed.

Two engines run the same functions (``notify.fanout.pipeline.process_event``,
``notify.delivery.send.deliver``) over the same claims:

* ``InProcessDispatcher`` (no broker, the embedded default): the worker pool
  threads poll the outbox; a commit in this process wakes them at once
  (``EAGER``: run everything in the committing thread, for tests and scripts);
* ``CeleryDispatcher`` (``NOTIFY["BROKER_URL"]``, env ``NOTIFY_BROKER_URL``):
  ids are published to Celery (``notify.runtime.tasks``) after commit; workers
  (``celery -A notify worker``) claim them in the database.

Publishing never raises into the caller: the rows are committed, which is what
"accepted" means, and a hand-off that fails (broker down) is made again by the
relay (``notify.runtime.relay``) from the outbox. After a failure, hand-offs are
skipped for ``BROKER_BACKOFF`` seconds so requests do not each wait on a dead
broker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from itertools import islice

from notify import conf
from notify.runtime import worker

log = logging.getLogger("notify.runtime.handoff")


def batches(ids: Iterable[int], size: int) -> Iterable[list[int]]:
    iterator = iter(ids)
    while batch := list(islice(iterator, size)):
        yield batch


class InProcessDispatcher:
    """The worker pool polls the tables: a hand-off is a wake-up, never lost."""

    name = "in-process"

    def event_committed(self, event_id: int) -> None:
        if conf.get("EAGER"):
            worker.run_until_idle()
            return
        self.wake()

    def hand_off_events(self, event_ids: Sequence[int]) -> int:
        self.wake()
        return len(event_ids)

    def hand_off_deliveries(
        self, delivery_ids: Sequence[int], countdown: float = 0, size: int | None = None
    ) -> int:
        self.wake()
        return len(delivery_ids)

    @staticmethod
    def wake() -> None:
        worker.wake()


class BrokerUnavailable(Exception):
    """A publish failed; the relay will hand the rows off again."""


class CeleryDispatcher:
    """Publish ids to Celery; the tasks claim and run them."""

    name = "celery"

    def __init__(self) -> None:
        self._down_until = 0.0
        self._lock = threading.Lock()

    # -- what the rest of notify calls ---------------------------------------------

    def event_committed(self, event_id: int) -> None:
        if conf.get("EAGER"):
            InProcessDispatcher().event_committed(event_id)
            return
        try:
            self.hand_off_events([event_id])
        except BrokerUnavailable:
            pass  # logged; the relay hands it off when the broker is back

    def hand_off_events(self, event_ids: Sequence[int]) -> int:
        """Publish one fan-out task per event. Raises ``BrokerUnavailable``."""
        from notify.runtime.tasks import fan_out_events  # tasks imports this module

        return self._publish(fan_out_events, [[event_id] for event_id in event_ids], 0)

    def hand_off_deliveries(
        self, delivery_ids: Sequence[int], countdown: float = 0, size: int | None = None
    ) -> int:
        """Publish delivery ids in batches of ``size`` (default
        ``WORKER_BATCH_SIZE``), due in ``countdown`` seconds (capped: see
        ``countdown_for``). Raises ``BrokerUnavailable``."""
        from notify.runtime.tasks import deliver_deliveries  # tasks imports this module

        size = size or conf.get("WORKER_BATCH_SIZE")
        return self._publish(deliver_deliveries, list(batches(delivery_ids, size)), countdown)

    def queue_depth(self) -> int | None:
        """Messages waiting in the queue (ready, not yet taken by a worker), or
        ``None`` if the broker cannot say (unreachable, or no such queue yet)."""
        if time.monotonic() < self._down_until:
            return None
        from notify.celery import app, configure  # Celery is loaded only once a broker is used

        configure()
        try:
            with app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1)
                channel = connection.channel()
                try:
                    _name, count, _consumers = channel.queue_declare(
                        queue=conf.get("CELERY_QUEUE"), passive=True
                    )
                finally:
                    try:
                        channel.close()
                    except Exception:  # noqa: S110 - a closed channel is fine
                        pass
                return int(count)
        except Exception as exc:
            log.debug("queue depth unknown: %s: %s", type(exc).__name__, exc)
            return None

    # -- publishing --------------------------------------------------------------------

    def _publish(self, task, arguments: list[list[int]], countdown: float) -> int:
        """One message per list of ids; returns how many ids were published."""
        if not arguments:
            return 0
        if time.monotonic() < self._down_until:
            raise BrokerUnavailable("the broker was unreachable moments ago; left to the relay")
        from notify.celery import app, configure  # Celery is loaded only once a broker is used

        configure()
        options = {"queue": conf.get("CELERY_QUEUE")}
        countdown = countdown_for(countdown)
        if countdown:
            options["countdown"] = countdown
        published = 0
        try:
            with app.producer_or_acquire() as producer:
                for ids in arguments:
                    task.apply_async((ids,), producer=producer, **options)
                    published += len(ids)
        except Exception as exc:  # the broker is down, refused, timed out ...
            with self._lock:
                self._down_until = time.monotonic() + conf.get("BROKER_BACKOFF")
            log.warning(
                "hand-off to the broker failed after %d of %d ids (%s: %s); "
                "the relay will hand the rest off again",
                published,
                sum(len(ids) for ids in arguments),
                type(exc).__name__,
                exc,
            )
            raise BrokerUnavailable(str(exc)) from exc
        return published


def countdown_for(seconds: float) -> float:
    """A countdown the broker may hold: at most ``BROKER_MAX_COUNTDOWN``, which
    stays well below Redis's visibility timeout (a message held longer would be
    handed to a second worker). Work due later is the relay's."""
    if seconds <= 0:
        return 0
    limit = min(conf.get("BROKER_MAX_COUNTDOWN"), conf.get("BROKER_VISIBILITY_TIMEOUT") / 2)
    return float(min(seconds, limit))


_dispatchers: dict[str | None, InProcessDispatcher | CeleryDispatcher] = {}


def uses_broker() -> bool:
    return bool(conf.get("BROKER_URL"))


def get_dispatcher() -> InProcessDispatcher | CeleryDispatcher:
    """The engine ``NOTIFY["BROKER_URL"]`` chooses (one instance per URL)."""
    url = conf.get("BROKER_URL") or None
    dispatcher = _dispatchers.get(url)
    if dispatcher is None:
        dispatcher = CeleryDispatcher() if url else InProcessDispatcher()
        _dispatchers[url] = dispatcher
    return dispatcher
