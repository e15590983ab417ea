"""Measuring tools: query counts, peak memory, and a process of one's own.

* ``count_queries`` counts statements through ``connection.execute_wrapper``
  (an ``executemany`` is one statement); unlike ``CaptureQueriesContext`` it
  keeps no SQL text, which would distort time and memory on big inserts.
* ``isolated`` runs a function in a forked child: Linux resets the child's RSS
  high-water mark to its RSS at fork time, so ``getrusage`` deltas measured in
  it belong to that function alone, however large earlier runs grew.
* ``phase_timers`` wraps named functions for the length of a block and adds up
  the time spent in each: a stage breakdown without a profiler's overhead;
* ``python_heap_peak`` is ``tracemalloc``'s peak over a call (Python objects
  only; it slows the call down, so never time a call while tracing).
"""

from __future__ import annotations

import contextlib
import cProfile
import io
import json
import os
import pstats
import resource
import sys
import time
import traceback
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

from django.db import connections

MIB = 1024 * 1024


class QueryCounter:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)


@contextlib.contextmanager
def count_queries(using: str = "default") -> Iterator[QueryCounter]:
    counter = QueryCounter()
    with connections[using].execute_wrapper(counter):
        yield counter


def max_rss_mib() -> float:
    """This process's RSS high-water mark (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024


class Stopwatch:
    """Wall time and RSS high-water growth over a ``with`` block."""

    seconds: float = 0.0
    rss_delta_mib: float = 0.0

    def __enter__(self) -> Stopwatch:
        self._rss = max_rss_mib()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start
        self.rss_delta_mib = max_rss_mib() - self._rss


@contextlib.contextmanager
def phase_timers(targets: list[tuple[Any, str, str]]) -> Iterator[dict[str, float]]:
    """Time calls to ``owner.attribute`` under ``label`` for each target, then restore.

    Patch the name where it is looked up (``notify.fanout.sequence.plan_chunk``, not
    where it is defined). Nested targets count in both labels. A target that
    no longer exists (the code moved on) is reported as ``None``, not an error.
    """
    phases: dict[str, float | None] = {label: 0.0 for _, _, label in targets}
    originals = []

    def timed(function: Callable[..., Any], label: str) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                phases[label] += time.perf_counter() - start

        return wrapper

    for owner, attribute, label in targets:
        original = vars(owner).get(attribute)
        if original is None:
            phases[label] = None
            continue
        originals.append((owner, attribute, original))
        setattr(owner, attribute, timed(original, label))
    try:
        yield phases
    finally:
        for owner, attribute, original in reversed(originals):
            setattr(owner, attribute, original)


def python_heap_peak(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Call ``fn`` under tracemalloc; return its result and the peak in MiB."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, (peak - base) / MIB


def profile_call(fn: Callable[[], Any], path: str, top: int = 30) -> tuple[Any, str]:
    """Call ``fn`` under cProfile; dump the stats to ``path``; return the result
    and the top functions by cumulative and by own time, as text."""
    profiler = cProfile.Profile()
    result = profiler.runcall(fn)
    profiler.dump_stats(path)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return result, out.getvalue()


class IsolatedError(RuntimeError):
    """The forked child raised; the message carries its traceback."""


def isolated(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a forked child and return its (JSON-able) result.

    Database connections are closed first so that parent and child never share
    a socket or an SQLite handle; the child closes its own before leaving.
    On PostgreSQL with the connection pool, closing only returns a connection
    to the pool: the pool itself is closed, or the child would take a socket
    the parent's pool still holds, and close when it shrinks its idle ones
    (``max_idle``): 100,000-recipient runs died a minute in with "server
    closed the connection unexpectedly". Without ``os.fork`` the function
    simply runs here.
    """
    if not hasattr(os, "fork"):
        return fn()
    connections.close_all()
    for conn in connections.all(initialized_only=True):
        # Only a pool that exists (``conn.pool`` would open one to close it).
        if conn.alias in getattr(conn, "_connection_pools", {}):
            conn.close_pool()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into the caller's stack
        status = 0
        try:
            os.close(read_fd)
            try:
                payload = {"result": fn()}
            except BaseException:
                payload = {"error": traceback.format_exc()}
                status = 1
            connections.close_all()
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(json.dumps(payload, default=str).encode())
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        raise IsolatedError(f"the measuring child died (wait status {status})")
    payload = json.loads(data)
    if "error" in payload:
        raise IsolatedError(payload["error"])
    return payload["result"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
