"""Recipient resolvers: from a rule's specs and an event to a stream of user ids.

Resolvers never touch the ORM: lookups go through a ``Directory`` (the pipeline
passes one backed by the database; tests pass a dict). Every resolver yields
ascending, distinct ids, and ``resolve_recipients`` merges them lazily, so a
rule that reaches 100,000 group members never holds them all in memory.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

PAGE_SIZE = 5000


class RecipientSpecError(ValueError):
    """A recipient spec that cannot be parsed; the message names it."""


@dataclass(frozen=True, slots=True)
class RecipientSpec:
    kind: str  # explicit | actor | payload | group | staff | users | followers | topic
    argument: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.argument}" if self.argument else self.kind


KINDS_WITH_ARGUMENT = {"payload", "group", "users", "topic"}
KINDS_WITHOUT_ARGUMENT = {"explicit", "actor", "staff", "followers"}
# Subscription-based kinds: the rule's "exclude actor" applies to them.
SUBSCRIPTION_KINDS = {"followers", "topic"}
TOPIC_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,190}$")
KINDS = KINDS_WITH_ARGUMENT | KINDS_WITHOUT_ARGUMENT


def parse_recipient_spec(text: str) -> RecipientSpec:
    kind, _, argument = text.strip().partition(":")
    kind, argument = kind.strip().lower(), argument.strip()
    if kind not in KINDS:
        raise RecipientSpecError(
            f"unknown recipient kind '{kind}'; use one of: {', '.join(sorted(KINDS))}"
        )
    if kind in KINDS_WITH_ARGUMENT and not argument:
        raise RecipientSpecError(f"'{kind}' needs an argument, e.g. '{kind}:{_EXAMPLES[kind]}'")
    if kind in KINDS_WITHOUT_ARGUMENT and argument:
        raise RecipientSpecError(f"'{kind}' takes no argument")
    if kind == "topic" and not TOPIC_NAME.match(argument):
        raise RecipientSpecError(
            f"'{argument}' is not a topic name: letters, digits, '.', '_' and '-'"
        )
    if kind == "users":
        for part in argument.split(","):
            if not part.strip().isdigit():
                raise RecipientSpecError(
                    f"'users:' takes user ids separated by commas, not '{part}'"
                )
    return RecipientSpec(kind, argument)


_EXAMPLES = {
    "payload": "order.customer_id",
    "group": "Support",
    "users": "1,2",
    "topic": "releases",
}


class Directory(Protocol):
    """The lookups resolvers need. Each returns ascending distinct active user ids."""

    def active_ids(self, ids: Iterable[int]) -> list[int]: ...
    def ids_by_email(self, emails: Iterable[str]) -> list[int]: ...
    def group_member_ids(self, group: str, after: int, limit: int) -> list[int]: ...
    def staff_ids(self, after: int, limit: int) -> list[int]: ...
    def subscriber_ids(self, target: str, after: int, limit: int) -> list[int]: ...


@dataclass(frozen=True, slots=True)
class EventRecipients:
    """The parts of an event the resolvers read."""

    payload: dict[str, Any]
    actor_id: int | None
    explicit: tuple[Any, ...]
    object_ref: str = ""  # "app_label.model:pk": whose followers ``followers`` means


def lookup_path(payload: Any, path: str) -> Any:
    """``a.b.0.c`` into nested dicts and lists; ``None`` when absent."""
    value = payload
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _ids_and_emails(values: Iterable[Any], directory: Directory) -> list[int]:
    ids: set[int] = set()
    emails: set[str] = set()
    for value in values:
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, str) and value.strip().isdigit():
            ids.add(int(value.strip()))
        elif isinstance(value, str) and "@" in value:
            emails.add(value.strip().lower())
    found = set(directory.active_ids(sorted(ids))) if ids else set()
    if emails:
        found.update(directory.ids_by_email(sorted(emails)))
    return sorted(found)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _paged(fetch: Callable[[int, int], list[int]]) -> Iterator[int]:
    after = 0
    while True:
        page = fetch(after, PAGE_SIZE)
        yield from page
        if len(page) < PAGE_SIZE:
            return
        after = page[-1]


def resolve_spec(
    spec: RecipientSpec, event: EventRecipients, directory: Directory
) -> Iterator[int]:
    """The ascending user ids one spec names."""
    if spec.kind == "explicit":
        return iter(_ids_and_emails(event.explicit, directory))
    if spec.kind == "actor":
        return iter(directory.active_ids([event.actor_id]) if event.actor_id else [])
    if spec.kind == "payload":
        return iter(_ids_and_emails(_as_list(lookup_path(event.payload, spec.argument)), directory))
    if spec.kind == "users":
        return iter(directory.active_ids(sorted({int(p) for p in spec.argument.split(",")})))
    if spec.kind == "group":
        return _paged(lambda after, limit: directory.group_member_ids(spec.argument, after, limit))
    if spec.kind == "staff":
        return _paged(directory.staff_ids)
    if spec.kind in SUBSCRIPTION_KINDS:
        target = subscription_target(spec, event)
        if not target:
            return iter(())
        return _paged(lambda after, limit: directory.subscriber_ids(target, after, limit))
    raise RecipientSpecError(f"unknown recipient kind '{spec.kind}'")


def subscription_target(spec: RecipientSpec, event: EventRecipients) -> str:
    """The ``Subscription.target`` a spec reads: the event's object for
    ``followers`` ("" when the event is about no object), ``topic:<name>``."""
    if spec.kind == "followers":
        return event.object_ref
    return f"topic:{spec.argument}"


def resolve_recipients(
    specs: Iterable[RecipientSpec],
    event: EventRecipients,
    directory: Directory,
    exclude_actor: bool = False,
) -> Iterator[int]:
    """Merge every spec's ids into one ascending stream without duplicates.

    With ``exclude_actor``, the event's actor is left out of the followers and
    topic subscribers (not out of the other specs: a rule that names
    ``actor`` means it)."""
    streams = []
    for spec in specs:
        stream = resolve_spec(spec, event, directory)
        if exclude_actor and event.actor_id is not None and spec.kind in SUBSCRIPTION_KINDS:
            stream = _without(stream, event.actor_id)
        streams.append(stream)
    previous = None
    for user_id in heapq.merge(*streams):
        if user_id != previous:
            yield user_id
            previous = user_id


def _without(ids: Iterator[int], excluded: int) -> Iterator[int]:
    return (i for i in ids if i != excluded)
