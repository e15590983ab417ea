"""Logs: no address, phone number, token, secret or message body in any line, at
any level; one JSON object per line with ``NOTIFY_LOG_FORMAT=json``, carrying
event, delivery and attempt ids."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from notify import trigger
from notify.logs import (
    JsonFormatter,
    PlainFormatter,
    RedactingFilter,
    log_context,
    redact,
)
from notify.models import ApiKey, ContactPoint, Delivery
from notify.runtime.worker import run_until_idle

ROOT = Path(__file__).resolve().parents[2]
BODY = "Parcel ZEBRA-ORCHID-4412 left the warehouse"
PHONE = "+15558675309"
EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
PHONE_RE = re.compile(r"\+\d[\d ()-]{7,}\d|555\W?867\W?5309")


def lines_of(records: list[logging.LogRecord]) -> list[str]:
    """Each record as the plain and the JSON handler would print it, traceback included."""
    plain = PlainFormatter()
    as_json = JsonFormatter()
    return [text for r in records for text in (plain.format(r), as_json.format(r))]


@pytest.mark.django_db(transaction=True)
def test_a_full_flow_at_debug_logs_ids_and_nothing_personal(
    caplog, client, settings, make_user, make_rule, smtp_mailer
):
    """Email (sent, refused with a 550 naming the address, deferred), SMS to a
    phone number, an API request with a bearer token, a middleware error that
    quotes the payload: every record at DEBUG, from every logger."""
    settings.NOTIFY = {
        **settings.NOTIFY,
        "EVENT_MIDDLEWARE": ["tests.fanout.test_event_middleware.Exploding"],
    }
    caplog.set_level(logging.DEBUG)
    for name in ("notify", "channels", "rules", "django", "django.request", "django.server"):
        caplog.set_level(logging.DEBUG, logger=name)
    alice = make_user("alice", first_name="Alice")
    bob = make_user("bob")
    ContactPoint.objects.create(user=alice, kind="phone", address=PHONE, verified_at=timezone.now())
    make_rule(channels=["email", "sms", "inapp"])
    smtp_mailer.reject(bob.email, 550)
    smtp_mailer.defer_next(1, 451)
    _key, token = ApiKey.issue("shop")
    secrets = [alice.email, bob.email, PHONE, token, BODY, "ZEBRA-ORCHID"]

    # The middleware raises with the address in its message: the event fails.
    failed = trigger("order.shipped", {"order_id": "X-1", "email": alice.email}, recipients=[alice])
    run_until_idle()
    settings.NOTIFY = {**settings.NOTIFY, "EVENT_MIDDLEWARE": []}
    # Over the API, with the token, a body text in the payload; then a bad request.
    response = client.post(
        "/api/v1/events",
        data=json.dumps(
            {
                "type": "order.shipped",
                "payload": {"order_id": "X-2", "carrier": BODY},
                "recipients": [alice.pk, bob.pk],
            }
        ),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 202, response.content
    bad = client.post(
        "/api/v1/events",
        data=json.dumps({"type": "Not A Type", "payload": {"to": bob.email}}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}x",
    )
    assert bad.status_code == 401
    run_until_idle()
    Delivery.objects.filter(status="pending").update(next_attempt_at=timezone.now())
    run_until_idle()

    # It all happened.
    assert Delivery.objects.filter(channel="sms", status="sent").count() == 1
    assert Delivery.objects.filter(channel="email", status="failed").count() == 1  # bob, 550
    assert Delivery.objects.filter(channel="email", status="sent", attempts=2).count() == 1
    failed.refresh_from_db()
    assert alice.email in failed.error  # the record keeps it; the log does not
    assert any(BODY in m.text for m in smtp_mailer.messages)  # the body was sent...

    lines = lines_of(caplog.records)
    assert len(caplog.records) >= 8
    for line in lines:  # ...and is in no log line
        for secret in secrets:
            assert secret not in line, line
        assert not EMAIL_RE.search(line), line
        assert not PHONE_RE.search(line), line
    # What the logs do say: ids, on the lines of each send.
    sends = [r for r in caplog.records if r.name == "notify.delivery.send"]
    assert sends and all(
        isinstance(r.delivery_id, int) and isinstance(r.event_id, int) and r.attempt >= 1
        for r in sends
    )
    assert any("[email]" in r.getMessage() for r in caplog.records)  # redacted, not dropped
    assert any(
        r.name == "notify.fanout.pipeline"
        and r.event_id == failed.pk
        and "Exploding" in r.getMessage()
        for r in caplog.records
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("to ann.lee+x@mail.example.com now", "to [email] now"),
        ("sms +1 555 867 5309 and +447911123456", "sms [phone] and [phone]"),
        ("call (555) 867-5309", "call [phone]"),
        ("Authorization: Bearer abc.DEF-123456", "Authorization: [redacted] [token]"),
        ("key nfy_0a1b2c3d4e5f_Zm9vYmFyYmF6cXV4", "key [token]"),
        ("password=hunter2&next=/x", "password=[redacted]&next=/x"),
        ('{"api_key": "s3cr3t", "n": 1}', '{"api_key": "[redacted]", "n": 1}'),
        (
            "GET /unsubscribe/eJxTyk1MSlGyUlAqLkktLkksSc3JTE0FAEbsB5s:1vX:sig/",
            "GET /unsubscribe/[token]/",
        ),
        ("postgres://notify:pw@db:5432/x", "postgres://[credentials]@db:5432/x"),
        (
            "hook https://hooks.slack.com/services/T0/B0/abc",
            "hook https://hooks.slack.com/services/[token]",
        ),
        ("xoxb-123-456-abcDEF", "[token]"),
        ("signed eyJhbGciOi.eyJzdWIiOi.SflKxwRJSM", "signed [token]"),
        ("secret AbCdEf0123456789GhIjKl0123456789", "secret [token]"),
        # What must survive: ids, codes, times, durations, status words.
        ("event 42 delivery 1234567 attempt 3", "event 42 delivery 1234567 attempt 3"),
        (
            "error_code=550 at 2026-01-02 12:00:00.123456",
            "error_code=550 at 2026-01-02 12:00:00.123456",
        ),
        ("took 1.234 s; 503 from provider smtp", "took 1.234 s; 503 from provider smtp"),
    ],
)
def test_redact(text, expected):
    assert redact(text) == expected


def test_every_record_is_redacted_when_made_whatever_the_handler():
    """The record factory: a handler added by anyone sees clean records."""
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append  # type: ignore[method-assign]
    logger = logging.getLogger("some.library")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        logger.debug("to %s, token=%s", "bob@example.com", "abc")
        try:
            raise ValueError("bad address carol@example.com")
        except ValueError:
            logger.exception("failed for %s", "+15558675309")
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in seen] == ["to [email], token=[redacted]", "failed for [phone]"]
    assert "carol@example.com" not in seen[1].exc_text and "[email]" in seen[1].exc_text
    assert "carol@example.com" not in logging.Formatter().format(seen[1])


def test_arguments_survive_for_formatters_that_read_them():
    """uvicorn's access log unpacks ``record.args``: they stay a tuple, redacted
    one by one, unless only the whole message shows the secret."""
    logger = logging.getLogger("uvicorn.access.test")

    def record(msg, *args):
        return logger.makeRecord(logger.name, logging.INFO, __file__, 1, msg, args, None)

    access = record(
        '%s - "%s %s HTTP/%s" %d',
        "127.0.0.1:5555",
        "GET",
        "/unsubscribe/Zm9vYmFy:1vX:abcdef0123456789xyz/",
        "1.1",
        200,
    )
    assert access.args == ("127.0.0.1:5555", "GET", "/unsubscribe/[token]/", "1.1", 200)
    assert record("plain %s", "words").args == ("words",)
    glued = record("to %s@%s", "alice", "example.com")
    assert (glued.getMessage(), glued.args) == ("to [email]", None)


def test_the_redacting_filter_for_other_handlers():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "to %s", ("d@example.com",), None)
    assert RedactingFilter().filter(record) and record.getMessage() == "to [email]"


def test_json_lines_carry_the_context_ids():
    formatter = JsonFormatter()
    logger = logging.getLogger("notify.test")
    with log_context(event_id=7, delivery_id=11, attempt=2, channel="email"):
        record = logger.makeRecord(
            "notify.test", logging.WARNING, __file__, 1, "sent to %s", ("e@example.com",), None
        )
    line = formatter.format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "sent to [email]"
    assert (entry["event_id"], entry["delivery_id"], entry["attempt"], entry["channel"]) == (
        7,
        11,
        2,
        "email",
    )
    assert entry["level"] == "WARNING" and entry["logger"] == "notify.test"
    assert entry["time"].endswith("+00:00")


def test_notify_log_format_json_in_a_real_process(tmp_path):
    code = (
        "import django, logging; django.setup(); "
        "from notify.logs import log_context\n"
        "with log_context(event_id=5, delivery_id=9, attempt=1):\n"
        "    logging.getLogger('notify.delivery.send').warning('refused %s', 'f@example.com')\n"
        "try:\n    1 / 0\nexcept ZeroDivisionError:\n"
        "    logging.getLogger('notify.runtime.worker').exception('round failed for +15558675309')\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "notify.project.settings",
        "NOTIFY_VAR_DIR": str(tmp_path),
        "NOTIFY_LOG_FORMAT": "json",
        "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3",
    }
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    first, second = [json.loads(line) for line in done.stderr.strip().splitlines()]
    assert first["message"] == "refused [email]"
    assert (first["event_id"], first["delivery_id"], first["attempt"]) == (5, 9, 1)
    assert second["message"] == "round failed for [phone]"
    assert "ZeroDivisionError" in second["exception"]


def test_a_bad_log_format_stops_the_start(tmp_path):
    env = {**os.environ, "NOTIFY_LOG_FORMAT": "xml", "NOTIFY_VAR_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", "import notify.project.settings"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "NOTIFY_LOG_FORMAT must be 'plain' or 'json'" in done.stderr


def test_reverse_names():
    assert reverse("readyz") == "/readyz" and reverse("metrics") == "/metrics"
