"""The delivery-health dashboard: periods, the aggregate queries (checked against
the ORM on a seeded outbox, on SQLite and PostgreSQL), the index plans they rely
on, the admin page (staff only, links, escaping) and the page in headless
Chromium with a screenshot."""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.db.models import Count, F, Sum
from django.urls import reverse
from django.utils import timezone

from bench.seed import seed
from notify.admin.dashboard import parse_period
from notify.models import Delivery, Digest, Event, Notification
from notify.models.status import Status
from notify.observability import latency, queries
from notify.observability.queries import Period
from tests.browser import ARTIFACTS

User = get_user_model()
NOW = datetime(2026, 3, 10, 14, 25, 7, tzinfo=UTC)
DASHBOARD = "/admin/notify/delivery/dashboard/"


# -- periods ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "start", "buckets", "width"),
    [
        ("24h", datetime(2026, 3, 9, 15, tzinfo=UTC), 24, timedelta(hours=1)),
        ("7d", datetime(2026, 3, 3, 18, tzinfo=UTC), 28, timedelta(hours=6)),
        ("30d", datetime(2026, 2, 9, tzinfo=UTC), 30, timedelta(days=1)),
    ],
)
def test_presets_are_whole_buckets_up_to_now(key, start, buckets, width):
    period = Period.last(key, NOW)
    assert (period.start, period.end, period.bucket) == (start, NOW, width)
    assert len(period.buckets) == buckets
    assert period.edges[-1] == NOW and period.edges[-2] < NOW <= period.edges[-2] + width


def test_custom_periods_are_whole_days_and_checked():
    period = Period.between(date(2026, 3, 1), date(2026, 3, 3), NOW)
    assert (period.start, period.end) == (
        datetime(2026, 3, 1, tzinfo=UTC),
        datetime(2026, 3, 4, tzinfo=UTC),
    )
    assert period.bucket == timedelta(hours=6) and len(period.buckets) == 12
    assert Period.between(date(2026, 3, 9), date(2026, 3, 20), NOW).end == NOW
    assert Period.between(date(2025, 6, 1), date(2026, 1, 31), NOW).bucket == timedelta(days=7)
    with pytest.raises(ValueError, match="before the start"):
        Period.between(date(2026, 3, 3), date(2026, 3, 1), NOW)
    with pytest.raises(ValueError, match="at most 366 days"):
        Period.between(date(2024, 1, 1), date(2026, 1, 1), NOW)
    with pytest.raises(ValueError, match="in the future"):
        Period.between(date(2026, 3, 11), date(2026, 3, 12), NOW)


@pytest.mark.parametrize(
    ("params", "key", "error"),
    [
        ({}, "24h", ""),
        ({"period": "7d"}, "7d", ""),
        ({"period": "custom", "start": "2026-03-01", "end": "2026-03-02"}, "custom", ""),
        ({"period": "custom", "start": "2026-03-01"}, "custom", ""),
        ({"period": "custom", "start": "yesterday"}, "24h", "give the start and end as YYYY-MM-DD"),
        (
            {"period": "custom", "start": "2026-03-05", "end": "2026-03-01"},
            "24h",
            "before the start",
        ),
        ({"period": "1y"}, "24h", "Unknown period '1y'"),
    ],
)
def test_the_period_parameter(params, key, error):
    period, message = parse_period(params, NOW)
    assert period.key == key
    assert error in message and bool(message) == bool(error)


# -- the queries, against the ORM ---------------------------------------------------------------


@pytest.fixture
def outbox(db):
    """2,000 deliveries over the 30 days before now (bench.seed)."""
    now = timezone.now()
    counts = seed(2_000, now)
    assert counts["notify_delivery"] == 2_000
    return now


def orm_counts(period: Period) -> Counter:
    rows = Delivery.objects.filter(created_at__gte=period.start, created_at__lt=period.end)
    return Counter(rows.values_list("status", "channel", "provider", "skip_reason"))


def percentile_cont(values: list[float], p: float) -> float:
    ordered = sorted(values)
    position = (len(ordered) - 1) * p
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


@pytest.mark.parametrize("key", ["24h", "7d", "30d"])
def test_delivery_counts_match_the_orm(outbox, key):
    period = Period.last(key, outbox)
    rows = queries.delivery_counts(period)
    got = Counter()
    for row in rows:
        got[(row.status, row.channel, row.provider, row.reason)] += row.count
    assert got == orm_counts(period)
    assert sum(got.values()) > 0
    per_bucket = Counter()
    for row in rows:
        per_bucket[row.bucket] += row.count
    for k, (lo, hi) in enumerate(zip(period.edges, period.edges[1:], strict=False)):
        assert (
            per_bucket[k] == Delivery.objects.filter(created_at__gte=lo, created_at__lt=hi).count()
        )
    # Some statuses only (a panel drawn alone).
    dead = queries.delivery_counts(period, [Status.DEAD])
    assert {r.status for r in dead} <= {Status.DEAD}
    assert sum(r.count for r in dead) == sum(n for k, n in got.items() if k[0] == Status.DEAD)


def test_the_group_by_fallback_counts_the_same(outbox, monkeypatch):
    period = Period.last("30d", outbox)
    expected = sorted(
        queries.delivery_counts(period),
        key=lambda r: (r.bucket, r.status, r.channel, r.provider, r.reason),
    )
    monkeypatch.setattr(queries, "MAX_COMBOS", 0)
    assert queries.delivery_combos() is None
    fallback = sorted(
        queries.delivery_counts(period),
        key=lambda r: (r.bucket, r.status, r.channel, r.provider, r.reason),
    )
    assert fallback == expected


def test_without_a_period_every_delivery_is_counted(outbox):
    rows = queries.delivery_counts(None)
    assert sum(r.count for r in rows) == Delivery.objects.count()
    assert {r.bucket for r in rows} == {-1}


@pytest.mark.parametrize("key", ["24h", "30d"])
def test_events_notifications_and_the_small_panels_match_the_orm(outbox, key):
    period = Period.last(key, outbox)
    edges = list(zip(period.edges, period.edges[1:], strict=False))
    assert queries.event_series(period) == [
        Event.objects.filter(received_at__gte=lo, received_at__lt=hi).count() for lo, hi in edges
    ]
    assert queries.notification_series(period) == [
        Notification.objects.filter(created_at__gte=lo, created_at__lt=hi).count()
        for lo, hi in edges
    ]
    in_period = {"created_at__gte": period.start, "created_at__lt": period.end}
    assert queries.event_states(period) == {
        state: Event.objects.filter(
            status=state, received_at__gte=period.start, received_at__lt=period.end
        ).count()
        for state, _ in Event.State.choices
    }
    retried = (
        Delivery.objects.filter(attempts__gt=1, **in_period)
        .values_list("status", "channel")
        .annotate(n=Count("pk"), extra=Sum(F("attempts") - 1))
        .order_by("status", "channel")
    )
    assert [
        (r.status, r.channel, r.deliveries, r.extra_attempts) for r in queries.retries(period)
    ] == list(retried)
    assert queries.retry_series(period) == [
        Delivery.objects.filter(attempts__gt=1, created_at__gte=lo, created_at__lt=hi).count()
        for lo, hi in edges
    ]
    held = (
        Delivery.objects.filter(**in_period)
        .exclude(hold_reason="")
        .values_list("hold_reason", "status")
        .annotate(n=Count("pk"))
        .order_by("hold_reason", "status")
    )
    assert [(h.hold_reason, h.status, h.count) for h in queries.held_deliveries(period)] == list(
        held
    )
    failures = Counter(
        Delivery.objects.filter(status__in=queries.FAILURES, **in_period).values_list(
            "channel", "status", "error_code"
        )
    )
    reasons = queries.failure_reasons(period, limit=50)
    assert {(r.channel, r.status, r.error_code): r.count for r in reasons} == dict(failures)
    assert [r.count for r in reasons] == sorted((r.count for r in reasons), reverse=True)
    digests = (
        Digest.objects.filter(**in_period)
        .values_list("frequency", "status")
        .annotate(n=Count("pk"), items=Sum("item_count"))
        .order_by("frequency", "status")
    )
    assert [
        (d.frequency, d.status, d.digests, d.items) for d in queries.digest_runs(period)
    ] == list(digests)


def orm_latencies(period: Period) -> dict[str, list[float]]:
    rows = Delivery.objects.filter(
        status__in=latency.ACCEPTED,
        sent_at__isnull=False,
        hold_reason="",
        digest__isnull=True,
        created_at__gte=period.start,
        created_at__lt=period.end,
    ).values_list("channel", "sent_at", "notification__event__received_at")
    latencies: dict[str, list[float]] = {"*": []}
    for channel, sent_at, received_at in rows:
        seconds = (sent_at - received_at).total_seconds()
        latencies.setdefault(channel, []).append(seconds)
        latencies["*"].append(seconds)
    return latencies


def test_latency_percentiles_are_percentile_cont(outbox):
    period = Period.last("30d", outbox)
    figures = latency.latency(period)
    assert not figures.sampled
    expected = orm_latencies(period)
    assert {f.channel for f in figures.rows} == set(expected)
    for figure in figures.rows:
        values = expected[figure.channel]
        assert figure.count == len(values)
        for p, got in zip((0.5, 0.95, 0.99), (figure.p50, figure.p95, figure.p99), strict=True):
            assert got == pytest.approx(percentile_cont(values, p), abs=1e-3)


def test_a_sampled_latency_is_spread_over_every_channel(outbox):
    period = Period.last("30d", outbox)
    exact = {f.channel: f for f in latency.latency(period).rows}
    sampled = latency.latency(period, sample=200)
    assert sampled.sampled and sampled.stride > 1
    by_channel = {f.channel: f for f in sampled.rows}
    assert set(by_channel) == set(exact)  # channels interleave in the ids: no aliasing
    assert 100 < by_channel["*"].count <= 200
    assert by_channel["*"].p50 == pytest.approx(exact["*"].p50, abs=2.0)
    assert statistics.fmean([by_channel["email"].count, by_channel["inapp"].count]) > 30


@pytest.mark.skipif("connection.vendor != 'sqlite'")
def test_the_counts_read_indexes_not_rows(outbox):
    """SQLite plans: every large count is a search of a covering or partial index."""
    period = Period.last("30d", outbox)
    statements: list[tuple[str, list]] = []

    def capture(execute, sql, params, many, context):
        statements.append((sql, list(params or [])))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        queries.delivery_counts(period)
        queries.retries(period)
        queries.retry_series(period)
        queries.held_deliveries(period)
        queries.event_series(period)
        from notify.observability.health import outbox_lag

        outbox_lag()

    def plan(sql: str, params: list) -> str:
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
            return " | ".join(row[-1] for row in cursor.fetchall())

    plans = [plan(sql, params) for sql, params in statements if "SELECT" in sql]
    joined = "\n".join(plans)
    assert (
        "COVERING INDEX delivery_stats_idx (status=? AND channel=? AND provider=? AND skip_reason=? AND created_at>? AND created_at<?)"
        in joined
    )
    assert "delivery_retried_idx" in joined
    assert "delivery_held_idx" in joined
    assert "delivery_due_idx" in joined
    assert "notify_event_received_at" in joined
    assert "SCAN notify_delivery" not in joined.replace("SCAN notify_delivery USING", "")


# -- the admin page -------------------------------------------------------------------------


@pytest.fixture
def staff(db):
    user = User.objects.create_user("ops", "ops@example.com", "pw", is_staff=True)
    return user


def test_the_page_is_for_staff_who_may_view_deliveries(client, staff):
    response = client.get(DASHBOARD)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    client.force_login(staff)
    assert client.get(DASHBOARD).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_delivery"))
    assert client.get(DASHBOARD).status_code == 200
    User.objects.filter(pk=staff.pk).update(is_staff=False)
    assert client.get(DASHBOARD).status_code == 302


@pytest.mark.parametrize(
    "query", ["", "?period=7d", "?period=30d", "?period=custom&start=2026-01-01&end=2026-01-31"]
)
def test_every_chart_renders_for_every_period(admin_client, outbox, query):
    response = admin_client.get(DASHBOARD + query)
    assert response.status_code == 200
    page = response.content.decode()
    charts = response.context["charts"]
    assert list(charts) == [
        "events",
        "outcomes",
        "channels",
        "skipped",
        "latency",
        "retries",
        "scheduled",
        "failures",
    ]
    if query.startswith("?period=custom"):
        return  # before the seeded month: empty panels say so
    assert page.count('<svg class="chart"') >= 7
    assert all(chart.milliseconds >= 0 for chart in charts.values())
    assert "<script" not in page.split('id="dashboard"')[1]
    for external in ('src="http', "url(http", "@import"):
        assert external not in page


def test_an_empty_database_says_so(admin_client):
    page = admin_client.get(DASHBOARD).content.decode()
    assert "No deliveries in this period." in page
    assert "No failed, dead or bounced delivery in this period." in page


def test_a_bad_custom_period_is_explained(admin_client):
    response = admin_client.get(DASHBOARD + "?period=custom&start=2026-03-05&end=2026-03-01")
    assert response.status_code == 200
    assert "Custom period: the end date is before the start date." in response.content.decode()
    assert response.context["period"].key == "24h"


def test_failure_links_open_the_deliveries_behind_them(admin_client, outbox):
    response = admin_client.get(DASHBOARD + "?period=30d")
    rows = response.context["charts"]["failures"].rows
    assert rows
    for reason, url in rows[:4]:
        changelist = admin_client.get(url)
        assert changelist.status_code == 200, url
        assert changelist.context["cl"].result_count == reason.count
        assert all(d.error_code == reason.error_code for d in changelist.context["cl"].result_list)
    skipped = dict(response.context["charts"]["skipped"].rows)
    opted_out = admin_client.get(skipped["opted_out"])
    assert (
        opted_out.context["cl"].result_count
        == Delivery.objects.filter(status=Status.SKIPPED, skip_reason="opted_out").count()
    )
    dead = admin_client.get(response.context["totals"]["dead_url"])
    assert dead.status_code == 200
    assert dead.context["cl"].result_count == response.context["totals"]["dead"]


def test_provider_text_is_escaped(admin_client, make_user, make_rule):
    from notify import trigger
    from notify.runtime.worker import run_until_idle

    make_rule(channels=["email"])
    trigger("order.shipped", {"order_id": "X"}, recipients=[make_user("ann")])
    run_until_idle()
    Delivery.objects.update(
        status=Status.FAILED, error_code="<b>x</b>", error_message="<img src=x onerror=alert(1)>"
    )
    page = admin_client.get(DASHBOARD).content.decode()
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page


def test_the_admin_links_to_it(admin_client):
    index = admin_client.get(reverse("admin:index")).content.decode()
    assert f'href="{DASHBOARD}"' in index and "Delivery health" in index
    changelist = admin_client.get(reverse("admin:notify_delivery_changelist")).content.decode()
    assert f'href="{DASHBOARD}"' in changelist


# -- in the browser ---------------------------------------------------------------------------


@pytest.mark.browser
def test_the_dashboard_in_chromium(page, live_server, transactional_db, screenshot):
    seed(20_000, timezone.now())
    User.objects.create_superuser("root", "root@example.com", "dashboard-pw")
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("requestfailed", lambda request: errors.append(request.url))
    page.on(
        "response",
        lambda response: (
            response.status >= 400
            and not response.url.endswith("/favicon.ico")
            and errors.append(f"{response.status} {response.url}")
        ),
    )
    page.goto(f"{live_server.url}/admin/login/?next={DASHBOARD}")
    page.fill("input[name=username]", "root")
    page.fill("input[name=password]", "dashboard-pw")
    page.click("input[type=submit]")
    page.get_by_role("heading", name="Delivery health").wait_for()

    page.get_by_role("link", name="Last 7 days").click()
    page.wait_for_url("**period=7d")
    assert page.locator("svg.chart").count() >= 7
    for chart in page.locator("svg.chart").all():
        box = chart.bounding_box()
        assert box and box["width"] > 300 and box["height"] > 40
    assert page.locator("#chart-latency svg rect title").count() >= 6  # p50/p95/p99 tooltips
    assert page.locator("#chart-failures a code").count() >= 3
    # Tall viewport, not full_page: admin's sticky header would be drawn mid-page.
    page.set_viewport_size({"width": 1440, "height": 900})
    height = page.evaluate("document.documentElement.scrollHeight")
    page.set_viewport_size({"width": 1440, "height": min(height, 4000)})
    path = screenshot(page, "dashboard", full_page=False)
    assert path == ARTIFACTS / "dashboard.png" and path.stat().st_size > 50_000
    for panel in ("outcomes", "channels", "latency"):  # close-ups, at full size
        page.locator(f"#chart-{panel}").screenshot(path=str(ARTIFACTS / f"dashboard-{panel}.png"))

    # A custom period through the form.
    page.fill("#period-start", (timezone.now() - timedelta(days=3)).date().isoformat())
    page.fill("#period-end", timezone.now().date().isoformat())
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**period=custom**")
    assert "(chosen days)" in page.inner_text("#dashboard")
    assert [e for e in errors if "favicon" not in e and "404 (Not Found)" not in e] == []
    assert all(url.startswith(live_server.url) for url in requests), requests
