"""What a batched notification's template receives: the events collected into
its workflow run (``notify.fanout.runs``), as ``batch``:

``count`` (events), ``actors`` (distinct names, in order of arrival),
``others`` (actors after the first), ``summary`` ("Alice and 24 others"),
``events`` (each event's ``payload``, ``actor``, ``event_id``). The same
helper is a template filter: ``{{ batch.actors | and_others(batch.count) }}``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from notify.fanout.context import actor_context
from notify.models import WorkflowBatchItem

# Items handed to a template at most (a batch can be large; the count is exact).
BATCH_ITEMS_SHOWN = 50


def and_others(names: Sequence[str] | str, total: int | None = None, shown: int = 1) -> str:
    """``"Alice"``, ``"Alice and Bob"``, ``"Alice and 24 others"``: the first
    ``shown`` names and how many more (``total`` when it counts more than the list)."""
    if isinstance(names, str):
        names = [names]
    names = [str(n) for n in names if n]
    total = max(total or 0, len(names))
    if not names:
        return f"{total} {'person' if total == 1 else 'people'}" if total else ""
    if total == 1:
        return names[0]
    if total == 2 and len(names) == 2:
        return f"{names[0]} and {names[1]}"
    head = names[: max(1, shown)]
    rest = total - len(head)
    return f"{', '.join(head)} and {rest} other{'s' if rest != 1 else ''}"


def single_batch(
    payload: Any, actor: dict[str, Any] | None, event_id: int | None
) -> dict[str, Any]:
    """The ``batch`` of a message about one event."""
    name = actor["name"] if actor else ""
    return {
        "count": 1,
        "actors": [name] if name else [],
        "others": 0,
        "summary": name,
        "events": [{"event_id": event_id, "payload": payload, "actor": actor}],
    }


def batch_context(run_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """``batch`` per run id (one query for the lot)."""
    if not run_ids:
        return {}
    rows: dict[int, list[WorkflowBatchItem]] = defaultdict(list)
    for item in (
        WorkflowBatchItem.objects.filter(run_id__in=list(run_ids))
        .select_related("event__actor")
        .order_by("run_id", "added_at", "id")
    ):
        rows[item.run_id].append(item)
    out = {}
    for run_id, items in rows.items():
        actors: list[str] = []
        for item in items:
            actor = actor_context(item.event.actor)
            name = actor["name"] if actor else ""
            if name and name not in actors:
                actors.append(name)
        out[run_id] = {
            "count": len(items),
            "actors": actors,
            "others": max(0, len(actors) - 1),
            "summary": and_others(actors, len(actors)),
            "events": [
                {
                    "event_id": item.event_id,
                    "payload": item.event.payload,
                    "actor": actor_context(item.event.actor),
                }
                for item in items[:BATCH_ITEMS_SHOWN]
            ],
        }
    return out
