"""A worker process's start-up heap, kept out of the cyclic collector's way.

A process that runs the pipeline keeps what it imported and set up for its
whole life: Django's app registry and model metadata, URL resolvers, the
compiled rules and templates, several hundred thousand container objects
that never become garbage. CPython's cyclic collector still walks every one
of them at each full (generation 2) collection, and fan-out triggers those
often: a chunk allocates tens of thousands of small tracked objects (rows,
preference maps, planned tuples), enough of which survive young collections
to start the next full one. Profiled, a full collection cost more than the
chunk's own work (issue 14, BENCHMARKS.md).

``freeze_startup_heap`` moves what exists once the process is set up to the
collector's permanent generation (``gc.freeze``), which no collection
visits: the practice Instagram described for its Django fleet and the one
the ``gc`` documentation gives for servers. Objects made later are
collected exactly as before; only start-up's survivors are never collected,
which they never were going to be. Every process that runs the pipeline
calls it once it is ready: ``notify worker``, ``notify scheduler``, ``notify
run`` and each Celery worker process (``notify.celery``).
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("notify.runtime.heap")


def freeze_startup_heap() -> int:
    """Collect start-up's garbage, then freeze everything still alive; return
    how many objects the collector now skips. Calling it again later (a
    forked child, after its own set-up) freezes what was added since."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("start-up heap frozen: %d objects out of the cyclic collector's scans", frozen)
    return frozen
