"""The JSON shape of what events carry: payloads as stored, and model rows
(secrets never included).

Events from model changes (``emit_on`` and signal bindings) and cancel
conditions see a row as ``current_object`` does, by field name under the
payload's ``object`` (``rules.model_events.change_payload``); ``snapshot`` is
the row as ``EnrichWithObject`` puts it into a payload (foreign keys by
attribute name, e.g. ``customer_id``)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models

from rules import model_events


def to_json(value: Any) -> Any:
    """Round-trip through JSON so what is stored is what a worker reads back
    (dates become ISO strings, Decimals strings, UUIDs strings). NaN and
    Infinity are refused: they are not JSON and PostgreSQL rejects them."""
    try:
        return json.loads(json.dumps(value, cls=DjangoJSONEncoder, allow_nan=False))
    except ValueError as exc:
        raise ValidationError(f"payload is not JSON-safe: {exc}") from exc
    except TypeError as exc:
        raise ValidationError(f"payload cannot be stored as JSON: {exc}") from exc


SENSITIVE = model_events.SENSITIVE


def current_object(instance: models.Model) -> dict[str, Any]:
    """The row as an event's ``payload.object`` holds it (every field but
    secrets, by field name, foreign keys as ids), JSON-safe."""
    return to_json(model_events.object_values(instance))


def snapshot(instance: models.Model, fields: Iterable[str] | None = None) -> dict[str, Any]:
    """A JSON-safe dict of the instance's concrete fields (foreign keys as ids).

    Fields that look like secrets are never included, even when named.
    """
    wanted = set(fields) if fields is not None else None
    data: dict[str, Any] = {}
    for field in instance._meta.concrete_fields:
        name = field.attname if field.is_relation else field.name
        if wanted is not None and field.name not in wanted and name not in wanted:
            continue
        if SENSITIVE.search(field.name):
            continue
        data[field.name if not field.is_relation else field.attname] = field.value_from_object(
            instance
        )
    return to_json(data)
