"""``POST /api/v1/events/batch``: up to ``MAX_EVENTS`` events in one request.

The body is ``{"events": [item, ...]}``; an item is the body of ``POST
/api/v1/events`` plus an optional ``idempotency_key`` of its own (the same
rules and scope as the ``Idempotency-Key`` header: a key used on either
endpoint is known to both).

Two kinds of bad input, on purpose:

* **The request** is wrong (not a JSON object, ``events`` missing, not a list,
  empty, more than ``MAX_EVENTS``, an item that is not an object, one
  idempotency key twice in the batch, a body over the size limit): a 400 (or
  413/415) naming what is wrong, and nothing is stored.
* **An item** is wrong (a field fails validation, an unknown actor, a payload
  over the limit, its key used before for another request): that item's
  result is an error naming the field (``events[3].type``) and the valid items
  are stored anyway, so one bad event never holds up the others. The answer
  is 200 with one result per item, in order: ``accepted``, ``duplicate`` (the
  key was seen with the same request: the first event's id) or ``error``.

Auth and rate limits are the single endpoint's: a batch counts as one
request. Storage is one transaction (``notify.intake.batch``).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from notify import conf
from notify.api.auth import api_key_required
from notify.api.errors import ApiError, api_view, field_error, field_path
from notify.api.ratelimit import limited_per_address, limited_per_key
from notify.api.schemas import EventIn, json_size, read_json_body
from notify.intake.batch import ACCEPTED, DUPLICATE, NewEvent, Stored, store_events
from notify.intake.trigger import request_fingerprint

MAX_EVENTS = 1000
IDEMPOTENCY_KEY_MAX = 255


class BatchEventIn(EventIn):
    """One item of ``POST /api/v1/events/batch``."""

    model_config = ConfigDict(extra="forbid", strict=True, title="BatchEventIn")

    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=IDEMPOTENCY_KEY_MAX,
        description="This event's idempotency key (printable ASCII): a retry of the "
        "batch answers 'duplicate' with the first event's id instead of storing it again.",
    )

    @field_validator("idempotency_key")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        # isascii() and isprintable(): exactly " " to "~", in C (a generator over
        # the characters was 13 % of a 1,000-event batch).
        if value is not None and not (value.isascii() and value.isprintable()):
            raise PydanticCustomError("idempotency_key", "must be printable ASCII")
        return value


class BatchIn(BaseModel):
    """The body of ``POST /api/v1/events/batch``."""

    model_config = ConfigDict(extra="forbid", title="BatchIn")

    events: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_EVENTS,
        description=f"1 to {MAX_EVENTS} events, each as the body of POST /api/v1/events "
        "plus an optional idempotency_key.",
    )


ITEMS = TypeAdapter(list[BatchEventIn])


def read_batch(request: HttpRequest) -> list[dict[str, Any]]:
    """The list of raw items, or the 400 that says what is wrong with the request."""
    body = read_json_body(request, limit=conf.get("API_MAX_BATCH_BODY_BYTES"))
    if "events" not in body:
        raise field_error("events", "required: a list of 1 to 1000 events")
    unknown = sorted(set(body) - {"events"})
    if unknown:
        raise field_error(unknown[0], 'unknown field (the body is {"events": [...]})')
    events = body["events"]
    if not isinstance(events, list):
        raise field_error("events", f"must be a list of events, not {type(events).__name__}")
    if not events:
        raise field_error("events", "is empty: send 1 to 1000 events")
    if len(events) > MAX_EVENTS:
        raise field_error("events", f"{len(events)} events: at most {MAX_EVENTS} per request")
    seen: dict[str, int] = {}
    for index, item in enumerate(events):
        if not isinstance(item, dict):
            raise field_error(
                f"events[{index}]", f"must be a JSON object, not {type(item).__name__}"
            )
        key = item.get("idempotency_key")
        if isinstance(key, str):
            if key in seen:
                raise field_error(
                    f"events[{index}].idempotency_key",
                    f"{key!r} is also the key of events[{seen[key]}]: one key per event",
                )
            seen[key] = index
    return events


def validate_items(raw: list[dict[str, Any]]) -> tuple[dict[int, BatchEventIn], dict[int, list]]:
    """Valid items by index, and the field errors of the others (one pass when
    all are valid, the common case; else the valid ones are validated alone)."""
    try:
        return dict(enumerate(ITEMS.validate_python(raw))), {}
    except ValidationError as exc:
        errors: dict[int, list[dict[str, str]]] = defaultdict(list)
        for error in exc.errors(include_url=False):
            index, *loc = error["loc"]
            errors[int(index)].append(
                {"field": field_path(loc, f"events[{index}]"), "message": error["msg"]}
            )
    valid_indexes = [i for i in range(len(raw)) if i not in errors]
    valid = ITEMS.validate_python([raw[i] for i in valid_indexes])
    return dict(zip(valid_indexes, valid, strict=True)), dict(errors)


def check_items(valid: dict[int, BatchEventIn], errors: dict[int, list]) -> None:
    """Payload sizes and actors (one query for all): failures move to ``errors``."""
    limit = conf.get("API_MAX_PAYLOAD_BYTES")
    for index, item in list(valid.items()):
        if json_size(item.payload) > limit:
            errors[index] = [
                {
                    "field": f"events[{index}].payload",
                    "message": f"over the limit of {limit} bytes as JSON",
                }
            ]
            del valid[index]
    actors = {item.actor for item in valid.values() if item.actor is not None}
    if actors:
        known = set(get_user_model().objects.filter(pk__in=actors).values_list("pk", flat=True))
        for index, item in list(valid.items()):
            if item.actor is not None and item.actor not in known:
                errors[index] = [
                    {"field": f"events[{index}].actor", "message": f"no user with id {item.actor}"}
                ]
                del valid[index]


def new_event(index: int, item: BatchEventIn) -> NewEvent:
    recipients = item.recipients or []
    return NewEvent(
        index=index,
        type=item.type,
        payload=item.payload,  # parsed from JSON: already what the database reads back
        fingerprint=request_fingerprint(
            item.type, item.payload, item.actor, recipients, item.scheduled_for
        ),
        actor_id=item.actor,
        recipients=tuple(recipients),
        scheduled_for=item.scheduled_for,
        idempotency_key=item.idempotency_key,
    )


def result_json(stored: Stored, key: str | None) -> dict[str, Any]:
    if stored.status in (ACCEPTED, DUPLICATE):
        return {"index": stored.index, "status": stored.status, "id": stored.event_id}
    return {
        "index": stored.index,
        "status": "error",
        "error": "idempotency_key_reused",
        "message": f"events[{stored.index}].idempotency_key: {key!r} was already used for a "
        f"different request (event {stored.event_id}); use a new key for a new event.",
        "errors": [{"field": f"events[{stored.index}].idempotency_key", "message": "already used"}],
    }


def error_json(index: int, errors: list[dict[str, str]]) -> dict[str, Any]:
    first = errors[0]
    message = f"{first['field']}: {first['message']}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    return {
        "index": index,
        "status": "error",
        "error": "invalid_request",
        "message": message,
        "errors": errors,
    }


@csrf_exempt  # bearer auth: no cookies, so no cross-site request to forge
@api_view("POST")
@limited_per_address
@api_key_required
@limited_per_key
def create_events(request: HttpRequest) -> JsonResponse:
    raw = read_batch(request)
    valid, errors = validate_items(raw)
    check_items(valid, errors)
    items = [new_event(index, item) for index, item in sorted(valid.items())]
    try:
        stored = store_events(items, scope=f"api:{request.api_key.pk}", api_key=request.api_key)
    except IntegrityError:
        # An actor deleted since it was checked, or collisions on every try.
        raise ApiError(
            409, "conflict", "The batch collided with concurrent changes; send it again."
        ) from None
    results: list[dict[str, Any]] = [{} for _ in raw]
    for index, item_errors in errors.items():
        results[index] = error_json(index, item_errors)
    for one in stored:
        results[one.index] = result_json(one, valid[one.index].idempotency_key)
    counts = {"accepted": 0, "duplicate": 0, "error": 0}
    for result in results:
        counts[result["status"]] += 1
    return JsonResponse({**counts, "results": results})
