"""Events over HTTP: ``POST /api/v1/events`` stores one through ``trigger()``
(now, or at ``scheduled_for``); ``GET /api/v1/events/<id>`` shows what became
of it, down to each delivery; ``DELETE /api/v1/events/by-key/<key>`` cancels
one by its ``Idempotency-Key``.

Everything is validated before ``trigger()`` is called, so bad input stores
nothing. A retry with the same ``Idempotency-Key`` gets the first answer
again; the same key with a different body is refused, never silently merged.
"""

from __future__ import annotations

import functools
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.db.models import Prefetch
from django.http import HttpRequest, JsonResponse
from django.urls import get_script_prefix, reverse
from django.views.decorators.csrf import csrf_exempt
from pydantic import ValidationError as PydanticValidationError

from notify import conf
from notify.api.auth import api_key_required
from notify.api.errors import ApiError, api_view, field_error, from_pydantic, invalid
from notify.api.ratelimit import limited_per_address, limited_per_key
from notify.api.runs import run_json
from notify.api.schemas import EventIn, json_size, read_json_body
from notify.fanout.payload import to_json
from notify.intake.scheduled import EventNotFound, NotCancellable, cancel
from notify.intake.trigger import IdempotencyKeyReused, request_fingerprint, trigger
from notify.models import Delivery, Event, Notification, WorkflowRun

IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY_MAX = 255


@functools.lru_cache(maxsize=16)
def _event_url_head(script_prefix: str) -> str:
    url = reverse("api:event-detail", kwargs={"event_id": 0})
    return url.removesuffix("0")


def event_location(event_id: int) -> str:
    """``reverse("api:event-detail")`` for ``event_id``, resolved once per script
    prefix (``reverse`` per request was 4 % of a trigger's CPU)."""
    return _event_url_head(get_script_prefix()) + str(event_id)


def read_idempotency_key(request: HttpRequest) -> str | None:
    value = request.headers.get(IDEMPOTENCY_HEADER)
    if value is None:
        return None
    if not value or len(value) > IDEMPOTENCY_KEY_MAX:
        raise field_error(IDEMPOTENCY_HEADER, f"must be 1 to {IDEMPOTENCY_KEY_MAX} characters")
    if not (value.isascii() and value.isprintable()):  # " " to "~"
        raise field_error(IDEMPOTENCY_HEADER, "must be printable ASCII")
    return value


def validate_event(request: HttpRequest) -> tuple[EventIn, Any]:
    """The parsed body, checked against the model and the size limit, and the
    actor's user (passed to trigger() as a user, so it is not looked up twice)."""
    try:
        body = EventIn.model_validate(read_json_body(request))
    except PydanticValidationError as exc:
        raise from_pydantic(exc) from None
    limit = conf.get("API_MAX_PAYLOAD_BYTES")
    if json_size(body.payload) > limit:
        raise field_error("payload", f"over the limit of {limit} bytes as JSON")
    actor = None
    if body.actor is not None:
        actor = get_user_model().objects.filter(pk=body.actor).first()
        if actor is None:
            raise field_error("actor", f"no user with id {body.actor}")
    return body, actor


@csrf_exempt  # bearer auth: no cookies, so no cross-site request to forge
@api_view("POST")
@limited_per_address
@api_key_required
@limited_per_key
def create_event(request: HttpRequest) -> JsonResponse:
    key = request.api_key
    idempotency_key = read_idempotency_key(request)
    body, actor = validate_event(request)
    recipients = body.recipients or []
    # What trigger() stores as request_hash for this body (it hashes the
    # JSON-roundtripped payload and the recipient refs, as here).
    fingerprint = request_fingerprint(
        body.type, to_json(body.payload), body.actor, recipients, body.scheduled_for
    )
    try:
        event = trigger(
            body.type,
            body.payload,
            actor=actor,
            recipients=recipients,
            source=Event.Source.API,
            idempotency_scope=f"api:{key.pk}",
            idempotency_key=idempotency_key,
            api_key=key,
            scheduled_for=body.scheduled_for,
        )
    except IdempotencyKeyReused:
        raise ApiError(
            422,
            "idempotency_key_reused",
            f"The {IDEMPOTENCY_HEADER} {idempotency_key!r} was already used for a "
            "different request; use a new key for a new event.",
        ) from None
    except DjangoValidationError as exc:
        raise invalid([{"field": "", "message": m} for m in exc.messages]) from None
    except IntegrityError:
        if body.actor is None:
            raise
        # The actor was deleted between the lookup above and the commit.
        raise field_error("actor", f"no user with id {body.actor}") from None
    if idempotency_key is not None and event.request_hash != fingerprint:
        # Also catches the race where a concurrent request with the same key
        # but another body stored first: trigger() returned its event.
        raise ApiError(
            422,
            "idempotency_key_reused",
            f"The {IDEMPOTENCY_HEADER} {idempotency_key!r} was already used for a "
            f"different request (event {event.pk}); use a new key for a new event.",
        )
    location = event_location(event.pk)
    accepted = {
        "id": event.pk,
        "status": "accepted",
        "type": event.type,
        "received_at": event.received_at,
    }
    if event.scheduled_for is not None:
        accepted["scheduled_for"] = event.scheduled_for
    return JsonResponse(
        accepted,
        status=202,
        headers={"Location": location},
    )


@api_view("GET")
@limited_per_address
@api_key_required
@limited_per_key
def event_detail(request: HttpRequest, event_id: int) -> JsonResponse:
    """An event sent with the calling key; other keys' events are 404, not 403,
    so ids do not reveal what others sent."""
    deliveries = Prefetch("deliveries", queryset=Delivery.objects.order_by("pk"))
    event = (
        Event.objects.filter(pk=event_id, api_key=request.api_key)
        .prefetch_related(
            Prefetch(
                "notifications",
                queryset=Notification.objects.select_related("category")
                .prefetch_related(deliveries)
                .order_by("pk"),
            ),
            Prefetch(
                "workflow_runs",
                queryset=WorkflowRun.objects.prefetch_related("log").order_by("pk"),
            ),
        )
        .first()
    )
    if event is None:
        raise ApiError(404, "not_found", f"No event {event_id} for this API key.")
    return JsonResponse(event_json(event))


@csrf_exempt  # bearer auth: no cookies, so no cross-site request to forge
@api_view("DELETE")
@limited_per_address
@api_key_required
@limited_per_key
def cancel_event(request: HttpRequest, idempotency_key: str) -> JsonResponse:
    """Cancel an event sent with the calling key, by its Idempotency-Key: a
    scheduled event not yet fanned out never will be; of one already fanned
    out, every delivery not yet sent is cancelled. 404 for a key this API key
    never used; 409 when everything was sent already (or the event is being
    fanned out at this very moment: retry)."""
    try:
        result = cancel(idempotency_key, scope=f"api:{request.api_key.pk}")
    except EventNotFound:
        raise ApiError(
            404, "not_found", f"No event with Idempotency-Key {idempotency_key!r} for this API key."
        ) from None
    except NotCancellable as exc:
        raise ApiError(409, exc.code, f"Event {exc.event.pk}: {exc.message}.") from None
    return JsonResponse(
        {
            "id": result.event.pk,
            "status": result.event.status,
            "event_cancelled": result.event_cancelled,
            "deliveries_cancelled": result.deliveries_cancelled,
            "runs_cancelled": result.runs_cancelled,
        }
    )


def event_json(event: Event) -> dict[str, Any]:
    return {
        "id": event.pk,
        "type": event.type,
        "payload": event.payload,
        "actor": event.actor_id,
        "source": event.source,
        "status": event.status,
        "received_at": event.received_at,
        "scheduled_for": event.scheduled_for,
        "processed_at": event.processed_at,
        "error": event.error,
        "notifications": [notification_json(n) for n in event.notifications.all()],
        # Workflows (rules with steps): each run with the steps it took.
        "runs": [run_json(run) for run in event.workflow_runs.all()],
    }


def notification_json(notification: Notification) -> dict[str, Any]:
    return {
        "id": notification.pk,
        "user": notification.user_id,
        "rule": notification.rule_id,
        "category": notification.category.key,
        "created_at": notification.created_at,
        "seen_at": notification.seen_at,
        "read_at": notification.read_at,
        "clicked_at": notification.clicked_at,
        "opened_at": notification.opened_at,
        "deliveries": [delivery_json(d) for d in notification.deliveries.all()],
    }


def delivery_json(delivery: Delivery) -> dict[str, Any]:
    return {
        "id": delivery.pk,
        "channel": delivery.channel,
        "status": delivery.status,
        "skip_reason": delivery.skip_reason,
        "hold_reason": delivery.hold_reason,
        "attempts": delivery.attempts,
        "provider": delivery.provider,
        "provider_message_id": delivery.provider_message_id,
        "error_code": delivery.error_code,
        "error_message": delivery.error_message,
        "sent_at": delivery.sent_at,
        "delivered_at": delivery.delivered_at,
        "next_attempt_at": delivery.next_attempt_at,
    }
