"""The start-up heap is frozen in every process that runs the pipeline
(``notify.runtime.heap``): a full collection walks only what came after."""

from __future__ import annotations

import gc
import weakref

import pytest
from celery import signals

import notify.celery  # noqa: F401 - connects its receivers, as `celery -A notify` does
from notify.runtime.heap import freeze_startup_heap
from tests.scaleout import notify_worker, process_env, scheduler


@pytest.fixture
def unfrozen():
    gc.unfreeze()
    yield
    gc.unfreeze()


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_the_startup_heap_leaves_the_collectors_scans(unfrozen):
    gc.collect()
    heap = len(gc.get_objects())
    frozen = freeze_startup_heap()
    assert frozen >= heap * 0.95  # Django, the apps, pytest: all that survives
    # What a full collection still walks: the generations, not the frozen heap.
    assert sum(len(gc.get_objects(generation)) for generation in range(3)) < frozen / 10


def test_objects_made_after_it_are_collected_as_before(unfrozen):
    freeze_startup_heap()
    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: only the cyclic collector frees it
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None


def test_each_celery_pool_process_freezes_its_heap(unfrozen):
    """The fan-out tasks run in the prefork pool's processes."""
    signals.worker_process_init.send(sender=None)
    assert gc.get_freeze_count() > 0


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("start", [notify_worker, scheduler], ids=["worker", "scheduler"])
def test_worker_and_scheduler_processes_freeze_their_heap_at_start(start, tmp_path):
    process = start("proc", process_env(tmp_path / "var"), tmp_path)
    try:
        process.start()
        process.wait_ready(90)
        text = process.text(since_start=True)
    finally:
        process.stop()
    line = next(line for line in text.splitlines() if "start-up heap frozen" in line)
    assert int(line.split("frozen: ")[1].split()[0]) > 100_000
    assert text.index("start-up heap frozen") < text.index(process.ready)
