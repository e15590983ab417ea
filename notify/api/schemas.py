"""Request bodies and query strings: pydantic models (strict, no unknown fields)
and the JSON body reader that enforces the size limits before parsing.

The models are also the source of the request schemas in ``openapi.py``.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from django.http import HttpRequest
from django.utils import timezone
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, field_validator
from pydantic_core import PydanticCustomError

from notify import conf
from notify.api.errors import ApiError, field_error
from notify.intake.trigger import validate_event_type

MAX_ID = 2**63 - 1  # the database's integer range: larger ids cannot exist
UserId = Annotated[int, Field(ge=1, le=MAX_ID)]


def check_recipient(value: Any) -> int | str:
    """A user id or an email address. Written by hand so an error names the list
    item (``recipients[2]``), not a branch of a union."""
    if isinstance(value, int) and not isinstance(value, bool):
        if 1 <= value <= MAX_ID:
            return value
        raise PydanticCustomError("recipient", "a user id must be a positive integer")
    if isinstance(value, str):
        try:
            validate_email(value)
        except DjangoValidationError:
            raise PydanticCustomError(
                "recipient", "not a valid email address: '{value}'", {"value": value[:100]}
            ) from None
        return value
    raise PydanticCustomError("recipient", "must be a user id (integer) or an email address")


Recipient = Annotated[
    int | str,
    PlainValidator(
        check_recipient,
        json_schema_input_type=Annotated[int, Field(ge=1)]
        | Annotated[str, Field(json_schema_extra={"format": "email"})],
    ),
]


# How far ahead an event may be scheduled over HTTP.
SCHEDULE_HORIZON = timedelta(days=366)


def check_scheduled_for(value: Any) -> datetime:
    """An ISO 8601 date-time with a UTC offset, in the future, at most a year ahead."""
    if not isinstance(value, str):
        raise PydanticCustomError("datetime", "must be an ISO 8601 date-time string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise PydanticCustomError(
            "datetime",
            "not an ISO 8601 date-time: '{value}' (e.g. 2026-11-21T09:00:00+01:00)",
            {"value": value[:60]},
        ) from None
    if parsed.tzinfo is None:
        raise PydanticCustomError(
            "datetime", "needs a UTC offset (e.g. 2026-11-21T09:00:00+01:00 or ...Z)"
        )
    now = timezone.now()
    if parsed <= now:
        raise PydanticCustomError("datetime", "is in the past")
    if parsed > now + SCHEDULE_HORIZON:
        raise PydanticCustomError("datetime", "is more than a year ahead")
    return parsed


ScheduledFor = Annotated[
    datetime,
    PlainValidator(
        check_scheduled_for,
        json_schema_input_type=Annotated[str, Field(json_schema_extra={"format": "date-time"})],
    ),
]


class EventIn(BaseModel):
    """The body of ``POST /api/v1/events``."""

    model_config = ConfigDict(extra="forbid", strict=True, title="EventIn")

    type: str = Field(
        description="Lowercase words separated by dots.",
        max_length=200,
        examples=["order.shipped"],
    )
    payload: dict[str, Any] = Field(
        default_factory=dict, description="Any JSON object; rules and templates read it."
    )
    actor: UserId | None = Field(default=None, description="The id of the user who acted.")
    recipients: list[Recipient] | None = Field(
        default=None,
        description="Explicit recipients: user ids or email addresses, resolved at fan-out.",
    )
    scheduled_for: ScheduledFor | None = Field(
        default=None,
        description="Fan out at this time instead of now: ISO 8601 with a UTC offset, "
        "in the future and at most a year ahead. Cancel with DELETE "
        "/api/v1/events/by-key/{idempotency_key}.",
    )

    @field_validator("type")
    @classmethod
    def _event_type(cls, value: str) -> str:
        try:
            return validate_event_type(value)
        except DjangoValidationError as exc:
            raise PydanticCustomError("event_type", exc.messages[0]) from None


class InboxQuery(BaseModel):
    """The query string of ``GET /api/v1/inbox`` (lax: query values are strings)."""

    model_config = ConfigDict(extra="ignore", title="InboxQuery")

    page: int = Field(default=1, ge=1, le=1_000_000)
    page_size: int = Field(default=20, ge=1, le=100)
    unread: bool = Field(default=False, description="Only unread items.")


class FeedQuery(BaseModel):
    """The query string of ``GET /api/v1/inbox/feed`` (lax: query values are strings)."""

    model_config = ConfigDict(extra="forbid", title="FeedQuery")

    cursor: str | None = Field(
        default=None,
        max_length=200,
        description="The next_cursor of the previous page; leave out for the first page.",
    )
    limit: int = Field(default=20, ge=1, le=100, description="Items per page.")
    unread: bool = Field(default=False, description="Only unread items.")
    archived: Literal["false", "true", "all"] = Field(
        default="false", description="false: not archived (default); true: only archived; all."
    )
    category: str | None = Field(
        default=None, max_length=100, description="Only items of this category (its key)."
    )


# -- reading a JSON body ------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"number out of range: {text[:40]}")
    return number


def read_json_body(request: HttpRequest, limit: int | None = None) -> dict[str, Any]:
    """The request's JSON object, or an ``ApiError`` (415, 413 or 400).

    The declared length is checked before the body is read, the real length
    after; NaN, Infinity and overflowing numbers are refused because they
    cannot be stored as JSON.
    """
    if request.content_type != "application/json":
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Send the body as application/json, not {request.content_type or 'nothing'}.",
        )
    charset = request.content_params.get("charset", "utf-8").lower()
    if charset not in {"utf-8", "utf8"}:
        raise ApiError(415, "unsupported_media_type", "The body must be encoded as UTF-8.")
    limit = conf.get("API_MAX_BODY_BYTES") if limit is None else limit
    declared = request.headers.get("Content-Length") or "0"
    if not (declared.isascii() and declared.isdigit()):
        raise field_error("Content-Length", "not a number of bytes")
    if int(declared) > limit:
        raise body_too_large(limit)
    raw = request.body
    if len(raw) > limit:
        raise body_too_large(limit)
    try:
        data = json.loads(
            raw.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float
        )
    except UnicodeDecodeError:
        raise field_error("body", "the body is not valid UTF-8") from None
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise field_error("body", f"malformed JSON: {exc}") from None
    except RecursionError:
        raise field_error("body", "the JSON is nested too deeply") from None
    if not isinstance(data, dict):
        raise field_error("body", f"the body must be a JSON object, not {type(data).__name__}")
    return data


def body_too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"The request body is over the limit of {limit} bytes.")


# Built once: json.dumps with options builds an encoder per call.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON: what the payload limit measures."""
    return len(_COMPACT_JSON(value).encode())
