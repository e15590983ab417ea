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
3. deliveries whose claim expired (their worker died), batch by lost batch,
   each batch split in half once more at every loss: a message that kills its
   worker is alone after a few tries and takes no innocent batch with it; at
   its last attempt the claim ends it dead.

The grace period is ``RELAY_GRACE`` seconds when the queue is empty, and
``RELAY_GRACE_QUEUED`` while it holds messages: then the work may just be
waiting its turn in a backlog, and relaying it would only double the queue.
Relaying twice is harmless all the same (a task claims what is still due, or
does nothing); to keep the queue lean, an id is relayed at most once per
grace period (lost claims: per ``CLAIM_TTL``) by this process. Without a broker the relay does nothing: the
in-process pool polls the outbox itself.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import groupby
from operator import itemgetter

from django.db.models import F, Q
from django.utils import timezone

from notify import conf
from notify.models import Delivery, Event
from notify.models.status import Status
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

        rows = list(
            lost_deliveries(now)
            .order_by("claimed_until", "pk")
            .values_list("pk", "attempts", "claimed_until")[:limit]
        )
        # A lost delivery is eligible only while its claim is expired: once a
        # worker claims it again it drops out. Relay it again after a claim TTL
        # (its message may be waiting in a backlog), never sooner.
        lost_window = conf.get("CLAIM_TTL")
        fresh = set(recently_relayed.fresh("delivery", [row[0] for row in rows], lost_window))
        size = conf.get("WORKER_BATCH_SIZE")
        # Rows of one lost batch share its claim token (claimed_until).
        for _token, group in groupby(rows, key=itemgetter(2)):
            group = [(pk, attempts) for pk, attempts, _ in group if pk in fresh]
            if group:
                losses = max(attempts for _, attempts in group)
                stats.lost += dispatcher.hand_off_deliveries(
                    [pk for pk, _ in group], size=max(1, size >> (losses - 1))
                )
        recently_relayed.mark("delivery", list(fresh))
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
