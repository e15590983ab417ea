"""``/metrics``: Prometheus text counted in the database, so what is scraped after
a run matches the tables exactly whichever process recorded the outcomes;
labels never name a user or an address; only the token or an allowed address
may scrape."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from django.db.models import Count, Sum
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from notify import trigger
from notify.models import Category, CategoryPreference, Delivery, DeliveryMode, Event
from notify.models.status import Status
from notify.observability.checks import check_metrics_access
from notify.observability.metrics import address_allowed, may_scrape
from notify.runtime.worker import run_until_idle

TOKEN = "metrics-token-0123456789abcdef"


def scrape(client, **headers) -> dict[str, list]:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return {
        family.name: family.samples
        for family in text_string_to_metric_families(response.content.decode())
    }


def by_labels(samples, *labels, name=None) -> dict[tuple, int]:
    return {
        tuple(s.labels[label] for label in labels): int(s.value)
        for s in samples
        if name is None or s.name == name
    }


@pytest.fixture
def a_day_of_work(make_user, make_rule, category, smtp_mailer):
    """Sent, failed (550), retried then sent (451), skipped (no address), held
    for a digest, an event that matched nothing: through the real SMTP peer."""
    make_rule(channels=["email", "inapp"])
    alice, bob, dave = make_user("alice"), make_user("bob"), make_user("dave")
    carol = make_user("carol", email="")
    erin = make_user("erin")
    CategoryPreference.objects.create(user=erin, category=category, mode=DeliveryMode.DAILY)
    Category.objects.create(key="security", name="Security")
    smtp_mailer.reject(bob.email, 550)
    smtp_mailer.defer_next(1, 451)  # dave's email is the first to reach DATA
    trigger("order.shipped", {"order_id": "A-1"}, recipients=[dave])
    run_until_idle()
    Delivery.objects.filter(status=Status.PENDING).update(next_attempt_at=timezone.now())
    trigger("order.shipped", {"order_id": "A-2"}, recipients=[alice, bob, carol, erin])
    trigger("nothing.matches", {})
    run_until_idle()
    return alice, bob, carol, dave, erin


@pytest.mark.django_db
def test_scraped_metrics_match_the_database_exactly(client, a_day_of_work):
    statuses = set(Delivery.objects.values_list("status", flat=True))
    assert {Status.SENT, Status.FAILED, Status.SKIPPED, Status.DIGEST} <= statuses
    metrics = scrape(client)

    deliveries = Counter(
        Delivery.objects.values_list("channel", "provider", "status", "skip_reason")
    )
    assert by_labels(metrics["notify_deliveries"], "channel", "provider", "status", "reason") == (
        dict(deliveries)
    )
    events = Counter(Event.objects.values_list("source", "status"))
    assert by_labels(metrics["notify_events"], "source", "status") == dict(events)
    assert by_labels(metrics["notify_notifications"], "category") == {
        ("orders",): 5,
        ("security",): 0,
    }
    retried = (
        Delivery.objects.filter(attempts__gt=1)
        .values_list("channel", "status")
        .annotate(n=Count("pk"), extra=Sum("attempts") - Count("pk"))
    )
    assert by_labels(metrics["notify_deliveries_retried"], "channel", "status") == {
        (c, s): n for c, s, n, _ in retried
    }
    assert by_labels(metrics["notify_delivery_retry_attempts"], "channel", "status") == {
        (c, s): extra for c, s, _, extra in retried
    }
    assert ("email", Status.SENT) in by_labels(
        metrics["notify_deliveries_retried"], "channel", "status"
    )

    accepted = Counter(
        Delivery.objects.filter(
            status__in=[Status.SENT, Status.DELIVERED, Status.BOUNCED],
            hold_reason="",
            digest__isnull=True,
            created_at__gte=timezone.now() - timedelta(hours=1),
        ).values_list("channel", flat=True)
    )
    # A gauge histogram: buckets, then _gcount and _gsum (gauges in the text format).
    assert by_labels(metrics["notify_delivery_latency_seconds_gcount"], "channel") == {
        (channel,): n for channel, n in accepted.items()
    }
    buckets = metrics["notify_delivery_latency_seconds"]
    infinite = [s for s in buckets if s.labels.get("le") == "+Inf"]
    assert {s.labels["channel"]: int(s.value) for s in infinite} == dict(accepted)
    assert all(s.value > 0 for s in metrics["notify_delivery_latency_seconds_gsum"])
    assert by_labels(metrics["notify_outbox_due"], "kind") == {("deliveries",): 0, ("events",): 0}
    assert metrics["notify_scheduler_leader"][0].value == 0  # no scheduler in a test
    assert metrics["notify_metrics_collect_seconds"][0].value > 0


@pytest.mark.django_db
def test_labels_never_name_a_user_or_an_address(client, a_day_of_work):
    text = client.get("/metrics").content.decode()
    for user in a_day_of_work:
        assert user.username not in text
    assert "@" not in text
    assert "example.com" not in text


@pytest.mark.django_db
def test_only_allowed_addresses_or_the_token_may_scrape(client, settings):
    assert client.get("/metrics").status_code == 200  # the test client is 127.0.0.1
    response = client.get("/metrics", REMOTE_ADDR="10.1.2.3")
    assert response.status_code == 403
    assert b"METRICS_TOKEN" in response.content

    settings.NOTIFY = {**settings.NOTIFY, "METRICS_TOKEN": TOKEN}
    response = client.get("/metrics", REMOTE_ADDR="10.1.2.3")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="notify metrics"'
    wrong = client.get("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION=f"Bearer {TOKEN}x")
    assert wrong.status_code == 401
    right = client.get("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert right.status_code == 200
    assert b"notify_deliveries" in right.content
    # A forwarded header is not an address.
    forwarded = client.get("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_X_FORWARDED_FOR="127.0.0.1")
    assert forwarded.status_code == 401

    settings.NOTIFY = {**settings.NOTIFY, "METRICS_ALLOWED_IPS": ["10.0.0.0/8"]}
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 401
    assert client.post("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 405


def test_address_rules():
    assert address_allowed("127.0.0.1", ["127.0.0.1"])
    assert address_allowed("::ffff:127.0.0.1", ["127.0.0.1"])
    assert address_allowed("::1", ["::1"])
    assert address_allowed("192.168.4.9", ["10.0.0.0/8", "192.168.4.0/24"])
    assert not address_allowed("192.168.5.9", ["192.168.4.0/24"])
    assert not address_allowed("not-an-ip", ["0.0.0.0/0"])
    assert not address_allowed("127.0.0.1", [])


def test_the_token_is_compared_whole(settings):
    settings.NOTIFY = {**settings.NOTIFY, "METRICS_TOKEN": TOKEN, "METRICS_ALLOWED_IPS": []}
    assert may_scrape(f"Bearer {TOKEN}", "10.0.0.1")
    assert may_scrape(f"bearer {TOKEN}", "10.0.0.1")
    assert not may_scrape(f"Basic {TOKEN}", "10.0.0.1")
    assert not may_scrape(f"Bearer {TOKEN[:-1]}", "10.0.0.1")
    assert not may_scrape("Bearer ", "10.0.0.1")
    settings.NOTIFY = {**settings.NOTIFY, "METRICS_TOKEN": None}
    assert not may_scrape("Bearer ", "10.0.0.1")


def test_bad_metrics_settings_fail_the_system_check(settings):
    settings.NOTIFY = {
        **settings.NOTIFY,
        "METRICS_ALLOWED_IPS": ["127.0.0.1", "10.0.0.0/33"],
        "METRICS_TOKEN": "short",
    }
    errors = check_metrics_access()
    assert [e.id for e in errors] == ["notify.E202", "notify.W203"]
    assert "10.0.0.0/33" in errors[0].msg
