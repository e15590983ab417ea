"""Prometheus metrics (``/metrics``), counted in the database at scrape time.

Outcomes are recorded by many processes (web, in-process worker threads,
Celery workers, the scheduler), and all of them write the same tables. So the
collector asks the tables, with the index range counts of
``notify.observability.queries``: every process serves the same, exact figures,
and a restart loses nothing — no multiprocess files, no per-process counters to
add up. The price is a few queries per scrape (``BENCHMARKS.md``, "Dashboard":
a million deliveries scrape in under half a second).

Because rows move between statuses and retention deletes old ones, the
families are gauges of what the database holds now ("deliveries that are
failed"), not counters; ``delta()`` / ``deriv()`` turn them into rates. The
latency histogram covers the deliveries created in the last hour (a gauge
histogram: ``histogram_quantile`` reads it directly).

Labels are channel, provider, status, reason, category, source, frequency:
never a user, an address or anything else unbounded or personal.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable, Iterator
from datetime import timedelta

from django.utils import timezone
from django.utils.crypto import constant_time_compare
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric

from notify import conf
from notify.models import Category, Digest, Event, Notification
from notify.observability import queries
from notify.observability.health import outbox_lag, scheduler_leader
from notify.observability.latency import latency_histogram
from notify.observability.queries import fetch, table

# Seconds from event received to provider acceptance.
LATENCY_BOUNDS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
LATENCY_WINDOW = timedelta(hours=1)


def delivery_metrics() -> Iterator[Metric]:
    deliveries = GaugeMetricFamily(
        "notify_deliveries",
        "Deliveries in the database by channel, provider, status and reason "
        "(skip reason, or digest frequency).",
        labels=["channel", "provider", "status", "reason"],
    )
    for row in queries.delivery_counts(None):
        deliveries.add_metric([row.channel, row.provider, row.status, row.reason], row.count)
    yield deliveries
    retried = GaugeMetricFamily(
        "notify_deliveries_retried",
        "Deliveries that took more than one attempt, by channel and status.",
        labels=["channel", "status"],
    )
    extra = GaugeMetricFamily(
        "notify_delivery_retry_attempts",
        "Attempts beyond the first, by channel and status (dead: retried to the last).",
        labels=["channel", "status"],
    )
    for row in queries.retries(None):
        retried.add_metric([row.channel, row.status], row.deliveries)
        extra.add_metric([row.channel, row.status], row.extra_attempts)
    yield retried
    yield extra
    held = GaugeMetricFamily(
        "notify_deliveries_held",
        "Deliveries that waited on purpose (delayed, scheduled, quiet hours...) by status.",
        labels=["reason", "status"],
    )
    for row in queries.held_deliveries(None):
        held.add_metric([row.hold_reason, row.status], row.count)
    yield held


def event_metrics() -> Iterator[Metric]:
    events = GaugeMetricFamily(
        "notify_events", "Events in the database by source and state.", labels=["source", "status"]
    )
    sql = f"SELECT source, status, COUNT(*) FROM {table(Event)} GROUP BY source, status"
    for source, status, n in fetch(sql):
        events.add_metric([source, status], n)
    yield events
    from notify.models import RuleError

    rule_errors = GaugeMetricFamily(
        "notify_rule_errors",
        "Rules that failed for an event (condition, deduplication key or send time "
        "could not be evaluated), by kind.",
        labels=["kind"],
    )
    counts = dict(fetch(f"SELECT kind, COUNT(*) FROM {table(RuleError)} GROUP BY kind"))
    for kind in RuleError.Kind.values:
        rule_errors.add_metric([kind], counts.get(kind, 0))
    yield rule_errors
    notifications = GaugeMetricFamily(
        "notify_notifications", "Notifications in the database by category.", labels=["category"]
    )
    sql = (
        f"SELECT c.key, (SELECT COUNT(*) FROM {table(Notification)} n "
        f"WHERE n.category_id = c.id) FROM {table(Category)} c ORDER BY c.key"
    )
    for key, n in fetch(sql):
        notifications.add_metric([key], n)
    yield notifications


def digest_metrics() -> Iterator[Metric]:
    digests = GaugeMetricFamily(
        "notify_digests",
        "Digests in the database by channel, frequency and status.",
        labels=["channel", "frequency", "status"],
    )
    items = GaugeMetricFamily(
        "notify_digest_items",
        "Items of those digests.",
        labels=["channel", "frequency", "status"],
    )
    sql = (
        f"SELECT channel, frequency, status, COUNT(*), SUM(item_count) FROM {table(Digest)} "
        "GROUP BY channel, frequency, status"
    )
    for channel, frequency, status, n, total in fetch(sql):
        digests.add_metric([channel, frequency, status], n)
        items.add_metric([channel, frequency, status], int(total or 0))
    yield digests
    yield items


def latency_metrics() -> Iterator[Metric]:
    now = timezone.now()
    histogram = GaugeHistogramMetricFamily(
        "notify_delivery_latency_seconds",
        "Seconds from event received to provider acceptance of the immediate sends "
        "created in the last hour, by channel.",
        labels=["channel"],
    )
    figures = latency_histogram(now - LATENCY_WINDOW, now, LATENCY_BOUNDS)
    for channel, (cumulative, total_seconds) in figures.items():
        buckets = [(repr(bound), n) for bound, n in zip(LATENCY_BOUNDS, cumulative, strict=False)]
        buckets.append(("+Inf", cumulative[-1]))
        histogram.add_metric([channel], buckets, total_seconds)
    yield histogram


def readiness_metrics() -> Iterator[Metric]:
    lag = outbox_lag()
    due = GaugeMetricFamily("notify_outbox_due", "Work due now and not yet taken.", labels=["kind"])
    due.add_metric(["deliveries"], lag.due_deliveries)
    due.add_metric(["events"], lag.due_events)
    yield due
    oldest = GaugeMetricFamily(
        "notify_outbox_lag_seconds", "How long the oldest due work has waited.", labels=["kind"]
    )
    oldest.add_metric(["deliveries"], lag.delivery_seconds)
    oldest.add_metric(["events"], lag.event_seconds)
    yield oldest
    leader = scheduler_leader()
    yield GaugeMetricFamily(
        "notify_scheduler_leader",
        "1 when a scheduler holds the leader lock.",
        value=1 if leader.held else 0,
    )


class DatabaseCollector:
    """Everything above, gathered at scrape time."""

    sections = (delivery_metrics, event_metrics, digest_metrics, latency_metrics, readiness_metrics)

    def collect(self) -> Iterable[Metric]:
        started = time.perf_counter()
        for section in self.sections:
            yield from section()
        yield GaugeMetricFamily(
            "notify_metrics_collect_seconds",
            "Seconds this scrape spent counting in the database.",
            value=time.perf_counter() - started,
        )

    def describe(self) -> Iterable[Metric]:
        return []  # nothing at registration: collecting needs the database


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(DatabaseCollector())


def render() -> tuple[bytes, str]:
    """The exposition text and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


# -- who may scrape -----------------------------------------------------------------------


def allowed_networks(
    entries: Iterable[str],
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """``METRICS_ALLOWED_IPS`` as networks ("127.0.0.1", "10.0.0.0/8", "::1")."""
    return [ipaddress.ip_network(entry.strip(), strict=False) for entry in entries]


def address_allowed(address: str, entries: Iterable[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in allowed_networks(entries))


def bearer_token(header: str) -> str:
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def may_scrape(authorization: str, remote_addr: str) -> bool:
    """A scrape is allowed with the bearer token ``METRICS_TOKEN`` (compared in
    constant time) or from an address in ``METRICS_ALLOWED_IPS``. Only the
    socket's peer address counts: a proxy's ``X-Forwarded-For`` is not trusted."""
    token = conf.get("METRICS_TOKEN")
    if token and constant_time_compare(bearer_token(authorization), token):
        return True
    return address_allowed(remote_addr, conf.get("METRICS_ALLOWED_IPS") or ())
