"""The preferences document (``prefs``) as JSON Schema, for the OpenAPI
description of ``/api/v1/preferences``. Written next to ``prefs`` and tested
against its field lists, so the description cannot drift from what is checked.
"""

from __future__ import annotations

from typing import Any

from notify.pages.prefs import FIELDS, MODES


def json_schemas() -> dict[str, dict[str, Any]]:
    """``PreferencesIn`` (PUT), ``Preferences`` (GET and PUT answers) and their parts."""
    nullable_time = {
        "type": ["string", "null"],
        "pattern": r"^([01]\d|2[0-3]):[0-5]\d$",
        "examples": ["22:00"],
    }
    fields: dict[str, Any] = {
        "timezone": {
            "type": "string",
            "description": "An IANA time zone.",
            "examples": ["Europe/Paris"],
        },
        "quiet_start": {**nullable_time, "description": "Quiet hours start; both ends or none."},
        "quiet_end": {**nullable_time, "description": "Quiet hours end; both ends or none."},
        "digest_hour": {"type": "integer", "minimum": 0, "maximum": 23},
        "digest_weekday": {
            "type": "integer",
            "minimum": 0,
            "maximum": 6,
            "description": "The weekly digest's day; 0 = Monday.",
        },
        "paused_until": {
            "type": ["string", "null"],
            "format": "date",
            "description": "Nothing but critical notifications is sent before the start "
            "of this day (the user's zone); a day after today, at most a year ahead.",
        },
        "categories": {
            "type": "object",
            "description": "Category key -> its settings.",
            "additionalProperties": {"$ref": "#/components/schemas/CategoryPreferenceIn"},
        },
    }
    return {
        "PreferencesIn": {
            "type": "object",
            "title": "PreferencesIn",
            "description": "Fields left out keep their values. 'catalog' is read-only and "
            "ignored, so a GET body can be sent back edited.",
            "additionalProperties": False,
            "properties": {**fields, "catalog": {"readOnly": True}},
        },
        "CategoryPreferenceIn": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "mode": {"enum": list(MODES)},
                "channels": {
                    "type": "object",
                    "description": "Channel alias -> on. A critical category cannot be turned off.",
                    "additionalProperties": {"type": "boolean"},
                },
            },
        },
        "Preferences": {
            "type": "object",
            "description": "The preferences as they apply, defaults filled in.",
            "properties": {**fields, "catalog": {"$ref": "#/components/schemas/Catalog"}},
            "required": [*FIELDS, "catalog"],
        },
        "Catalog": {
            "type": "object",
            "properties": {
                "channels": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"alias": {"type": "string"}, "label": {"type": "string"}},
                    },
                },
                "categories": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "key": {"type": "string"},
                            "name": {"type": "string"},
                            "description": {"type": "string"},
                            "critical": {"type": "boolean"},
                            "critical_reason": {"type": "string"},
                            "opt_in": {"type": "boolean"},
                            "default_mode": {"enum": list(MODES)},
                        },
                    },
                },
                "modes": {"type": "array", "items": {"enum": list(MODES)}},
            },
        },
    }
