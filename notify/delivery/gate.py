"""One gate per process for sends: shared by ordinary sends, exclusive for a suspect.

A suspect (``notify.outbox.rows.SUSPECT``) was in flight when its worker died:
it may be a message that kills the process sending it. It is sent alone in its
batch and, through this gate, with nothing else in flight in its process
(threads of the worker pool, of a Celery ``threads`` pool), so that if it kills
the process again it is the only one lost and its cause is not in doubt. An
ordinary send waits only while a suspect is in flight or waiting; a suspect
waits for the sends in flight (each bounded by its channel's time-out).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class SendGate:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting = 0  # suspects waiting: ordinary sends let them go first

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        self.enter_shared()
        try:
            yield
        finally:
            self.leave_shared()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        self.enter_exclusive()
        try:
            yield
        finally:
            self.leave_exclusive()

    def enter_shared(self, wait: bool = True) -> bool:
        """Take a shared place, as ``shared`` does but without a block: for a
        batch with several sends in flight, each holding a place until it is
        recorded. ``wait=False``: ``False`` at once when a suspect is in flight
        or waiting (the batch records what it has in flight, giving their
        places back, before it waits: else it would hold up the suspect)."""
        with self._changed:
            while self._exclusive or self._waiting:
                if not wait:
                    return False
                self._changed.wait()
            self._shared += 1
            return True

    def enter_exclusive(self) -> None:
        """Take the exclusive place, as ``exclusive`` does but without a block."""
        with self._changed:
            self._waiting += 1
            while self._exclusive or self._shared:
                self._changed.wait()
            self._waiting -= 1
            self._exclusive = True

    def leave_exclusive(self) -> None:
        """Give back the place taken by ``enter_exclusive``."""
        with self._changed:
            self._exclusive = False
            self._changed.notify_all()

    def leave_shared(self) -> None:
        """Give back a place taken by ``enter_shared``."""
        with self._changed:
            self._shared -= 1
            self._changed.notify_all()


gate = SendGate()
