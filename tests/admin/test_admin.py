"""The ops admin: bad input is refused with a clear message and changes nothing;
records are read-only; the actions do what they say."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import timedelta

import pytest
from django.contrib import admin
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from notify import conf
from notify.delivery.layouts import shipped_layout
from notify.models import (
    ApiKey,
    Category,
    CategoryPreference,
    ChannelPreference,
    ContactPoint,
    Delivery,
    DeliveryAttempt,
    EmailLayout,
    Event,
    MessageTemplate,
    Notification,
    ProviderEvent,
    Suppression,
    UserSettings,
)
from notify.models.status import Status
from rules.index import rule_index
from rules.models import ConfigRevision, Rule

pytestmark = pytest.mark.django_db

SCRIPT = "<script>alert(1)</script>"
APPS = {"notify", "rules"}


@pytest.fixture(autouse=True)
def _admin_settings(settings):
    """Fast password hashing; channel aliases in settings.NOTIFY, where the rules
    app reads them (it never imports notify.conf)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {
            **conf.DEFAULTS["CHANNELS"],
            "sms": {"BACKEND": "channels.sandbox.SandboxChannel", "OPTIONS": {}},
        },
    }


def url(model, view="changelist", *args):
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def assert_says(response, message):
    content = response.content.decode()
    assert escape(message) in content, f"{message!r} not in the page"


# -- rules -----------------------------------------------------------------------------


# The workflow steps' inline formset (empty): what the browser posts with a rule.
NO_STEPS = {
    "steps-TOTAL_FORMS": "0",
    "steps-INITIAL_FORMS": "0",
    "steps-MIN_NUM_FORMS": "0",
    "steps-MAX_NUM_FORMS": "1000",
}


def rule_data(category, **overrides):
    data = {
        "name": "big orders",
        "description": "",
        "is_active": "on",
        "priority": "0",
        "event_type": "order.shipped",
        "condition": "payload.total > 100",
        "category": str(category.pk),
        "message": "order_shipped",
        "recipients": "actor\nexplicit",
        "channels": ["email", "inapp"],
        "_save": "Save",
        **NO_STEPS,
    }
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


BAD_RULES = [
    ("syntax", {"condition": "payload.total >"}, "syntax error in condition"),
    ("escape", {"condition": "payload.__class__"}, "access to '__class__' is not allowed"),
    ("subscript-escape", {"condition": "payload['__init__']"}, "'__init__' is not allowed"),
    ("unknown-name", {"condition": "user.is_staff"}, "unknown name 'user'"),
    ("too-deep", {"condition": "(" * 3000 + "1" + ")" * 3000}, "nested too deeply"),
    ("unknown-template", {"message": "nope"}, "no message template 'nope' (available: "),
    (
        "bad-recipient-line",
        {"recipients": "actor\ngrp:Support"},
        "line 2: unknown recipient kind 'grp'",
    ),
    ("recipient-argument", {"recipients": "payload"}, "line 1: 'payload' needs an argument"),
    ("users-ids", {"recipients": "staff\n\nusers:1,x"}, "line 3: 'users:' takes user ids"),
    ("no-recipients", {"recipients": "  \n"}, "This field is required."),
    ("event-type", {"event_type": "Order.Shipped"}, "is not a valid event type"),
    ("event-type-space", {"event_type": "order shipped"}, "is not a valid event type"),
    ("channel", {"channels": ["email", "fax"]}, "Select a valid choice. fax is not one of"),
]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [case[1:] for case in BAD_RULES],
    ids=[case[0] for case in BAD_RULES],
)
def test_rule_form_refuses_bad_input(admin_client, category, overrides, message):
    response = admin_client.post(url(Rule, "add"), rule_data(category, **overrides))
    assert response.status_code == 200
    assert_says(response, message)
    assert Rule.objects.count() == 0


def test_an_unknown_template_error_lists_the_messages(admin_client, category):
    MessageTemplate.objects.create(message="welcome", part="sms", body="Hi")
    response = admin_client.post(url(Rule, "add"), rule_data(category, message="nope"))
    errors = response.context["adminform"].form.errors["message"]
    available = re.fullmatch(r"no message template 'nope' \(available: (.*)\)", errors[0])
    names = available.group(1).split(", ")
    assert {"order_shipped", "comment_posted", "welcome"} <= set(names)
    assert "pages" not in names  # page templates live there, not messages
    assert names == sorted(names)


def test_the_add_form_starts_with_explicit_recipients(admin_client):
    content = admin_client.get(url(Rule, "add")).content.decode()
    assert ">\nexplicit</textarea>" in content


def test_a_valid_rule_saves_and_reaches_the_index(admin_client, category):
    before = ConfigRevision.current("rules")
    data = rule_data(
        category,
        event_type="order.*",
        condition=" payload.total > 100 and actor.is_staff ",
        recipients="actor\n  group:Support \n\nACTOR\npayload: order.customer",
        channels=["email"],
    )
    response = admin_client.post(url(Rule, "add"), data)
    assert response.status_code == 302, response.content.decode()[:2000]
    rule = Rule.objects.get()
    assert rule.recipients == ["actor", "group:Support", "payload:order.customer"]
    assert rule.channels == ["email"]
    assert rule.condition == "payload.total > 100 and actor.is_staff"
    assert ConfigRevision.current("rules") > before
    assert [r.id for r in rule_index.get().candidates("order.shipped")] == [rule.pk]


def test_without_configured_channels_a_rule_uses_the_defaults(admin_client, category, settings):
    settings.NOTIFY = {k: v for k, v in settings.NOTIFY.items() if k != "CHANNELS"}
    response = admin_client.get(url(Rule, "add"))
    assert "No channels are configured in NOTIFY['CHANNELS']" in response.content.decode()
    data = rule_data(category, channels=None)
    assert admin_client.post(url(Rule, "add"), data).status_code == 302
    assert Rule.objects.get().channels == []


def test_the_rule_change_page_shows_one_recipient_per_line(admin_client, make_rule):
    rule = make_rule(recipients=["actor", "group:Support"], channels=["email", "pager"])
    response = admin_client.get(url(Rule, "change", rule.pk))
    content = response.content.decode()
    assert response.status_code == 200
    assert "actor\ngroup:Support</textarea>" in content
    assert "pager (not configured)" in content
    assert 'value="sms"' in content


def test_a_rule_may_name_a_template_override(admin_client, category):
    MessageTemplate.objects.create(message="welcome", part="sms", body="Hi")
    response = admin_client.post(url(Rule, "add"), rule_data(category, message="welcome"))
    assert response.status_code == 302
    assert Rule.objects.get().message == "welcome"


def test_deactivate_and_activate_move_the_revision(admin_client, make_rule):
    rule = make_rule()
    assert rule_index.get().candidates("order.shipped")
    before = ConfigRevision.current("rules")
    post = {"action": "deactivate", "_selected_action": [rule.pk]}
    response = admin_client.post(url(Rule), post, follow=True)
    assert_says(response, "1 rule deactivated.")
    assert ConfigRevision.current("rules") == before + 1
    assert rule_index.get().candidates("order.shipped") == []
    admin_client.post(url(Rule), {**post, "action": "activate"})
    assert Rule.objects.get().is_active
    assert rule_index.get().candidates("order.shipped")


# -- message templates -----------------------------------------------------------------

BAD_TEMPLATES = [
    ("syntax", "Hi {{ payload.name ", "syntax error on line 1"),
    ("syntax-line", "one\ntwo\n{% for x in %}", "syntax error on line 3"),
    ("unknown-name", "{{ config }}", "unknown name 'config'"),
    ("mro", "{{ ''.__class__.__mro__ }}", "is not allowed (private attribute)"),
    ("globals", "{{ cycler.__init__.__globals__ }}", "is not allowed (private attribute)"),
    ("attr", "x\n{{ payload|attr('__class__') }}", "line 2: refused by the sandbox"),
    ("undefined", "a\nb\n{{ payload.missing }}", "line 3: undefined value"),
    ("repeat", "{{ 'a' * 10**8 }}", "refused, too costly"),
    ("center", "{{ 'ab'|center(10**8) }}", "refused, too costly"),
    ("format", "{{ '{:>999999999}'.format(1) }}", "format width 999999999"),
    ("percent", "{{ '%999999999s' % 1 }}", "format width 999999999"),
    (
        "ranges",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "refused, too costly: stopped",
    ),
    ("type-error", "{{ payload.name + 1 }}", "line 1: TypeError"),
    ("too-deep", "{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}", "nested too deeply"),
]


# The links every email body must show (notify.admin.forms.EMAIL_FOOTER_LINKS).
FOOTER = "{{ settings_url }}{% if unsubscribe_url %} {{ unsubscribe_url }}{% endif %}"


def template_data(**overrides):
    data = {
        "message": "welcome",
        "part": "email.txt",
        "locale": "",
        "body": "Hi {{ payload.name }}",
        "sample_payload": '{"name": "Ann"}',
        "_save": "Save",
    }
    data.update(overrides)
    return data


@pytest.mark.parametrize(
    ("body", "message"),
    [case[1:] for case in BAD_TEMPLATES],
    ids=[case[0] for case in BAD_TEMPLATES],
)
def test_template_form_refuses_bad_templates(admin_client, body, message):
    response = admin_client.post(url(MessageTemplate, "add"), template_data(body=body))
    assert response.status_code == 200
    assert_says(response, message)
    assert MessageTemplate.objects.count() == 0


def test_template_form_wants_an_object_as_sample(admin_client):
    response = admin_client.post(url(MessageTemplate, "add"), template_data(sample_payload="[1]"))
    assert_says(response, "The sample payload must be a JSON object")
    assert MessageTemplate.objects.count() == 0


def test_a_good_template_saves_and_shows_a_preview(admin_client):
    data = template_data(
        part="email.html",
        locale="pt_BR",
        body="<p>Hi {{ payload.name }}</p>" + FOOTER,
        sample_payload=json.dumps({"name": SCRIPT}),
    )
    response = admin_client.post(url(MessageTemplate, "add"), data)
    assert response.status_code == 302, response.content.decode()[:3000]
    template = MessageTemplate.objects.get()
    assert template.locale == "pt-br"
    response = admin_client.get(url(MessageTemplate, "change", template.pk))
    content = response.content.decode()
    rendered = "<p>Hi &lt;script&gt;alert(1)&lt;/script&gt;</p>"
    assert escape(rendered) in content  # in the <pre>, and in the iframe's srcdoc
    assert '<iframe sandbox="" srcdoc="' + escape(rendered) in content
    assert SCRIPT not in content


def test_a_text_preview_is_escaped(admin_client):
    response = admin_client.post(
        url(MessageTemplate, "add"),
        template_data(body=FOOTER + " {{ payload.name }}", sample_payload='{"name": "<b>Ann</b>"}'),
    )
    assert response.status_code == 302
    response = admin_client.get(url(MessageTemplate, "change", MessageTemplate.objects.get().pk))
    content = response.content.decode()
    assert "&lt;b&gt;Ann&lt;/b&gt;</pre>" in content
    assert "<b>Ann</b>" not in content
    assert "<iframe" not in content


# -- events and the outbox -------------------------------------------------------------


@pytest.fixture
def delivery_factory(make_user, category):
    def make(status=Status.DEAD, channel="email", user=None, event=None, **fields):
        user = user or make_user()
        event = event or Event.objects.create(type="order.shipped", payload={"total": 5})
        notification, _ = Notification.objects.get_or_create(
            event=event, rule=None, user=user, defaults={"category": category}
        )
        return Delivery.objects.create(
            notification=notification, channel=channel, status=status, **fields
        )

    return make


def test_retry_now_makes_dead_deliveries_pending(admin_client, delivery_factory):
    dead = delivery_factory(Status.DEAD, attempts=10, error_code="timeout", error_message="slow")
    sent = delivery_factory(Status.SENT, attempts=1)
    response = admin_client.post(
        url(Delivery), {"action": "retry", "_selected_action": [dead.pk, sent.pk]}, follow=True
    )
    assert_says(response, "1 delivery is due again. 1 left alone: only failed or dead")
    dead.refresh_from_db()
    sent.refresh_from_db()
    assert (dead.status, dead.attempts, dead.error_code) == (Status.PENDING, 0, "")
    assert dead.next_attempt_at <= timezone.now()
    assert sent.status == Status.SENT


def test_process_again_requeues_failed_events(admin_client):
    failed = Event.objects.create(type="order.shipped", status=Event.State.FAILED, attempts=5)
    busy = Event.objects.create(type="order.shipped", status=Event.State.PROCESSING)
    response = admin_client.post(
        url(Event),
        {"action": "process_again", "_selected_action": [failed.pk, busy.pk]},
        follow=True,
    )
    assert_says(response, "1 event queued for processing again.")
    failed.refresh_from_db()
    assert (failed.status, failed.attempts) == (Event.State.RECEIVED, 0)
    assert Event.objects.get(pk=busy.pk).status == Event.State.PROCESSING


def test_records_cannot_be_added_or_edited(admin_client, delivery_factory):
    delivery = delivery_factory()
    event = delivery.notification.event
    assert admin_client.get(url(Event, "add")).status_code == 403
    assert admin_client.get(url(Delivery, "add")).status_code == 403
    assert admin_client.post(url(Event, "change", event.pk), {"type": "x"}).status_code == 403
    response = admin_client.get(url(Event, "change", event.pk))
    assert response.status_code == 200
    assert 'name="_save"' not in response.content.decode()
    assert Event.objects.get(pk=event.pk).type == "order.shipped"


def test_delivery_page_shows_every_attempt_escaped(admin_client, delivery_factory):
    delivery = delivery_factory(Status.DEAD, attempts=2)
    now = timezone.now()
    for number, outcome in ((1, "transient"), (2, "permanent")):
        DeliveryAttempt.objects.create(
            delivery=delivery,
            number=number,
            started_at=now,
            finished_at=now,
            provider="smtp",
            outcome=outcome,
            error_code=f"E{number}",
            error_message=f"failure {number}",
            retry_at=now + timedelta(minutes=2) if number == 1 else None,
            sent={"to": "a@example.com", "subject": "Hi", "text": SCRIPT, "html": f"<p>{SCRIPT}"},
            response={"code": 451},
        )
    response = admin_client.get(url(Delivery, "change", delivery.pk))
    content = response.content.decode()
    assert response.status_code == 200
    assert "failure 1" in content and "failure 2" in content
    assert escape(SCRIPT) in content
    assert escape(f"<p>{SCRIPT}") in content
    assert SCRIPT not in content


def test_event_page_lists_notifications_and_deliveries(admin_client, delivery_factory):
    delivery = delivery_factory(Status.SENT, provider="smtp")
    event = delivery.notification.event
    delivery_factory(Status.SKIPPED, channel="sms", event=event, skip_reason="opted_out")
    response = admin_client.get(url(Event, "change", event.pk))
    content = response.content.decode()
    assert "2 notification(s)" in content
    assert "1 sent, 1 skipped" in content
    assert "sms: skipped (opted_out)" in content
    filtered = admin_client.get(url(Delivery) + f"?event={event.pk}")
    assert filtered.status_code == 200
    assert filtered.context["cl"].result_count == 2


def test_delivery_changelist_queries_do_not_grow_with_rows(admin_client, delivery_factory):
    def count_queries():
        with CaptureQueriesContext(connection) as queries:
            assert admin_client.get(url(Delivery)).status_code == 200
        return len(queries)

    delivery_factory()
    few = count_queries()
    for _ in range(8):
        delivery_factory()
    assert count_queries() == few


# -- API keys --------------------------------------------------------------------------


def test_adding_an_api_key_shows_the_token_once(admin_client):
    response = admin_client.post(
        url(ApiKey, "add"), {"name": "shop backend", "_save": "Save"}, follow=True
    )
    content = response.content.decode()
    assert "copy it now, it is not shown again" in content
    token = re.search(r"nfy_[0-9a-f]{12}_[A-Za-z0-9_\-]{20,}", content).group()
    _, prefix, secret = token.split("_", 2)
    key = ApiKey.objects.get(name="shop backend")
    assert key.prefix == prefix
    assert key.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    stored = [str(value) for value in ApiKey.objects.values().get().values()]
    assert not any(secret in value for value in stored)
    for page in (url(ApiKey), url(ApiKey, "change", key.pk)):
        assert secret not in admin_client.get(page).content.decode()


def test_api_key_add_form_takes_only_a_name(admin_client):
    content = admin_client.get(url(ApiKey, "add")).content.decode()
    assert 'name="name"' in content
    assert 'name="secret_hash"' not in content and 'name="revoked_at"' not in content


def test_revoke_action(admin_client):
    key, _ = ApiKey.issue("old")
    response = admin_client.post(
        url(ApiKey), {"action": "revoke", "_selected_action": [key.pk]}, follow=True
    )
    assert_says(response, "1 API key revoked.")
    key.refresh_from_db()
    assert key.revoked_at is not None


# -- categories ------------------------------------------------------------------------


def test_category_channels_are_checkboxes_of_configured_aliases(admin_client):
    data = {
        "name": "Billing",
        "key": "billing",
        "description": "",
        "critical_reason": "",
        "default_mode": "immediate",
        "default_channels": ["email", "sms"],
        "_save": "Save",
    }
    assert admin_client.post(url(Category, "add"), data).status_code == 302
    assert Category.objects.get(key="billing").default_channels == ["email", "sms"]
    response = admin_client.post(
        url(Category, "add"), {**data, "key": "b2", "default_channels": ["fax"]}
    )
    assert_says(response, "Select a valid choice. fax is not one of")
    response = admin_client.post(
        url(Category, "add"), {**data, "key": "b3", "critical": "on", "opt_in": "on"}
    )
    assert_says(response, "A critical category cannot be opt-in.")
    assert Category.objects.count() == 1


# -- every page renders ----------------------------------------------------------------


def test_every_changelist_and_change_page_renders(
    admin_client, admin_user, make_rule, delivery_factory
):
    rule = make_rule()
    delivery = delivery_factory(Status.SENT, user=admin_user)
    category = delivery.notification.category
    now = timezone.now()
    DeliveryAttempt.objects.create(
        delivery=delivery, number=1, started_at=now, finished_at=now, outcome="sent"
    )
    MessageTemplate.objects.create(message="order_shipped", part="sms", body="{{ payload.total }}")
    html, text = shipped_layout("default")
    EmailLayout.objects.create(name="default", html=html, text=text)
    ApiKey.issue("ci")
    UserSettings.objects.create(user=admin_user, timezone="Europe/Paris")
    ContactPoint.objects.create(user=admin_user, kind="email", address="a@example.com")
    CategoryPreference.objects.create(user=admin_user, category=category, mode="daily")
    ChannelPreference.objects.create(
        user=admin_user, category=category, channel="email", enabled=False
    )
    Suppression.objects.create(kind="email", address="b@example.com", reason="hard_bounce")
    ProviderEvent.objects.create(
        provider="postmark", event_type="delivered", delivery=delivery, payload={"a": 1}
    )
    assert rule.pk
    ours = [(m, a) for m, a in admin.site._registry.items() if m._meta.app_label in APPS]
    assert {m.__name__ for m, _ in ours} == {
        "Rule",
        "Event",
        "Notification",
        "Delivery",
        "Category",
        "MessageTemplate",
        "EmailLayout",
        "ApiKey",
        "UserSettings",
        "ContactPoint",
        "CategoryPreference",
        "ChannelPreference",
        "Suppression",
        "ProviderEvent",
        "RuleError",
        "SignalBinding",
        "AuditEntry",
        "WorkflowRun",
    }
    from django.contrib.auth.models import Group
    from django.contrib.contenttypes.models import ContentType

    from notify.models import Event, RuleError
    from rules.models import SignalBinding

    RuleError.objects.create(
        event=Event.objects.first(), kind="condition", message="condition failed: ZeroDivisionError"
    )
    from notify.models import WorkflowRun

    WorkflowRun.objects.create(event=Event.objects.first(), rule=rule, user=admin_user)
    SignalBinding.objects.create(
        content_type=ContentType.objects.get_for_model(Group),
        signal="created",
        event_type="group.created",
        payload_fields=["name"],
    )
    for model, model_admin in ours:
        response = admin_client.get(url(model))
        assert response.status_code == 200, model
        assert response.context["cl"].result_count >= 1, model
        obj = model_admin.get_queryset(response.wsgi_request).first()
        response = admin_client.get(url(model, "change", obj.pk))
        assert response.status_code == 200, model
    assert admin.site.site_header == "notify"


@pytest.mark.parametrize("part", ["email.txt", "email.html"])
def test_an_email_body_needs_no_footer_the_layout_carries_it(admin_client, part):
    """The footer links live in the email layout (tests/delivery/test_email_layouts.py)."""
    response = admin_client.post(
        url(MessageTemplate, "add"), template_data(part=part, body="Hi {{ payload.name }}")
    )
    assert response.status_code == 302
    assert MessageTemplate.objects.count() == 1


def test_other_parts_need_no_footer(admin_client):
    response = admin_client.post(
        url(MessageTemplate, "add"), template_data(part="email.subject", body="Hi")
    )
    assert response.status_code == 302
