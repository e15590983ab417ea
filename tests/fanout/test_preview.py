"""The rule preview: nothing written, nothing sent (asserted at the SMTP peer),
and the same recipients and rendered text as the real send that follows."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse

from notify.admin.preview import preview_event
from notify.fanout.pipeline import process_event
from notify.intake.trigger import trigger
from notify.models import Delivery, DeliveryAttempt, Event, Notification
from notify.runtime.worker import run_until_idle
from rules.models import DedupRecord

TOKEN = re.compile(r"/unsubscribe/[^/\s\"'<>]+/")


def unsigned(text: str) -> str:
    """One-click links are signed when sent (the token holds the time)."""
    return TOKEN.sub("/unsubscribe/<token>/", text)


def preview_url(rule, **query) -> str:
    url = reverse("admin:rules_rule_preview", args=[rule.pk])
    return url + "?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else url


@pytest.fixture
def people(make_user):
    return make_user("alice", first_name="Alice"), make_user("bob", first_name="Bob")


def test_the_preview_sends_nothing_and_matches_the_real_send(
    admin_client, make_rule, people, smtp_mailer
):
    alice, bob = people
    rule = make_rule(name="Shipped", recipients=["explicit"], channels=["email", "inapp"])
    event = trigger("order.shipped", {"order_id": "A-7", "carrier": "DHL"}, recipients=[alice, bob])
    response = admin_client.get(preview_url(rule, source="event", event=event.pk))
    assert response.status_code == 200
    preview = response.context["preview"]
    # Nothing was sent, written or claimed.
    assert smtp_mailer.messages == []
    assert not Notification.objects.exists() and not Delivery.objects.exists()
    assert Event.objects.get(pk=event.pk).status == Event.State.RECEIVED
    [item] = preview.matched
    assert item.focus and item.recipient_count == 2
    shown = {person.email: {c.channel: c for c in person.channels} for person in item.recipients}
    content = response.content.decode()
    assert "alice@example.com" in content and "Your order A-7 has shipped" in content
    # Now the real send.
    run_until_idle()
    sent = {m.rcpt_tos[0]: m for m in smtp_mailer.messages}
    assert set(sent) == set(shown) == {"alice@example.com", "bob@example.com"}
    assert set(Notification.objects.values_list("user_id", flat=True)) == {alice.pk, bob.pk}
    for address, message in sent.items():
        email = shown[address]["email"]
        assert email.decision == "send now"
        assert email.subject == message.subject
        assert unsigned(email.text) == unsigned(message.text)
        # (MIME ends a part with a line break of its own.)
        assert unsigned(email.html) == unsigned(message.html).removesuffix("\n")
    inbox = Notification.objects.get(user=alice)
    assert shown["alice@example.com"]["inapp"].subject == inbox.title


def test_a_pasted_payload_shows_which_rules_match_and_why_not(admin_client, make_rule, people):
    alice, _ = people
    focus = make_rule(name="Big orders", condition="payload.total > 100", recipients=["actor"])
    make_rule(name="All orders", recipients=["actor"])
    make_rule(name="Broken", condition="payload.missing > 1", recipients=["actor"])
    response = admin_client.get(
        preview_url(
            focus,
            source="payload",
            event_type="order.shipped",
            payload='{"total": 5, "order_id": "B-1"}',
            actor=alice.pk,
        )
    )
    preview = response.context["preview"]
    verdicts = {r.rule.name: (r.matched, r.reason) for r in preview.rules}
    assert verdicts["Big orders"] == (False, "condition is false")
    assert verdicts["All orders"] == (True, "")
    assert verdicts["Broken"][0] is False and "no attribute 'missing'" in verdicts["Broken"][1]
    [matched] = preview.matched
    assert [p.username for p in matched.recipients] == ["alice"]
    assert not Event.objects.exists()  # a pasted payload is never stored
    content = response.content.decode()
    assert "condition is false" in content and "Order B-1 shipped" in content


def test_preview_form_errors_are_shown(admin_client, make_rule):
    rule = make_rule()
    response = admin_client.get(
        preview_url(rule, source="payload", event_type="Bad Type", payload="{nope")
    )
    form = response.context["form"]
    assert "event_type" in form.errors and "Not valid JSON" in str(form.errors["payload"])
    response = admin_client.get(preview_url(rule, source="event", event=999999))
    assert "There is no event #999999" in str(response.context["form"].errors)


def test_preview_shows_dry_run_inactive_and_duplicates_without_claiming(make_rule, people):
    alice, _ = people
    dry = make_rule(
        name="Dry", dry_run=True, dedup_key="payload.order_id", dedup_window=timedelta(hours=1)
    )
    inactive = make_rule(name="Off", is_active=False)
    first = trigger("order.shipped", {"order_id": "C-1"}, recipients=[alice])
    process_event(first.pk)
    run_until_idle()  # the worker renders a dry run
    assert DeliveryAttempt.objects.filter(provider="dry_run").count() == 2  # email and in-app kept
    second = trigger("order.shipped", {"order_id": "C-1"}, recipients=[alice])
    before = list(DedupRecord.objects.values_list("event_id", flat=True))
    preview = preview_event(second, focus=inactive)
    by_name = {r.rule.name: r for r in preview.rules}
    assert by_name["Off"].inactive and by_name["Off"].matched  # shown as if active
    assert any("deduplicated" in note for note in by_name["Dry"].notes)
    assert list(DedupRecord.objects.values_list("event_id", flat=True)) == before
    # The first event itself is not its own duplicate; a dry-run rule says so.
    again = preview_event(first, focus=dry)
    dry_item = {r.rule.name: r for r in again.rules}["Dry"]
    assert any("dry run" in note for note in dry_item.notes)
    assert {c.status for p in dry_item.recipients for c in p.channels} == {"skipped"}
    assert dry_item.recipients[0].channels[0].subject == "Your order C-1 has shipped"
