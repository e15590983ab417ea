"""OpenAPI entries of the bell's feed (``notify.api.feed``), merged into the
document by ``notify.api.openapi``. Kept apart so the feed's schema sits next
to nothing else's; it refers to the shared components by name."""

from __future__ import annotations

from typing import Any

from notify.api.schemas import FeedQuery

Schema = dict[str, Any]

STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
BOOLEAN: Schema = {"type": "boolean"}
DATETIME: Schema = {"type": "string", "format": "date-time"}
SECURITY = [{"bellToken": []}, {"sessionCookie": [], "csrfToken": []}]
SECURITY_GET = [{"bellToken": []}, {"sessionCookie": []}]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def use(name: str) -> Schema:
    return {"$ref": f"#/components/responses/{name}"}


def nullable(schema: Schema) -> Schema:
    return {**schema, "type": [schema["type"], "null"]}


def obj(description: str, **properties: Schema) -> Schema:
    """All properties required."""
    return {
        "type": "object",
        "description": description,
        "properties": properties,
        "required": list(properties),
    }


def ok(description: str, schema: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": ref(schema)}}}


SCHEMAS: dict[str, Schema] = {
    "FeedAction": obj("A button the in-app template defines.", label=STRING, url=STRING),
    "FeedItem": obj(
        "One in-app item (the feed does not collapse groups).",
        id=INTEGER,
        title=STRING,
        body=STRING,
        url={**STRING, "description": "http(s) or a same-site path; empty when none."},
        category=STRING,
        category_name=STRING,
        created_at=DATETIME,
        read=BOOLEAN,
        read_at=nullable(DATETIME),
        archived=BOOLEAN,
        archived_at=nullable(DATETIME),
        actions={"type": "array", "items": ref("FeedAction"), "maxItems": 3},
    ),
    "FeedCounts": obj(
        "unread: the badge (all your unread items); total: the items the filters "
        "let through, over all pages.",
        unread=INTEGER,
        total=INTEGER,
    ),
    "FeedPage": obj(
        "One page, newest first. live_cursor only on the first page: pass it as ?after= "
        "to /inbox/feed/events to receive what arrives after this page was read.",
        items={"type": "array", "items": ref("FeedItem")},
        next_cursor={
            **nullable(STRING),
            "description": "Opaque; pass it back as ?cursor= for the next page, null on "
            "the last. Items that arrive meanwhile never shift pages.",
        },
        counts=ref("FeedCounts"),
    ),
    "FeedChange": obj(
        "The item after the change, and the counts.", item=ref("FeedItem"), counts=ref("FeedCounts")
    ),
    "FeedReadAll": obj("How many items changed.", updated=INTEGER, counts=ref("FeedCounts")),
}

SECURITY_SCHEMES: dict[str, Schema] = {
    "bellToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "A signed per-user bell token (notify.inbox.tokens.issue_token, "
        "or the {% notify_bell %} tag); expires after NOTIFY['BELL_TOKEN_MAX_AGE'] s.",
    }
}


def query_parameters() -> list[Schema]:
    schema = FeedQuery.model_json_schema()
    return [
        {
            "name": name,
            "in": "query",
            "required": False,
            "schema": {k: v for k, v in prop.items() if k not in {"title", "description"}},
            **({"description": prop["description"]} if "description" in prop else {}),
        }
        for name, prop in schema["properties"].items()
    ]


ITEM_ID = {
    "name": "item_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
}
ERRORS = {
    "401": use("Unauthorized"),
    "405": use("MethodNotAllowed"),
    "429": use("TooManyRequests"),
}


def change(operation_id: str, summary: str, *, item: bool = True) -> Schema:
    responses: Schema = {
        "200": ok("The item and the counts.", "FeedChange")
        if item
        else ok("How many changed.", "FeedReadAll"),
        "403": use("Forbidden"),
        **ERRORS,
    }
    operation: Schema = {
        "operationId": operation_id,
        "summary": summary,
        "tags": ["feed"],
        "security": SECURITY,
        "parameters": [ITEM_ID] if item else [],
        "responses": responses,
    }
    if item:
        responses["404"] = use("NotFound")
    else:
        operation["parameters"] = [
            {
                "name": "category",
                "in": "query",
                "required": False,
                "schema": STRING,
                "description": "Only this category's items (its key).",
            }
        ]
        responses["400"] = use("BadRequest")
    return {"post": operation}


def paths(prefix: str) -> dict[str, Schema]:
    feed = f"{prefix}/inbox/feed"
    return {
        feed: {
            "get": {
                "operationId": "listFeed",
                "summary": "The bell's feed: your in-app items one by one, newest first, "
                "paged by cursor, with counts. CORS for NOTIFY['BELL_ALLOWED_ORIGINS'].",
                "tags": ["feed"],
                "security": SECURITY_GET,
                "parameters": query_parameters(),
                "responses": {
                    "200": ok("One page.", "FeedPage"),
                    "400": use("BadRequest"),
                    **ERRORS,
                },
            }
        },
        f"{feed}/events": {
            "get": {
                "operationId": "streamFeed",
                "summary": "Server-sent events: `item` (a FeedItem; its id is the resume "
                'point) and `unread` ({"unread_count": n}). EventSource sends no headers, '
                "so a token goes in ?token=.",
                "tags": ["feed"],
                "security": SECURITY_GET,
                "parameters": [
                    {
                        "name": "after",
                        "in": "query",
                        "required": False,
                        "schema": STRING,
                        "description": "The first page's live_cursor.",
                    },
                    {
                        "name": "token",
                        "in": "query",
                        "required": False,
                        "schema": STRING,
                        "description": "A bell token.",
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The stream.",
                        "content": {"text/event-stream": {"schema": STRING}},
                    },
                    **ERRORS,
                },
            }
        },
        f"{feed}/read-all": change(
            "markFeedRead", "Mark all your items (of a category) read.", item=False
        ),
        f"{feed}/{{item_id}}/read": change("markFeedItemRead", "Mark one of your items read."),
        f"{feed}/{{item_id}}/unread": change(
            "markFeedItemUnread", "Mark one of your items unread."
        ),
        f"{feed}/{{item_id}}/archive": change(
            "archiveFeedItem", "Archive one of your items (it leaves the default feed, read)."
        ),
        f"{feed}/{{item_id}}/unarchive": change(
            "unarchiveFeedItem", "Bring an archived item back."
        ),
    }


# The first page also carries live_cursor (not required: later pages leave it out).
SCHEMAS["FeedPage"]["properties"]["live_cursor"] = STRING
