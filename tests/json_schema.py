"""Just enough JSON Schema to check a body against a schema we ship.

``jsonschema`` is not a dependency; our schemas use only the keywords below,
and any other keyword is an error here, so a schema can never be checked
less strictly than it reads.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

ANNOTATIONS = {"$schema", "$id", "title", "description", "examples"}
KEYWORDS = {"type", "required", "properties", "additionalProperties", "minimum", "format"}
TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


def is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, TYPES[name])


def is_date_time(value: str) -> bool:
    """RFC 3339 date-time: a date, a time and an explicit offset."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return False
    return "T" in value and parsed.tzinfo is not None


def errors(instance: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Every way ``instance`` breaks ``schema`` (empty: it validates)."""
    unknown = set(schema) - KEYWORDS - ANNOTATIONS
    if unknown:
        raise ValueError(f"{path}: keywords this checker does not know: {sorted(unknown)}")
    if schema.get("format", "date-time") != "date-time":
        raise ValueError(f"{path}: format {schema['format']!r} is not checked here")
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        if not any(is_type(instance, t) for t in types):
            return [f"{path}: {instance!r} is not of type {' or '.join(types)}"]
    out: list[str] = []
    if isinstance(instance, dict):
        for name in schema.get("required", []):
            if name not in instance:
                out.append(f"{path}: '{name}' is required")
        properties = schema.get("properties", {})
        for name, value in instance.items():
            if name in properties:
                out.extend(errors(value, properties[name], f"{path}.{name}"))
            elif schema.get("additionalProperties") is False:
                out.append(f"{path}: '{name}' is not allowed")
    if "minimum" in schema and is_type(instance, "number") and instance < schema["minimum"]:
        out.append(f"{path}: {instance} is less than {schema['minimum']}")
    if schema.get("format") == "date-time" and isinstance(instance, str):
        if not is_date_time(instance):
            out.append(f"{path}: {instance!r} is not a date-time")
    return out
