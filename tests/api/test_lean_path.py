"""The lean path of ``POST /api/v1/events`` (``notify.project.lean``): the same
answers as Django's full handler, status, headers and body, for every outcome
(accepted, replayed, refused), and served by the ASGI application."""

from __future__ import annotations

import asyncio
import io
import json
import sys
import uuid

import pytest
from django.core.wsgi import get_wsgi_application

from notify.models import ApiKey, Event
from notify.project import asgi, lean

EVENTS = "/api/v1/events"
ORDER = {"type": "order.shipped", "payload": {"order_id": "A1", "total": 150}}
VARYING = {"id", "received_at"}  # differ between two stored events, nothing else may


def environ(body: bytes, headers: dict[str, str], *, method: str = "POST") -> dict:
    env = {
        "REQUEST_METHOD": method,
        "PATH_INFO": EVENTS,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "testserver",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
    }
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        env[key if key == "CONTENT_TYPE" else f"HTTP_{key}"] = value
    return env


def call(app, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], dict]:
    started = {}

    def start_response(status, response_headers, exc_info=None):
        started["status"] = int(status.split()[0])
        started["headers"] = dict(response_headers)

    iterable = app(environ(body, headers), start_response)
    try:
        content = b"".join(iterable)
    finally:
        iterable.close()
    if "Content-Length" in started["headers"]:
        assert int(started["headers"]["Content-Length"]) == len(content)
    try:
        return started["status"], started["headers"], json.loads(content)
    except ValueError:  # Django's own 400 page (a refused Host)
        return started["status"], started["headers"], {"html": content.decode()}


@pytest.fixture
def token(transactional_db):
    return ApiKey.issue("shop")[1]


@pytest.fixture
def apps():
    handler = lean.lean_handlers()[("POST", EVENTS)]
    return get_wsgi_application(), handler


def both(apps, body, headers_for):
    """The full handler's answer and the lean one's to the same request
    (``headers_for(n)``: the headers of the n-th, so keys can differ)."""
    full, lean_handler = apps
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return call(full, raw, headers_for(0)), call(lean_handler, raw, headers_for(1))


def assert_same(full, lean_answer):
    (status, headers, body), (lean_status, lean_headers, lean_body) = full, lean_answer
    assert lean_status == status
    assert set(lean_headers) == set(headers)
    for name, value in headers.items():
        # Location and Content-Length carry the event's id (9 beside 10 is a
        # byte longer); call() checks each Content-Length against its body.
        if name not in {"Location", "Content-Length"}:
            assert lean_headers[name] == value, name
    assert {k: v for k, v in lean_body.items() if k not in VARYING} == {
        k: v for k, v in body.items() if k not in VARYING
    }


def bearer(token, **extra):
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json", **extra}


@pytest.mark.parametrize("across_a_digit", [False, True])
def test_accepted_the_same_as_through_the_full_stack(apps, token, across_a_digit):
    if across_a_digit:  # the full stack's id ends in 9, the lean one's is a digit longer
        while (Event.objects.order_by("-pk").values_list("pk", flat=True).first() or 0) % 10 != 8:
            call(apps[1], json.dumps(ORDER).encode(), bearer(token))
    full, lean_answer = both(
        apps, ORDER, lambda n: bearer(token, **{"Idempotency-Key": f"k-{uuid.uuid4()}"})
    )
    assert full[0] == 202
    assert_same(full, lean_answer)
    assert "X-Frame-Options" in full[1] and "X-Content-Type-Options" in full[1]
    assert lean_answer[1]["Location"] == f"{EVENTS}/{lean_answer[2]['id']}"
    assert Event.objects.filter(pk=lean_answer[2]["id"], type="order.shipped").exists()


def test_a_replay_answers_the_first_event(apps, token):
    _full, first = both(apps, ORDER, lambda n: bearer(token, **{"Idempotency-Key": f"same-{n}"}))
    again = call(
        apps[1], json.dumps(ORDER).encode(), bearer(token, **{"Idempotency-Key": "same-1"})
    )
    assert again[0] == 202 and again[2]["id"] == first[2]["id"]
    other = {**ORDER, "payload": {"order_id": "B2"}}
    full, lean_answer = both(
        apps, other, lambda n: bearer(token, **{"Idempotency-Key": f"same-{n}"})
    )
    assert full[0] == 422 and full[2]["error"] == "idempotency_key_reused"
    status, headers, body = full
    assert_same(
        (status, headers, {**body, "message": body["message"].replace("-0", "-1")}), lean_answer
    )


NO_KEY = {"Authorization": None}


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (ORDER, NO_KEY, 401),
        (ORDER, {"Authorization": "Bearer nfy_nope_nope", "Content-Type": "application/json"}, 401),
        (b"{not json", None, 400),
        ({"type": "Bad Type"}, None, 400),
        ({**ORDER, "extra": 1}, None, 400),
        (ORDER, {"Content-Type": "text/plain"}, 415),
        (ORDER, {"Host": "evil.example"}, 400),
    ],
)
def test_refusals_the_same_as_through_the_full_stack(apps, token, body, headers, status):
    headers = {k: v for k, v in {**bearer(token), **(headers or {})}.items() if v is not None}
    full, lean_answer = both(apps, body, lambda n: headers)
    assert full[0] == status
    assert_same(full, lean_answer)


def test_rate_limited_the_same(apps, token, settings):
    settings.NOTIFY = {**settings.NOTIFY, "API_RATE_LIMIT_PER_KEY": "1/m"}
    full, _lean = both(apps, ORDER, lambda n: bearer(token))
    assert full[0] == 202
    full, lean_answer = both(apps, ORDER, lambda n: bearer(token))
    assert full[0] == 429 and "Retry-After" in full[1]
    assert_same(full, lean_answer)


def test_an_unknown_middleware_turns_the_lean_path_off(settings):
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "tests.api.test_lean_path.Custom"]
    assert lean.lean_middleware(settings.MIDDLEWARE) is None
    assert lean.lean_handlers() == {}


def test_the_asgi_application_serves_the_route_lean(token):
    """Through the bridge: a POST to the route runs the lean handler, a GET the full one."""
    application = asgi.Application(threads=2)
    handler = application.sync_views.routes[("POST", EVENTS)]
    assert isinstance(handler, lean.LeanHandler)
    calls = []
    view = handler.view
    handler.view = lambda request: calls.append(request.path) or view(request)
    body = json.dumps(ORDER).encode()

    async def request(method: str) -> list[dict]:
        scope = {
            "type": "http",
            "method": method,
            "path": EVENTS,
            "raw_path": EVENTS.encode(),
            "root_path": "",
            "query_string": b"",
            "scheme": "http",
            "server": ("testserver", 80),
            "client": ("127.0.0.1", 5000),
            "http_version": "1.1",
            "headers": [
                (b"host", b"testserver"),
                (b"authorization", f"Bearer {token}".encode()),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
        sent = []

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            sent.append(message)

        await application(scope, receive, send)
        return sent

    posted = asyncio.run(request("POST"))
    assert posted[0]["status"] == 202 and calls == [EVENTS]
    got = asyncio.run(request("GET"))
    assert got[0]["status"] == 405 and calls == [EVENTS]
    application.sync_views.executor.shutdown()
