"""A batch's claim, kept while its worker works on it (DESIGN.md, 7).

A claim is a token on the rows: ``claimed_until``, the time it expires. While a
batch is in flight a heartbeat thread moves the expiry of the batch's rows not
yet recorded forward every quarter of ``CLAIM_TTL``, so the claim of a live
worker never expires however long its batch takes (a provider answering in
seconds, a stalled server), and a dead worker's claim expires at most
``CLAIM_TTL`` after its last beat.

The heartbeat stops once the batch has run ``WORKER_BATCH_SECONDS``: the batch
starts no send past that time (``notify.delivery.send``), so what remains is
one send, bounded by its channel's time-out, which the claim's last
``CLAIM_TTL`` covers (system check ``notify.W030``). A worker stuck in a send
that ignores its time-out thus gives its rows up instead of holding them for
ever.

Each beat changes the token. Whoever writes under the claim (records an
outcome, holds, releases) does it inside ``Lease.held()``, which holds the
lease's lock and gives the current token, so a write and a beat never cross.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime

from django.db import DatabaseError, connection
from django.utils import timezone

from notify.models import Delivery
from notify.models.status import Status
from notify.outbox.rows import claim_token

log = logging.getLogger("notify.outbox.lease")


class Lease:
    """The claim of one batch, extended by a heartbeat while ``with lease:`` runs."""

    def __init__(self, token: datetime, ttl: float, keep_for: float):
        self.token = token
        self.ttl = float(ttl)
        self.interval = max(self.ttl / 4, 0.05)
        self._keep_until = time.monotonic() + float(keep_for)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.beats = 0

    def __enter__(self) -> Lease:
        self._thread = threading.Thread(target=self._run, name="notify-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    @contextlib.contextmanager
    def held(self) -> Iterator[datetime]:
        """The current token, with no beat until the block ends."""
        with self._lock:
            yield self.token

    def extend(self, now: datetime | None = None) -> int:
        """Move the claim of the batch's unrecorded rows forward; return how many."""
        with self._lock:
            token = claim_token(now or timezone.now(), self.ttl)
            kept = Delivery.objects.filter(status=Status.SENDING, claimed_until=self.token).update(
                claimed_until=token
            )
            self.token = token
            self.beats += 1
            return kept

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                if time.monotonic() >= self._keep_until:
                    log.warning(
                        "a batch ran past WORKER_BATCH_SECONDS; its claim is no longer "
                        "extended and expires in %g s",
                        self.ttl,
                    )
                    return
                try:
                    self.extend()
                except DatabaseError:
                    # The database went away: try again at the next beat (the
                    # claim still has most of its time to run).
                    log.exception("could not extend a claim; trying again")
                    connection.close()
        finally:
            connection.close()  # this thread's own connection
