"""Group commit (``notify.intake.group``): rows of concurrent ``trigger()`` calls
committed together, each caller answered with its own committed row or its own
error, never with a row that was not committed."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import IntegrityError, connections

from notify.intake import group, rows
from notify.intake.trigger import IdempotencyKeyReused, event_row, trigger
from notify.models import Event

pytestmark = pytest.mark.django_db(transaction=True)


def slot(event_type: str, *, key: str | None = None, actor_id: int | None = None) -> group.Slot:
    event = Event(
        type=event_type,
        payload={"n": event_type},
        idempotency_scope="test" if key else "",
        idempotency_key=key,
        request_hash=event_type,
        actor_id=actor_id,
    )
    return group.Slot(event_row(event, connections["default"]))


def test_a_group_is_one_insert_and_each_row_gets_its_id():
    batch = [slot(f"group.e{n}") for n in range(5)]
    group.commit_group(batch, "default")
    assert all(s.done and s.error is None for s in batch)
    stored = dict(Event.objects.filter(type__startswith="group.").values_list("pk", "type"))
    assert {s.result(): f"group.e{n}" for n, s in enumerate(batch)} == stored


def test_a_refused_row_fails_alone_and_the_others_are_stored():
    Event.objects.create(type="group.first", idempotency_scope="test", idempotency_key="taken")
    batch = [
        slot("group.a"),
        slot("group.b", key="taken"),  # used before
        slot("group.c", key="twice"),
        slot("group.d", key="twice"),  # the same key twice in one group
        slot("group.e", actor_id=10**9),  # no such user: refused at commit
        slot("group.f"),
    ]
    group.commit_group(batch, "default")
    assert all(s.done for s in batch)
    outcomes = [type(s.error) if s.error else int for s in batch]
    assert outcomes == [int, IntegrityError, int, IntegrityError, IntegrityError, int]
    stored = set(Event.objects.filter(type__startswith="group.").values_list("type", flat=True))
    assert stored == {"group.first", "group.a", "group.c", "group.f"}
    with pytest.raises(IntegrityError):
        batch[1].result()


def test_concurrent_triggers_are_all_committed_and_keys_still_decide(monkeypatch):
    sizes = []
    commit_group = group.commit_group

    def counting(batch, using):
        sizes.append(len(batch))
        commit_group(batch, using)

    monkeypatch.setattr(group, "commit_group", counting)

    def one(n: int):
        try:
            if n < 6:
                return trigger("group.many", {"n": n}, idempotency_key=f"k{n}").pk
            # Two calls with one key and different payloads: one stores, one is refused.
            return trigger("group.many", {"n": n}, idempotency_key="dup").pk
        except IdempotencyKeyReused:
            return "refused"
        finally:
            connections.close_all()

    # The writers' lock held until all eight rows are queued: they are
    # committed in groups (the first leader takes all it finds).
    queue = group._QUEUES.setdefault("default", [])
    with ThreadPoolExecutor(8) as pool:
        with group.writer_lock("default"):
            futures = [pool.submit(one, n) for n in range(8)]
            deadline = time.monotonic() + 10
            while len(queue) < 8 and time.monotonic() < deadline:
                time.sleep(0.01)
        answers = [future.result() for future in futures]
    ids = [a for a in answers if a != "refused"]
    assert answers.count("refused") == 1 and len(ids) == 7 == len(set(ids))
    stored = set(Event.objects.filter(type="group.many").values_list("pk", flat=True))
    assert stored == set(ids)
    assert (
        sizes[0] == 8
    )  # one group, then the refused pair's rows alone  # grouped, and the refused row retried alone


def test_inside_a_transaction_the_event_commits_with_it():
    from django.db import transaction

    with pytest.raises(RuntimeError), transaction.atomic():
        trigger("group.rolled.back")
        raise RuntimeError
    assert not Event.objects.filter(type="group.rolled.back").exists()


def test_sqlite_groups_share_the_writers_lock():
    if connections["default"].vendor == "sqlite":
        assert group.writer_lock("default") is rows._SQLITE_WRITER
