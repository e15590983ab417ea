"""Event middleware: every event passes the configured processors before the rules.

The built-ins enrich, redact, drop and tag; a processor that raises leaves the
event stored, failed with an error naming it, and "Process again" in admin
runs it through the chain again once the chain is fixed. Messages are checked
with the ``notify_outbox`` fixture (``notify.pytest_plugin``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.checks import registry
from django.urls import reverse

import notify
from notify.delivery.rendering import template_store
from notify.fanout.middleware import (
    DropByType,
    EnrichWithObject,
    EventData,
    EventProcessor,
    RedactFields,
    TagBySource,
    run_chain,
)
from notify.models import Event, Notification
from notify.observability.checks import check_event_middleware

pytest_plugins = ["notify.pytest_plugin"]  # a no-op when the entry point loaded it

MESSAGES = {
    "order_enriched": {
        "email.subject": "Order {{ payload.order_id }} for {{ payload.customer.first_name }}\n",
        "email.txt": "Hello {{ payload.customer.first_name }}\n",
        "inapp": "Order {{ payload.order_id }}\nFor {{ payload.customer.username }}",
    },
    "order_secret": {
        "email.subject": "Order {{ payload.order_id }}\n",
        "email.txt": "Card: {{ payload.card.number }}, password {{ payload.password }}\n",
        "inapp": "Order {{ payload.order_id }}\nPaid",
    },
}


@pytest.fixture
def messages(settings, tmp_path: Path):
    for name, parts in MESSAGES.items():
        folder = tmp_path / "templates" / name
        folder.mkdir(parents=True)
        for part, source in parts.items():
            (folder / part).write_text(source, encoding="utf-8")
    settings.NOTIFY = {
        **settings.NOTIFY,
        "TEMPLATE_DIRS": [str(tmp_path / "templates"), *settings.NOTIFY["TEMPLATE_DIRS"]],
    }
    template_store.refresh(force=True)
    yield
    template_store.refresh(force=True)


def middleware(settings, *entries) -> None:
    settings.NOTIFY = {**settings.NOTIFY, "EVENT_MIDDLEWARE": list(entries)}


# -- the built-ins as plain functions (no database) ----------------------------------------


def data(payload=None, **fields) -> EventData:
    return EventData(type=fields.pop("type", "order.shipped"), payload=payload or {}, **fields)


def test_redact_fields_by_name_anywhere_and_by_path():
    processor = RedactFields(fields=["password", "card.number"])
    event = data(
        {
            "password": "hunter2",
            "card": {"number": "4111111111111111", "expiry": "12/30"},
            "users": [{"password": "x1"}, {"name": "ann"}],
            "number": 7,  # a bare "number" elsewhere is not a dotted match
        }
    )
    result = processor.process(event)
    assert result.payload == {
        "password": "[redacted]",
        "card": {"number": "[redacted]", "expiry": "12/30"},
        "users": [{"password": "[redacted]"}, {"name": "ann"}],
        "number": 7,
    }
    assert result.tags == ["redacted"]
    assert event.payload["card"]["number"] == "4111111111111111"  # the input is not mutated
    again = processor.process(result)
    assert again.payload == result.payload and again.tags == ["redacted"]  # idempotent
    assert processor.process(data({"other": 1})).tags == []


def test_drop_by_type_with_patterns():
    processor = DropByType(types=["debug.*", "health.ping"])
    assert processor.process(data(type="debug.trace")) is None
    assert processor.process(data(type="health.ping")) is None
    assert processor.process(data(type="order.shipped")) is not None


def test_tag_by_source_with_extra_tags():
    processor = TagBySource(extra={"api": ["external"]})
    assert processor.process(data(source="api")).tags == ["source:api", "external"]
    assert processor.process(data(source="signal", tags=["x"])).tags == ["x", "source:signal"]


def test_the_chain_stops_at_a_drop_and_names_the_processor():
    chain = [
        ("a.Tag", TagBySource()),
        ("b.Drop", DropByType(types=["*"])),
        ("c.Never", RedactFields(fields=["x"])),
    ]
    result, dropped_by = run_chain(data(source="cli"), chain)
    assert dropped_by == "b.Drop"
    assert result.tags == ["source:cli"]  # as the processors before the drop left it


@pytest.mark.parametrize(
    ("processor", "options", "message"),
    [
        (RedactFields, {}, "fields must be"),
        (DropByType, {"types": "debug.*"}, "types must be"),
        (EnrichWithObject, {"model": "auth.User"}, "into"),
    ],
)
def test_built_ins_refuse_bad_options(processor, options, message):
    with pytest.raises(ValueError, match=message):
        processor(**options)


# -- through the pipeline ------------------------------------------------------------------


@pytest.mark.django_db
def test_enrich_adds_the_related_object_and_templates_use_it(
    settings, messages, make_user, make_rule, notify_outbox
):
    middleware(
        settings,
        {
            "CLASS": "notify.fanout.middleware.EnrichWithObject",
            "OPTIONS": {
                "model": "auth.User",
                "field": "customer_id",
                "into": "customer",
                "fields": ["username", "first_name", "password"],
            },
        },
    )
    ann = make_user("ann", first_name="Ann")
    make_rule(message="order_enriched", recipients=["payload:customer_id"])
    event = notify.trigger("order.shipped", {"order_id": "A-7", "customer_id": ann.pk})

    [email] = notify_outbox.assert_notified(ann, "order.shipped", channels=["email"], count=1)[:1]
    assert email.subject == "Order A-7 for Ann"
    event.refresh_from_db()
    assert event.payload["customer"] == {"username": "ann", "first_name": "Ann"}  # no password
    assert event.tags == ["enriched"]
    assert event.status == Event.State.PROCESSED


@pytest.mark.django_db
def test_enrich_without_the_object_says_so(settings, make_rule, make_user, notify_outbox):
    middleware(
        settings,
        {
            "CLASS": "notify.fanout.middleware.EnrichWithObject",
            "OPTIONS": {"model": "auth.User", "field": "customer_id", "into": "customer"},
        },
    )
    bob = make_user("bob")
    make_rule()
    event = notify.trigger(
        "order.shipped", {"order_id": "B-1", "customer_id": 999_999}, recipients=[bob]
    )
    notify_outbox.assert_notified(bob, "order.shipped", channels=["email", "inapp"])
    event.refresh_from_db()
    assert event.payload["customer"] is None
    assert event.tags == ["enrich-missing"]


@pytest.mark.django_db
def test_redact_removes_secrets_before_the_rules_and_the_templates(
    settings, messages, make_user, make_rule, notify_outbox
):
    middleware(
        settings,
        {
            "CLASS": "notify.fanout.middleware.RedactFields",
            "OPTIONS": {"fields": ["password", "card.number"]},
        },
    )
    ann = make_user("ann", first_name="Ann")
    make_rule(message="order_secret")
    payload = {
        "order_id": "A-8",
        "password": "hunter2",
        "card": {"number": "4111111111111111"},
    }
    event = notify.trigger("order.shipped", payload, recipients=[ann])

    [email] = [m for m in notify_outbox.for_user(ann) if m.channel == "email"]
    assert email.text.startswith("Card: [redacted], password [redacted]\n\n--\n")  # the layout
    assert "hunter2" not in email.text + email.html and "4111" not in email.text + email.html
    event.refresh_from_db()
    assert "hunter2" not in str(event.payload) and "4111" not in str(event.payload)
    assert event.tags == ["redacted"]


@pytest.mark.django_db
def test_drop_keeps_the_event_processed_and_tagged(settings, make_user, make_rule, notify_outbox):
    middleware(
        settings,
        "notify.fanout.middleware.TagBySource",
        {"CLASS": "notify.fanout.middleware.DropByType", "OPTIONS": {"types": ["order.*"]}},
    )
    ann = make_user("ann")
    make_rule()
    event = notify.trigger("order.shipped", {"order_id": "A-9"}, recipients=[ann])

    notify_outbox.assert_nothing_sent()
    event.refresh_from_db()
    assert event.status == Event.State.PROCESSED
    assert event.tags == ["source:python", "dropped"]
    assert event.error == "dropped by middleware notify.fanout.middleware.DropByType"
    assert not Notification.objects.exists()


class Exploding(EventProcessor):
    """Raises with an address in its message (the log must not show it)."""

    def process(self, event: EventData) -> EventData:
        raise ValueError(f"cannot score {event.payload.get('email')}")


@pytest.mark.django_db
def test_a_processor_that_raises_leaves_the_event_failed_and_admin_reprocesses_it(
    settings, make_user, make_rule, notify_outbox, admin_client
):
    middleware(
        settings,
        "notify.fanout.middleware.TagBySource",
        "tests.fanout.test_event_middleware.Exploding",
    )
    ann = make_user("ann")
    make_rule()
    event = notify.trigger(
        "order.shipped", {"order_id": "A-10", "email": "ann@example.com"}, recipients=[ann]
    )

    notify_outbox.assert_nothing_sent()
    event.refresh_from_db()
    assert event.status == Event.State.FAILED
    assert event.error == (
        "middleware tests.fanout.test_event_middleware.Exploding raised ValueError: "
        "cannot score ann@example.com"
    )
    assert event.tags == []  # nothing the chain did is saved
    assert event.payload == {"order_id": "A-10", "email": "ann@example.com"}

    # Fixed, then "Process again" from the event list in admin.
    middleware(settings, "notify.fanout.middleware.TagBySource")
    response = admin_client.post(
        reverse("admin:notify_event_changelist"),
        {"action": "process_again", "_selected_action": [event.pk]},
        follow=True,
    )
    assert response.status_code == 200
    notify_outbox.assert_notified(ann, "order.shipped", channels=["email", "inapp"])
    event.refresh_from_db()
    assert (event.status, event.tags, event.error) == (Event.State.PROCESSED, ["source:python"], "")


class ReturnsADict(EventProcessor):
    def process(self, event):
        return {"type": event.type}


@pytest.mark.django_db
def test_a_processor_must_return_event_data_or_none(settings, make_user, make_rule, notify_outbox):
    middleware(settings, "tests.fanout.test_event_middleware.ReturnsADict")
    make_rule()
    event = notify.trigger("order.shipped", {"order_id": "A-11"}, recipients=[make_user("ann")])
    notify_outbox.flush()
    event.refresh_from_db()
    assert event.status == Event.State.FAILED
    assert "returned dict, not EventData" in event.error


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("notify.fanout.middleware.Nope", "cannot import notify.fanout.middleware.Nope"),
        (
            {"CLASS": "notify.fanout.middleware.DropByType", "OPTIONS": {}},
            "DropByType() failed: ValueError",
        ),
        ({"PATH": "x"}, "entries are dotted paths"),
    ],
)
def test_bad_middleware_fails_the_system_check(settings, entry, message):
    middleware(settings, entry)
    assert check_event_middleware in registry.registry.get_checks()
    [error] = check_event_middleware()
    assert error.id == "notify.E201"
    assert message in error.msg
