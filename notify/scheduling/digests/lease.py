"""The claim on a batch of digests, kept alive by the leader that sends them.

A claimed digest is ``sending`` with ``due_at`` = the claim's expiry (the
token). While the leader works through its batch it extends the claim on the
digests it has not sent yet (every third of ``CLAIM_TTL``), so a batch that
takes longer than the claim time is never claimed again under a live leader;
each digest leaves the lease as soon as its outcome is recorded. When the
leader dies nothing extends the claim: the next leader takes the unsent
digests once it expires, and only the one that was in flight can reach its
user twice (with the same ``X-Notify-Delivery``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from notify.models import Digest
from notify.models.status import Status

EXTEND_AFTER = 1 / 3  # of the claim time: extend once a third of it has passed


class DigestLease:
    """The digests of one claim that are not recorded yet, and the current token."""

    def __init__(self, ids: Iterable[int], token: datetime, ttl: float) -> None:
        self.held = set(ids)
        self.token = token
        self.ttl = timedelta(seconds=ttl)

    def holds(self, digest_id: int) -> bool:
        """Whether ``digest_id`` is still ours to send (extending the claim if due)."""
        self.keep()
        return digest_id in self.held

    def keep(self, now: datetime | None = None) -> None:
        """Extend the claim on every digest still held, once a third of it has passed.

        A digest whose claim was lost meanwhile (it expired and another
        scheduler took it) leaves the lease: sending it is now the other's job."""
        now = now or timezone.now()
        if not self.held or self.token - now > self.ttl * (1 - EXTEND_AFTER):
            return
        token = now + self.ttl
        held = list(self.held)
        with transaction.atomic():
            # One conditional UPDATE: only rows still under our token move on.
            Digest.objects.filter(pk__in=held, status=Status.SENDING, due_at=self.token).update(
                due_at=token
            )
            kept = Digest.objects.filter(pk__in=held, status=Status.SENDING, due_at=token)
            self.held = set(kept.values_list("pk", flat=True))
        self.token = token

    def release(self, digest_id: int) -> None:
        """The digest's outcome is recorded: its claim is no longer extended."""
        self.held.discard(digest_id)
