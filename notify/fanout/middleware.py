"""Event middleware: a chain of processors every event passes before the rules.

In the spirit of Django's middleware, ``NOTIFY["EVENT_MIDDLEWARE"]`` lists
processors by dotted path, each optionally with options::

    NOTIFY["EVENT_MIDDLEWARE"] = [
        "notify.fanout.middleware.TagBySource",
        {"CLASS": "notify.fanout.middleware.DropByType", "OPTIONS": {"types": ["debug.*"]}},
        {"CLASS": "notify.fanout.middleware.RedactFields",
         "OPTIONS": {"fields": ["password", "card.number"]}},
        {"CLASS": "notify.fanout.middleware.EnrichWithObject",
         "OPTIONS": {"model": "shop.Order", "field": "order_id", "into": "order"}},
    ]

A processor is a small class, built once per process with its options, whose
``process(event)`` takes an :class:`EventData` (plain data: type, payload,
actor, recipients, source, object reference, tags) and returns it — changed
or not — or ``None`` to drop the event. The processors run in order in
``notify.fanout.pipeline.process_event``, after the event was stored and before the
rules see it; what they change (payload, recipients, tags) is saved on the
event, so the worker renders from the enriched, redacted payload.

A dropped event is kept, processed, tagged ``dropped`` with a note naming the
processor. A processor that raises never loses the event either: it stays
stored, ``failed``, with the error ``middleware <dotted path> raised
<Exception>: <message>``, and "Process again" in admin runs it through the
chain again once the processor is fixed. Processors should therefore be
idempotent (the built-ins are).
"""

from __future__ import annotations

import copy
import fnmatch
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from django.utils.module_loading import import_string

from notify import conf
from notify.fanout.payload import snapshot
from notify.models import Event

log = logging.getLogger("notify.fanout.middleware")

DROPPED_TAG = "dropped"


@dataclass(slots=True)
class EventData:
    """An event as plain data: what a processor reads and returns."""

    type: str
    payload: dict[str, Any]
    source: str = Event.Source.PYTHON
    actor_id: int | None = None
    recipients: list[Any] = field(default_factory=list)
    object_ref: str = ""
    tags: list[str] = field(default_factory=list)
    id: int | None = None
    received_at: datetime | None = None

    @classmethod
    def from_event(cls, event: Event) -> EventData:
        return cls(
            type=event.type,
            # A deep copy: a processor may change it in place.
            payload=copy.deepcopy(event.payload) if isinstance(event.payload, dict) else {},
            source=event.source,
            actor_id=event.actor_id,
            recipients=copy.deepcopy(list(event.recipients or [])),
            object_ref=event.object_ref,
            tags=list(event.tags or []),
            id=event.pk,
            received_at=event.received_at,
        )

    def with_tags(self, *tags: str) -> EventData:
        """The same event with ``tags`` added (each once, order kept)."""
        return replace(self, tags=list(dict.fromkeys([*self.tags, *tags])))


class EventProcessor:
    """Base class: keyword options in, ``process(event) -> event | None``."""

    def __init__(self, **options: Any):
        self.options = options

    def process(self, event: EventData) -> EventData | None:
        return event


class EventMiddlewareError(Exception):
    """A processor raised; the message names it, its exception and the message."""

    def __init__(self, path: str, exc: BaseException):
        self.path = path
        self.exc = exc
        super().__init__(f"middleware {path} raised {type(exc).__name__}: {exc}")


# -- the chain ----------------------------------------------------------------------------


def entry_of(item: Any) -> tuple[str, dict[str, Any]]:
    """(dotted path, options) of one ``EVENT_MIDDLEWARE`` entry."""
    if isinstance(item, str):
        return item, {}
    if isinstance(item, Mapping) and isinstance(item.get("CLASS"), str):
        options = item.get("OPTIONS") or {}
        if not isinstance(options, Mapping):
            raise ImproperlyConfigured(
                f"EVENT_MIDDLEWARE: OPTIONS of {item['CLASS']} must be a dict"
            )
        return item["CLASS"], dict(options)
    raise ImproperlyConfigured(
        "NOTIFY['EVENT_MIDDLEWARE'] entries are dotted paths or "
        f"{{'CLASS': dotted path, 'OPTIONS': {{...}}}}, not {item!r}"
    )


def build_chain(config: Iterable[Any]) -> list[tuple[str, EventProcessor]]:
    """Import and instantiate each processor; raise ``ImproperlyConfigured``
    naming the entry that cannot be built."""
    chain = []
    for item in config:
        path, options = entry_of(item)
        try:
            cls = import_string(path)
        except ImportError as exc:
            raise ImproperlyConfigured(f"EVENT_MIDDLEWARE: cannot import {path}: {exc}") from exc
        try:
            processor = cls(**options)
        except Exception as exc:
            raise ImproperlyConfigured(
                f"EVENT_MIDDLEWARE: {path}({', '.join(options)}) failed: {type(exc).__name__}: {exc}"
            ) from exc
        if not callable(getattr(processor, "process", None)):
            raise ImproperlyConfigured(f"EVENT_MIDDLEWARE: {path} has no process(event) method")
        chain.append((path, processor))
    return chain


_built: tuple[str, list[tuple[str, EventProcessor]]] | None = None


def get_chain() -> list[tuple[str, EventProcessor]]:
    """The configured chain, built once per configuration."""
    global _built
    config = conf.get("EVENT_MIDDLEWARE") or []
    key = repr(config)
    if _built is None or _built[0] != key:
        _built = (key, build_chain(config))
    return _built[1]


def run_chain(
    event: EventData, chain: Sequence[tuple[str, EventProcessor]]
) -> tuple[EventData, str]:
    """Pass ``event`` through ``chain``. Returns the event as the last processor
    left it and, if one dropped it, that processor's path ("" otherwise)."""
    for path, processor in chain:
        try:
            result = processor.process(event)
        except Exception as exc:
            raise EventMiddlewareError(path, exc) from exc
        if result is None:
            return event, path
        if not isinstance(result, EventData):
            raise EventMiddlewareError(
                path,
                TypeError(f"process() returned {type(result).__name__}, not EventData or None"),
            )
        event = result
    return event, ""


def apply_event_middleware(event: Event) -> Event | None:
    """Run the configured chain over a stored event and save what it changed.

    Returns the event to fan out, or ``None`` if a processor dropped it (the
    event is then recorded as processed, tagged ``dropped``). Raises
    ``EventMiddlewareError`` if a processor raised (nothing is saved)."""
    chain = get_chain()
    if not chain:
        return event
    before = EventData.from_event(event)
    after, dropped_by = run_chain(EventData.from_event(event), chain)
    if dropped_by:
        # Kept as the processors before the drop left it (tags included).
        tags = list(dict.fromkeys([*after.tags, DROPPED_TAG]))
        Event.objects.filter(pk=event.pk).update(
            payload=after.payload,
            status=Event.State.PROCESSED,
            processed_at=timezone.now(),
            claimed_until=None,
            tags=tags,
            error=f"dropped by middleware {dropped_by}",
        )
        log.info("event %s dropped by middleware %s", event.pk, dropped_by)
        return None
    changed = {
        name: getattr(after, name)
        for name in ("payload", "recipients", "tags")
        if getattr(after, name) != getattr(before, name)
    }
    if changed:
        Event.objects.filter(pk=event.pk).update(**changed)
        for name, value in changed.items():
            setattr(event, name, value)
    return event


# -- built-in processors ------------------------------------------------------------------


class RedactFields(EventProcessor):
    """Replace payload values before anyone reads them, and tag ``redacted``.

    ``fields``: a dotted path (``card.number``) replaces that one value; a bare
    name (``password``) replaces that key wherever it appears, in nested
    objects and lists too. ``replacement`` defaults to ``"[redacted]"``."""

    def __init__(self, fields: Sequence[str] = (), replacement: Any = "[redacted]", **options):
        super().__init__(**options)
        if isinstance(fields, str) or not fields:
            raise ValueError("fields must be a non-empty list of names or dotted paths")
        self.paths = [tuple(f.split(".")) for f in fields if "." in f]
        self.names = {f for f in fields if "." not in f}
        self.replacement = replacement

    def process(self, event: EventData) -> EventData:
        payload, hits = self._walk(event.payload)
        for path in self.paths:
            hits += self._at_path(payload, path)
        if not hits:
            return event
        return replace(event, payload=payload).with_tags("redacted")

    def _walk(self, value: Any) -> tuple[Any, int]:
        hits = 0
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if key in self.names:
                    hits += item != self.replacement
                    out[key] = self.replacement
                else:
                    out[key], found = self._walk(item)
                    hits += found
            return out, hits
        if isinstance(value, list):
            items = [self._walk(item) for item in value]
            return [item for item, _ in items], sum(found for _, found in items)
        return value, 0

    def _at_path(self, payload: dict[str, Any], path: tuple[str, ...]) -> int:
        node: Any = payload
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and path[-1] in node and node[path[-1]] != self.replacement:
            node[path[-1]] = self.replacement
            return 1
        return 0


class DropByType(EventProcessor):
    """Drop events whose type matches one of ``types`` (shell patterns: ``debug.*``)."""

    def __init__(self, types: Sequence[str] = (), **options):
        super().__init__(**options)
        if isinstance(types, str) or not types:
            raise ValueError("types must be a non-empty list of event types or patterns")
        self.types = list(types)

    def process(self, event: EventData) -> EventData | None:
        if any(fnmatch.fnmatchcase(event.type, pattern) for pattern in self.types):
            return None
        return event


class TagBySource(EventProcessor):
    """Tag each event ``source:<source>`` (python, signal, api, cli), plus the
    tags ``extra`` maps its source to: ``{"api": ["external"]}``."""

    def __init__(self, extra: Mapping[str, Sequence[str]] | None = None, **options):
        super().__init__(**options)
        self.extra = {source: list(tags) for source, tags in (extra or {}).items()}

    def process(self, event: EventData) -> EventData:
        return event.with_tags(f"source:{event.source}", *self.extra.get(event.source, ()))


class EnrichWithObject(EventProcessor):
    """Add a related object to the payload, looked up when the event is processed.

    ``model`` ("app_label.Model") is looked up by the payload value at
    ``field`` (a dotted path; compared with ``lookup``, the primary key by
    default), or without ``field`` by the event's object reference (signal
    events: ``app_label.model:pk``). The object's fields (``fields``, default
    all; never secrets: see ``notify.fanout.payload.snapshot``) go under ``into`` and
    the event is tagged ``enriched``. Not found: ``into`` is ``None`` and the
    tag is ``enrich-missing`` — or, with ``required=True``, the processor
    raises and the event fails (to be processed again later)."""

    def __init__(
        self,
        model: str = "",
        field: str = "",
        into: str = "",
        fields: Sequence[str] | None = None,
        lookup: str = "pk",
        required: bool = False,
        **options,
    ):
        super().__init__(**options)
        if not model or not into:
            raise ValueError("model ('app_label.Model') and into (a payload key) are required")
        self.model = apps.get_model(model)
        self.field = tuple(field.split(".")) if field else ()
        self.into = into
        self.fields = list(fields) if fields is not None else None
        self.lookup = lookup
        self.required = required

    def key_of(self, event: EventData) -> Any:
        if not self.field:
            label, _, pk = event.object_ref.partition(":")
            return pk if label == self.model._meta.label_lower and pk else None
        node: Any = event.payload
        for key in self.field:
            node = node.get(key) if isinstance(node, dict) else None
        return node

    def process(self, event: EventData) -> EventData:
        key = self.key_of(event)
        instance = None
        if key is not None and not isinstance(key, dict | list | bool):
            instance = self.model._default_manager.filter(**{self.lookup: key}).first()
        if instance is None:
            if self.required:
                raise LookupError(f"no {self.model._meta.label} with {self.lookup}={key!r}")
            payload = {**event.payload, self.into: None}
            return replace(event, payload=payload).with_tags("enrich-missing")
        payload = {**event.payload, self.into: snapshot(instance, self.fields)}
        return replace(event, payload=payload).with_tags("enriched")


BUILT_IN = (RedactFields, DropByType, TagBySource, EnrichWithObject)
__all__ = [cls.__name__ for cls in BUILT_IN] + [
    "EventData",
    "EventMiddlewareError",
    "EventProcessor",
    "apply_event_middleware",
    "get_chain",
]
