"""A benchmark peer served from a forked process.

The peers run in their own process so they do not compete with the worker
being measured for Python's interpreter lock. A subclass names its ``_serve``
target and its shared counters; start, stop and waiting live here once.
"""

from __future__ import annotations

import multiprocessing
import socket
import time
from collections.abc import Callable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ForkedPeer:
    """``start()`` it, drive it on ``127.0.0.1:port``, read ``count``, ``stop()``."""

    kind = "peer"

    def __init__(self, serve: Callable[..., None], *counters: str) -> None:
        context = multiprocessing.get_context("fork")
        self.port = free_port()
        self._counters = {name: context.Value("q", 0) for name in counters}
        self._ready = context.Event()
        self._stop = context.Event()
        self._process = context.Process(
            target=serve,
            args=(self.port, *self._counters.values(), self._ready, self._stop),
            name=f"notify-bench-{self.kind}",
            daemon=True,
        )

    def counter(self, name: str) -> int:
        return self._counters[name].value

    @property
    def count(self) -> int:
        """The first counter: what ``wait_for`` waits on."""
        return next(iter(self._counters.values())).value

    def start(self, timeout: float = 10.0) -> None:
        self._process.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"the local {self.kind} server did not start within {timeout:.0f} s")

    def stop(self) -> None:
        self._stop.set()
        self._process.join(5)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)

    def wait_for(self, count: int, timeout: float = 5.0) -> int:
        """The count once it reaches ``count`` (or the timeout passes)."""
        deadline = time.monotonic() + timeout
        while self.count < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.count
