"""``GET /api/v1/openapi.json``: the API described as OpenAPI 3.1.

Request schemas come from the pydantic models in ``schemas.py`` (so the
document cannot drift from what is validated); responses are written here by
hand, next to the paths. A test checks that every URL pattern is listed.
"""

from __future__ import annotations

import functools
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse

from notify.api import openapi_feed
from notify.api.batch import MAX_EVENTS, BatchEventIn
from notify.api.errors import api_view
from notify.api.schemas import EventIn, InboxQuery
from notify.pages.prefs_schema import json_schemas as preference_schemas

PREFIX = "/api/v1"
REF = "#/components/schemas/{model}"

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": REF.format(model=name)}


def obj(description: str = "", **properties: Schema) -> Schema:
    schema: Schema = {"type": "object", "properties": properties, "required": list(properties)}
    if description:
        schema["description"] = description
    return schema


def nullable(schema: Schema) -> Schema:
    return {**schema, "type": [schema["type"], "null"]}


STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
BOOLEAN: Schema = {"type": "boolean"}
DATETIME: Schema = {"type": "string", "format": "date-time"}
URI: Schema = {"type": "string", "format": "uri"}

RESPONSE_SCHEMAS: dict[str, Schema] = {
    "Error": {
        "type": "object",
        "description": "Every error body.",
        "properties": {
            "error": {**STRING, "description": "A stable code, e.g. unauthorized."},
            "message": {**STRING, "description": "For people; may change."},
            "errors": {"type": "array", "items": ref("FieldError")},
        },
        "required": ["error", "message"],
    },
    "FieldError": obj(
        "One invalid field: a dotted path (payload.x, recipients[0]) or a header name.",
        field=STRING,
        message=STRING,
    ),
    "EventAccepted": {
        **obj(
            "The event is stored; fan-out follows. A retry with the same "
            "Idempotency-Key returns the same body.",
            id=INTEGER,
            status={"const": "accepted"},
            type=STRING,
            received_at=DATETIME,
            scheduled_for={**DATETIME, "description": "Only for a scheduled event."},
        ),
        "required": ["id", "status", "type", "received_at"],
    },
    "BatchIn": {
        **obj(
            "Up to 1,000 events stored in one transaction.",
            events={
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_EVENTS,
                "items": ref("BatchEventIn"),
            },
        ),
        "required": ["events"],
        "additionalProperties": False,
    },
    "BatchResult": {
        **obj(
            "What became of one item, at its index: accepted (stored), duplicate "
            "(its idempotency_key was seen with the same request: the first event's "
            "id) or error (nothing stored for it; errors name the fields, e.g. "
            "events[3].type).",
            index=INTEGER,
            status={"enum": ["accepted", "duplicate", "error"]},
            id={**INTEGER, "description": "The event (accepted or duplicate)."},
            error={"enum": ["invalid_request", "idempotency_key_reused"]},
            message=STRING,
            errors={"type": "array", "items": ref("FieldError")},
        ),
        "required": ["index", "status"],
    },
    "BatchAccepted": {
        **obj(
            "One result per item, in the order sent; invalid items do not keep "
            "the valid ones from being stored.",
            accepted=INTEGER,
            duplicate=INTEGER,
            error=INTEGER,
            results={"type": "array", "items": ref("BatchResult")},
        ),
        "required": ["accepted", "duplicate", "error", "results"],
    },
    "EventCancelled": obj(
        "What the cancellation changed. Cancelling again changes nothing and says so.",
        id=INTEGER,
        status={"enum": ["cancelled", "processed"]},
        event_cancelled={
            **BOOLEAN,
            "description": "The event had not been fanned out and never will be.",
        },
        deliveries_cancelled={
            **INTEGER,
            "description": "Deliveries not yet sent that were cancelled (fanned-out events).",
        },
        runs_cancelled={
            **INTEGER,
            "description": "Workflow runs of the event that were stopped.",
        },
    ),
    "WorkflowStep": obj(
        "One step a run took, and why.",
        step={**INTEGER, "description": "The step's number in the rule's workflow (1-based)."},
        kind={"enum": ["channel", "delay", "batch", "cancel", "run", "edit", "rule", "user"]},
        decision={
            "enum": ["sent", "skipped", "waited", "collected", "cancelled", "failed", "moved"]
        },
        reason=STRING,
        at=DATETIME,
        until=nullable(DATETIME),
        deliveries={
            "type": "array",
            "description": "[channel, status] of each delivery a channel step wrote.",
            "items": {"type": "array", "items": STRING},
        },
    ),
    "WorkflowRun": obj(
        "A rule's workflow for one recipient (or one batch).",
        id=INTEGER,
        rule=INTEGER,
        user=INTEGER,
        batch_key=STRING,
        state={"enum": ["waiting", "running", "done", "cancelled", "failed"]},
        next_step=INTEGER,
        due_at=nullable(DATETIME),
        reason=STRING,
        notification=nullable(INTEGER),
        created_at=DATETIME,
        finished_at=nullable(DATETIME),
        steps={"type": "array", "items": ref("WorkflowStep")},
    ),
    "Event": obj(
        id=INTEGER,
        type=STRING,
        payload={"type": "object"},
        actor=nullable(INTEGER),
        source={"enum": ["python", "signal", "api", "cli"]},
        status={"enum": ["received", "processing", "processed", "failed", "cancelled"]},
        received_at=DATETIME,
        scheduled_for=nullable(DATETIME),
        processed_at=nullable(DATETIME),
        error=STRING,
        notifications={"type": "array", "items": ref("Notification")},
        runs={"type": "array", "items": ref("WorkflowRun")},
    ),
    "Notification": obj(
        "One (event, rule, user).",
        id=INTEGER,
        user=INTEGER,
        rule=nullable(INTEGER),
        category={**STRING, "description": "The category key."},
        created_at=DATETIME,
        seen_at=nullable(DATETIME),
        read_at=nullable(DATETIME),
        clicked_at=nullable(DATETIME),
        opened_at=nullable(DATETIME),
        deliveries={"type": "array", "items": ref("Delivery")},
    ),
    "Delivery": obj(
        "The notification on one channel.",
        id=INTEGER,
        channel=STRING,
        status={
            "enum": [
                "pending",
                "sending",
                "sent",
                "delivered",
                "failed",
                "dead",
                "skipped",
                "digest",
                "bounced",
                "cancelled",
            ]
        },
        skip_reason=STRING,
        hold_reason={
            **STRING,
            "description": "Why it waits past its creation: delayed, scheduled, quiet_hours; "
            "empty if it does not.",
        },
        attempts=INTEGER,
        provider=STRING,
        provider_message_id=STRING,
        error_code=STRING,
        error_message=STRING,
        sent_at=nullable(DATETIME),
        delivered_at=nullable(DATETIME),
        next_attempt_at=DATETIME,
    ),
    "InboxItem": obj(
        id=INTEGER,
        title=STRING,
        body=STRING,
        url=STRING,
        category=STRING,
        created_at=DATETIME,
        read=BOOLEAN,
        read_at=nullable(DATETIME),
    ),
    "InboxPage": obj(
        "One page of the inbox, newest first.",
        unread_count=INTEGER,
        count=INTEGER,
        page=INTEGER,
        page_size=INTEGER,
        next=nullable(URI),
        previous=nullable(URI),
        results={"type": "array", "items": ref("InboxItem")},
    ),
    "InboxItemState": {
        "allOf": [ref("InboxItem"), obj(unread_count=INTEGER)],
        "description": "The item after the change, and the new unread count.",
    },
    "ReadAll": obj(updated=INTEGER, unread_count=INTEGER),
    "Device": obj(
        "A push device of yours (a contact point of kind fcm, apns or webpush).",
        id=INTEGER,
        kind={"enum": ["fcm", "apns", "webpush"]},
        label=STRING,
        primary=BOOLEAN,
        created_at=DATETIME,
    ),
    "Devices": obj(
        "Your push devices, newest first, and the Web Push applicationServerKey "
        "(null when no Web Push channel is configured).",
        devices={"type": "array", "items": ref("Device")},
        webpush=obj(application_server_key=nullable(STRING)),
    ),
    "DeviceIn": {
        **obj(
            "A device: token for fcm and apns, subscription (PushSubscription.toJSON()) "
            "for webpush.",
            kind={"enum": ["fcm", "apns", "webpush"]},
            token=STRING,
            subscription=obj(endpoint=URI, keys=obj(p256dh=STRING, auth=STRING)),
        ),
        "required": ["kind"],
    },
}


def error(description: str, headers: dict[str, Any] | None = None) -> Schema:
    response: Schema = {
        "description": description,
        "content": {"application/json": {"schema": ref("Error")}},
    }
    if headers:
        response["headers"] = headers
    return response


def ok(description: str, schema: str, headers: dict[str, Any] | None = None) -> Schema:
    response: Schema = {
        "description": description,
        "content": {"application/json": {"schema": ref(schema)}},
    }
    if headers:
        response["headers"] = headers
    return response


def use(name: str) -> Schema:
    return {"$ref": f"#/components/responses/{name}"}


RESPONSES: dict[str, Schema] = {
    "BadRequest": error("Invalid input; errors[] names each field. Nothing was stored."),
    "Unauthorized": error(
        "Missing, invalid or revoked credentials.",
        {"WWW-Authenticate": {"schema": STRING, "description": "Bearer (API key endpoints)."}},
    ),
    "Forbidden": error("The CSRF check failed (send the csrftoken cookie's value as X-CSRFToken)."),
    "NotFound": error("No such resource, or not yours."),
    "MethodNotAllowed": error(
        "The method is not allowed.", {"Allow": {"schema": STRING, "description": "Allowed."}}
    ),
    "TooManyRequests": error(
        "Over a rate limit (token buckets, notify.api.ratelimit): per API key "
        "(NOTIFY['API_RATE_LIMIT_PER_KEY'], default 600/m) and per client address, "
        "counted before authentication (NOTIFY['API_RATE_LIMIT_PER_ADDRESS'], default "
        "1200/m). The message names the limit that was hit.",
        {"Retry-After": {"schema": INTEGER, "description": "Seconds until a retry can pass."}},
    ),
}

# The endpoints behind the rate limits of notify.api.ratelimit.
RATE_LIMITED_PREFIX = f"{PREFIX}/events"

BEARER = [{"bearerAuth": []}]
SESSION = [{"sessionCookie": []}]
SESSION_CSRF = [{"sessionCookie": [], "csrfToken": []}]


def item_id_parameter() -> Schema:
    return {
        "name": "item_id",
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }


def query_parameters(model: type[InboxQuery]) -> list[Schema]:
    schema = model.model_json_schema()
    return [
        {
            "name": name,
            "in": "query",
            "required": name in schema.get("required", []),
            "schema": {k: v for k, v in prop.items() if k not in {"title", "description"}},
            **({"description": prop["description"]} if "description" in prop else {}),
        }
        for name, prop in schema["properties"].items()
    ]


def inbox_change(operation_id: str, summary: str, response: Schema, **extra: Any) -> Schema:
    return {
        "post": {
            "operationId": operation_id,
            "summary": summary,
            "tags": ["inbox"],
            "security": SESSION_CSRF,
            "responses": {
                "200": response,
                "401": use("Unauthorized"),
                "403": use("Forbidden"),
                "404": use("NotFound"),
                "405": use("MethodNotAllowed"),
            },
            **extra,
        }
    }


def preferences_path() -> Schema:
    """``/preferences``: the settings page's data as JSON, validated by the same code."""
    common = {"tags": ["preferences"], "parameters": []}
    return {
        "get": {
            "operationId": "getPreferences",
            "summary": "Your notification preferences, defaults filled in, and the grid's "
            "categories and channels (catalog). Sets the csrftoken cookie.",
            "security": SESSION,
            **common,
            "responses": {
                "200": ok("The preferences.", "Preferences"),
                "401": use("Unauthorized"),
                "405": use("MethodNotAllowed"),
            },
        },
        "put": {
            "operationId": "putPreferences",
            "summary": "Change your preferences: fields left out keep their values; any "
            "bad field is a 400 naming it, and nothing is changed.",
            "security": SESSION_CSRF,
            **common,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ref("PreferencesIn")}},
            },
            "responses": {
                "200": ok("The preferences after the change.", "Preferences"),
                "400": use("BadRequest"),
                "401": use("Unauthorized"),
                "403": use("Forbidden"),
                "405": use("MethodNotAllowed"),
                "413": error("The body is over API_MAX_BODY_BYTES."),
                "415": error("The body is not application/json (UTF-8)."),
            },
        },
    }


def devices_path() -> Schema:
    """``/devices``: push devices registered by the app or the page."""
    body = {"required": True, "content": {"application/json": {"schema": ref("DeviceIn")}}}
    refused = {
        "400": use("BadRequest"),
        "401": use("Unauthorized"),
        "403": use("Forbidden"),
        "405": use("MethodNotAllowed"),
        "415": error("The body is not application/json (UTF-8)."),
    }
    common = {"tags": ["devices"], "parameters": []}
    return {
        "get": {
            "operationId": "listDevices",
            "summary": "Your push devices and the Web Push key. Sets the csrftoken cookie.",
            "security": SESSION,
            **common,
            "responses": {
                "200": ok("The devices.", "Devices"),
                "401": use("Unauthorized"),
                "405": use("MethodNotAllowed"),
            },
        },
        "post": {
            "operationId": "registerDevice",
            "summary": "Register a device (verified by registering); a known one becomes "
            "the newest.",
            "security": SESSION_CSRF,
            **common,
            "requestBody": body,
            "responses": {
                "201": ok("Registered.", "Device"),
                "200": ok("Already registered.", "Device"),
                **refused,
            },
        },
        "delete": {
            "operationId": "forgetDevice",
            "summary": "Forget one of your devices.",
            "security": SESSION_CSRF,
            **common,
            "requestBody": body,
            "responses": {
                "204": {"description": "Forgotten."},
                "404": use("NotFound"),
                **refused,
            },
        },
    }


def paths() -> dict[str, Schema]:
    return {
        f"{PREFIX}/events": {
            "post": {
                "operationId": "createEvent",
                "summary": "Store an event; rules decide who hears about it.",
                "description": "With scheduled_for, fan-out waits until then. Send an "
                "Idempotency-Key to be able to cancel it later "
                "(DELETE /api/v1/events/by-key/{idempotency_key}).",
                "tags": ["events"],
                "security": BEARER,
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "description": "Retries with the same key store nothing new and "
                        "get the first answer; the same key with another body is a 422.",
                        "schema": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 255,
                            "pattern": "^[ -~]+$",
                        },
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": ref("EventIn")}},
                },
                "responses": {
                    "202": ok(
                        "Accepted: stored, fan-out follows.",
                        "EventAccepted",
                        {"Location": {"schema": STRING, "description": "The event's URL."}},
                    ),
                    "400": use("BadRequest"),
                    "401": use("Unauthorized"),
                    "405": use("MethodNotAllowed"),
                    "413": error("The body is over API_MAX_BODY_BYTES."),
                    "415": error("The body is not application/json (UTF-8)."),
                    "422": error("The Idempotency-Key was used for a different request."),
                },
            }
        },
        f"{PREFIX}/events/batch": {
            "post": {
                "operationId": "createEvents",
                "summary": "Store up to 1,000 events in one request, with a result per event.",
                "description": "Each item is the body of POST /api/v1/events plus an "
                "optional idempotency_key (shared with the Idempotency-Key header's). A "
                "request that is wrong as a whole (not a list, empty, over 1,000 items, an "
                "item that is not an object, one key twice) is a 400 and stores nothing; "
                "an invalid item is answered with its error and the others are stored. "
                "One transaction: every item answered accepted is stored. A batch counts "
                "as one request against the rate limits.",
                "tags": ["events"],
                "security": BEARER,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": ref("BatchIn")}},
                },
                "responses": {
                    "200": ok("One result per item.", "BatchAccepted"),
                    "400": use("BadRequest"),
                    "401": use("Unauthorized"),
                    "405": use("MethodNotAllowed"),
                    "409": error("Collided with concurrent changes on every try: send again."),
                    "413": error("The body is over API_MAX_BATCH_BODY_BYTES."),
                    "415": error("The body is not application/json (UTF-8)."),
                },
            }
        },
        f"{PREFIX}/events/{{event_id}}": {
            "get": {
                "operationId": "getEvent",
                "summary": "An event sent with this key, its notifications and deliveries.",
                "tags": ["events"],
                "security": BEARER,
                "parameters": [
                    {
                        "name": "event_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer", "minimum": 1},
                    }
                ],
                "responses": {
                    "200": ok("The event.", "Event"),
                    "401": use("Unauthorized"),
                    "404": use("NotFound"),
                    "405": use("MethodNotAllowed"),
                },
            }
        },
        f"{PREFIX}/runs/{{run_id}}/cancel": {
            "post": {
                "operationId": "cancelRun",
                "summary": "Stop a workflow run of an event sent with this key.",
                "description": "No step of the run runs again; its deliveries still "
                "waiting (delayed, held) are cancelled.",
                "tags": ["events"],
                "security": BEARER,
                "parameters": [
                    {
                        "name": "run_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer", "minimum": 1},
                    }
                ],
                "responses": {
                    "200": ok("The run, cancelled.", "WorkflowRun"),
                    "401": use("Unauthorized"),
                    "404": use("NotFound"),
                    "405": use("MethodNotAllowed"),
                    "409": error("The run has ended."),
                },
            }
        },
        f"{PREFIX}/events/by-key/{{idempotency_key}}": {
            "delete": {
                "operationId": "cancelEvent",
                "summary": "Cancel an event sent with this key, by its Idempotency-Key.",
                "description": "A scheduled event not yet fanned out is cancelled and never "
                "will be; of an event already fanned out, every delivery not yet sent "
                "(pending, delayed, held, waiting for a digest) is cancelled. Percent-encode "
                "the key as a URL path (slashes may stay).",
                "tags": ["events"],
                "security": BEARER,
                "parameters": [
                    {
                        "name": "idempotency_key",
                        "in": "path",
                        "required": True,
                        "description": "The Idempotency-Key the event was created with.",
                        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                    }
                ],
                "responses": {
                    "200": ok("Cancelled.", "EventCancelled"),
                    "401": use("Unauthorized"),
                    "404": error("No event with this Idempotency-Key for this API key."),
                    "405": use("MethodNotAllowed"),
                    "409": error(
                        "Nothing left to cancel: error is already_sent (everything was "
                        "sent), nothing_pending, or processing (being fanned out at this "
                        "moment; retry shortly)."
                    ),
                },
            }
        },
        f"{PREFIX}/inbox": {
            "get": {
                "operationId": "listInbox",
                "summary": "The logged-in user's inbox, newest first.",
                "tags": ["inbox"],
                "security": SESSION,
                "parameters": query_parameters(InboxQuery),
                "responses": {
                    "200": ok("One page.", "InboxPage"),
                    "400": use("BadRequest"),
                    "401": use("Unauthorized"),
                    "405": use("MethodNotAllowed"),
                },
            }
        },
        f"{PREFIX}/inbox/{{item_id}}/read": inbox_change(
            "markInboxItemRead",
            "Mark one of your items read.",
            ok("The item, now read.", "InboxItemState"),
            parameters=[item_id_parameter()],
        ),
        f"{PREFIX}/inbox/{{item_id}}/unread": inbox_change(
            "markInboxItemUnread",
            "Mark one of your items unread.",
            ok("The item, now unread.", "InboxItemState"),
            parameters=[item_id_parameter()],
        ),
        f"{PREFIX}/inbox/read-all": inbox_change(
            "markInboxRead",
            "Mark every item in your inbox read.",
            ok("How many items changed.", "ReadAll"),
        ),
        f"{PREFIX}/preferences": preferences_path(),
        f"{PREFIX}/devices": devices_path(),
        f"{PREFIX}/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "summary": "This document.",
                "tags": ["meta"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }


def request_schemas() -> dict[str, Schema]:
    """The request models' JSON Schemas, nested definitions hoisted to components."""
    schemas: dict[str, Schema] = {}
    for model in (EventIn, BatchEventIn):
        schema = model.model_json_schema(ref_template=REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


def with_rate_limits(all_paths: dict[str, Schema]) -> dict[str, Schema]:
    """Each operation of the events endpoints may answer 429."""
    for path, operations in all_paths.items():
        if path.startswith(RATE_LIMITED_PREFIX):
            for operation in operations.values():
                operation["responses"]["429"] = use("TooManyRequests")
    return all_paths


@functools.cache
def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "notify",
            "version": "1",
            "description": "Emit events for notification rules; read the logged-in "
            "user's in-app inbox. Every error body is "
            '{"error": code, "message": text}.',
        },
        "paths": with_rate_limits({**paths(), **openapi_feed.paths(PREFIX)}),
        "components": {
            "schemas": {
                **request_schemas(),
                **preference_schemas(),
                **RESPONSE_SCHEMAS,
                **openapi_feed.SCHEMAS,
            },
            "responses": RESPONSES,
            "securitySchemes": {
                **openapi_feed.SECURITY_SCHEMES,
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "nfy_<prefix>_<secret>",
                    "description": "An API key issued in admin.",
                },
                "sessionCookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": settings.SESSION_COOKIE_NAME,
                    "description": "The Django session of the logged-in user.",
                },
                "csrfToken": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-CSRFToken",
                    "description": "The csrftoken cookie's value; required on POSTs "
                    "and PUTs with a session.",
                },
            },
        },
    }


@api_view("GET")
def openapi_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse(document())
