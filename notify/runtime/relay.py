"""The relay: the outbox is the truth, the broker only a way to say "look".

With Celery (``NOTIFY["BROKER_URL"]``), work reaches the workers as messages
published after commit. A message can be lost: the broker was down at commit,
Redis restarted without persistence, a publish timed out. And claimed work can
be orphaned: the worker that held the claim was killed. The relay, a
scheduler job every ``RELAY_INTERVAL`` seconds on the one leader, reads the
outbox and hands such work off again:

1. events waiting for fan-out: received more than a grace period ago and
   still not claimed, scheduled ones whose time has come, and those whose
   fan-out claim expired;
2. deliveries pending and due for which no hand-off is on its way: due for
   more than a grace period (the hand-off at commit was lost), or due
   now but written with nothing handed off for them (delayed sends,
   reminders, quiet-hours holds, retries later than ``BROKER_MAX_COUNTDOWN``,
   an admin's "retry": any row whose ``next_attempt_at`` lies further than
   that from its last write);
3. deliveries whose claim expired (their worker died), sorted out by
   ``notify.outbox.rows.reap_lost``: the one in flight at the loss is handed
   off alone (a message that kills its worker takes no batch mate with it, and
   ends dead after ``MAX_WORKER_LOSSES``), the never-started ones in batches.

The grace period is ``RELAY_GRACE`` seconds when the queue is empty, and
``RELAY_GRACE_QUEUED`` while it holds messages: then the work may just be
waiting its turn in a backlog, and relaying it would only double the queue.
Relaying twice is harmless all the same (a task claims what is still due, or
does nothing); to keep the queue lean, an id is relayed at most once per
grace period by this process. Without a broker the relay does nothing: the
in-process pool polls the outbox itself.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import F, Q
from django.utils import timezone

from notify import conf
from notify.models import Delivery, Event
from notify.models.status import Status
from notify.outbox.rows import reap_lost
from notify.runtime.handoff import BrokerUnavailable, get_dispatcher, uses_broker

log = logging.getLogger("notify.runtime.relay")


@dataclass(slots=True)
class RelayStats:
    events: int = 0
    pending: int = 0
    lost: int = 0
    queued: int | None = None  # messages waiting in the queue, if the broker said
    broker_down: bool = False

    def __bool__(self) -> bool:
        return bool(self.events or self.pending or self.lost)


class RecentlyRelayed:
    """Ids relayed in the last ``window`` seconds (this process only: a new
    leader may relay once more, which a claim makes harmless)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, int], float] = {}
        self._lock = threading.Lock()

    def fresh(self, kind: str, ids: list[int], window: float) -> list[int]:
        now = time.monotonic()
        with self._lock:
            if len(self._seen) > 50_000:
                self._seen = {k: t for k, t in self._seen.items() if now - t < window}
            return [i for i in ids if now - self._seen.get((kind, i), -window) >= window]

    def mark(self, kind: str, ids: list[int]) -> None:
        now = time.monotonic()
        with self._lock:
            for i in ids:
                self._seen[(kind, i)] = now

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()


recently_relayed = RecentlyRelayed()


def waiting_events(now: datetime, grace: float):
    """Events no fan-out task is on its way for (see the module docstring, 1)."""
    unclaimed = Q(claimed_until__isnull=True) | Q(claimed_until__lte=now)
    due = Q(scheduled_for__isnull=True, received_at__lte=now - timedelta(seconds=grace)) | Q(
        scheduled_for__lte=now
    )
    return Event.objects.filter(
        (Q(status=Event.State.RECEIVED) & unclaimed & due)
        | Q(status=Event.State.PROCESSING, claimed_until__lt=now)
    )


def unhanded_deliveries(now: datetime, grace: float, max_countdown: float):
    """Pending, due deliveries no message is on its way for (2)."""
    return Delivery.objects.filter(status=Status.PENDING, next_attempt_at__lte=now).filter(
        Q(next_attempt_at__lte=now - timedelta(seconds=grace))
        | Q(next_attempt_at__gt=F("updated_at") + timedelta(seconds=max_countdown))
    )


def lost_deliveries(now: datetime):
    """Claimed deliveries whose claim expired (3)."""
    return Delivery.objects.filter(status=Status.SENDING, claimed_until__lt=now)


def relay(now: datetime | None = None) -> RelayStats:
    """Hand off again what the broker should have and may not; see the module docstring."""
    stats = RelayStats()
    if not uses_broker():
        return stats
    now = now or timezone.now()
    dispatcher = get_dispatcher()
    stats.queued = dispatcher.queue_depth()
    grace = conf.get("RELAY_GRACE") if not stats.queued else conf.get("RELAY_GRACE_QUEUED")
    window = max(conf.get("CLAIM_TTL"), grace)
    limit = conf.get("RELAY_MAX_ROWS")
    try:
        events = waiting_events(now, grace).order_by("received_at")
        ids = recently_relayed.fresh(
            "event", list(events.values_list("pk", flat=True)[:limit]), window
        )
        stats.events = dispatcher.hand_off_events(ids)
        recently_relayed.mark("event", ids)

        pending = unhanded_deliveries(now, grace, conf.get("BROKER_MAX_COUNTDOWN"))
        ids = list(pending.order_by("next_attempt_at").values_list("pk", flat=True)[:limit])
        ids = recently_relayed.fresh("delivery", ids, window)
        stats.pending = dispatcher.hand_off_deliveries(ids)
        recently_relayed.mark("delivery", ids)

        # Claims that expired (their worker died): sorted out (reap_lost), the
        # one in flight at the loss handed off alone, the never-started in batches.
        tokens = list(
            lost_deliveries(now).values_list("claimed_until", flat=True).distinct()[:limit]
        )
        reaped = reap_lost(tokens, now)
        for pk in reaped.suspects:
            stats.lost += dispatcher.hand_off_deliveries([pk], size=1)
        stats.lost += dispatcher.hand_off_deliveries(reaped.mates)
        recently_relayed.mark("delivery", reaped.suspects + reaped.mates)
    except BrokerUnavailable:
        stats.broker_down = True
    if stats:
        log.info(
            "relay: handed off %d events, %d pending and %d lost deliveries again "
            "(%s messages were waiting)",
            stats.events,
            stats.pending,
            stats.lost,
            "?" if stats.queued is None else stats.queued,
        )
    return stats
