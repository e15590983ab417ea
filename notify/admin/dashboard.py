"""The delivery-health dashboard: an admin page for ops (staff who may view
deliveries), at ``/admin/notify/delivery/dashboard/``, linked from the admin
index and the deliveries list.

For a period (the last 24 hours, 7 days, 30 days, or chosen days) it shows
events received and notifications made; deliveries by outcome over time, by
channel and provider, skipped by reason (suppressed included); latency from
event received to provider acceptance (p50 / p95 / p99); retries and dead
letters; the top failure reasons, each linked to the deliveries behind it;
digest runs and held deliveries (reminders, delayed sends, quiet hours).

The figures come from ``notify.observability.queries`` (index range counts: a
million deliveries in a fraction of a second per chart) and the charts are
inline SVG (``notify.observability.charts``): no script, no network. Each
chart says how long its query took.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.http import urlencode

from notify.models.status import Status
from notify.observability import latency, queries
from notify.observability.charts import (
    STATUS_COLOURS,
    Segment,
    Series,
    grouped_bars,
    horizontal_bars,
    legend,
    lines,
    seconds,
    stacked_bars,
)
from notify.observability.queries import Period, PeriodError

# Outcome groups of the "deliveries over time" chart, bottom to top.
OUTCOMES = (
    Status.DELIVERED,
    Status.SENT,
    Status.PENDING,
    Status.SENDING,
    Status.DIGEST,
    Status.SKIPPED,
    Status.CANCELLED,
    Status.BOUNCED,
    Status.FAILED,
    Status.DEAD,
)
PERCENTILE_COLOURS = ("#90caf9", "#1e88e5", "#0d47a1")


@dataclass(slots=True)
class Chart:
    """One panel: its title, the SVG (or None when there is nothing to draw),
    what else the template shows, and how long its queries took."""

    key: str
    title: str
    svg: Any = None
    legend: list[Series] | None = None
    rows: Any = None
    note: str = ""
    milliseconds: float = 0.0

    @property
    def legend_html(self) -> str:
        return legend(self.legend) if self.legend else ""


def parse_period(params: Any, now: datetime | None = None) -> tuple[Period, str]:
    """The period asked for (``?period=24h|7d|30d`` or ``?period=custom&start=
    YYYY-MM-DD&end=YYYY-MM-DD``) and an error message ("" if none); a bad
    choice falls back to the last 24 hours, with the error shown."""
    key = params.get("period") or "24h"
    if key in queries.PRESETS:
        return Period.last(key, now), ""
    if key == "custom":
        try:
            first = date.fromisoformat(params.get("start", ""))
            last = date.fromisoformat(params.get("end", "") or params.get("start", ""))
        except ValueError:
            return Period.last("24h", now), "Custom period: give the start and end as YYYY-MM-DD."
        try:
            return Period.between(first, last, now), ""
        except PeriodError as exc:
            return Period.last("24h", now), f"Custom period: {exc}."
    return Period.last("24h", now), f"Unknown period {key!r}: showing the last 24 hours."


def bucket_labels(period: Period) -> list[str]:
    if period.bucket < timedelta(days=1):
        fmt = "%H:%M" if period.end - period.start <= timedelta(days=2) else "%d %b %Hh"
    else:
        fmt = "%d %b"
    return [moment.strftime(fmt) for moment in period.buckets]


def changelist(view: str, **query: Any) -> str:
    url = reverse(f"admin:notify_{view}_changelist")
    return f"{url}?{urlencode(query)}" if query else url


def period_filter(period: Period, field: str = "created_at") -> dict[str, str]:
    return {f"{field}__gte": period.start.isoformat(), f"{field}__lt": period.end.isoformat()}


class Dashboard:
    """Computes every panel for a period, timing each one."""

    def __init__(self, period: Period):
        self.period = period
        self.labels = bucket_labels(period)
        # The newest bucket is still filling unless the period ended: paler, dashed.
        self.partial = period.end > timezone.now() - period.bucket
        self._deliveries: list[queries.DeliveryCount] | None = None
        self.totals: dict[str, Any] = {}

    def timed(self, key: str, title: str, build: Callable[[Chart], None]) -> Chart:
        chart = Chart(key, title)
        started = time.perf_counter()
        build(chart)
        chart.milliseconds = (time.perf_counter() - started) * 1000
        return chart

    def charts(self) -> list[Chart]:
        return [
            self.timed("events", "Events received and notifications made", self.events),
            self.timed("outcomes", "Deliveries by outcome", self.outcomes),
            self.timed("channels", "Deliveries by channel and provider", self.channels),
            self.timed("skipped", "Skipped deliveries, by reason", self.skipped),
            self.timed("latency", "Latency: event received to provider acceptance", self.latency),
            self.timed("retries", "Retries and dead letters", self.retries),
            self.timed("scheduled", "Digests and reminders", self.scheduled),
            self.timed("failures", "Top failure reasons", self.failures),
        ]

    @property
    def deliveries(self) -> list[queries.DeliveryCount]:
        if self._deliveries is None:  # one query feeds four panels
            self._deliveries = queries.delivery_counts(self.period)
        return self._deliveries

    def deliveries_of(self, *statuses: str) -> list[queries.DeliveryCount]:
        """The counts of some statuses: from the page's query if it ran, else
        counting only those (a panel drawn alone, as the benchmark does)."""
        if self._deliveries is None:
            return queries.delivery_counts(self.period, statuses)
        return [row for row in self._deliveries if row.status in statuses]

    # -- panels -------------------------------------------------------------------------

    def events(self, chart: Chart) -> None:
        events = queries.event_series(self.period)
        notifications = queries.notification_series(self.period)
        states = queries.event_states(self.period)
        chart.legend = [
            Series("events received", events, "#1e88e5"),
            Series("notifications made", notifications, "#8e24aa"),
        ]
        chart.svg = lines(self.labels, chart.legend, chart.title, partial_last=self.partial)
        self.totals.update(
            events=sum(events),
            notifications=sum(notifications),
            events_failed=states.get("failed", 0),
            rule_errors=queries.rule_error_count(self.period),
            rule_errors_url=changelist("ruleerror", **period_filter(self.period)),
            failed_events_url=changelist(
                "event", status__exact="failed", **period_filter(self.period, "received_at")
            ),
        )

    def outcomes(self, chart: Chart) -> None:
        grid: dict[str, list[int]] = {status: [0] * len(self.labels) for status in OUTCOMES}
        for row in self.deliveries:
            grid.setdefault(row.status, [0] * len(self.labels))[row.bucket] += row.count
        chart.legend = [
            Series(status, values, STATUS_COLOURS.get(status, "#bdbdbd"))
            for status, values in grid.items()
            if any(values)
        ]
        by_status = {s.name: sum(s.values) for s in chart.legend}
        self.totals.update(
            deliveries=sum(by_status.values()),
            by_status=by_status,
            accepted=by_status.get("sent", 0) + by_status.get("delivered", 0),
            suppressed=sum(
                r.count
                for r in self.deliveries
                if r.status == Status.SKIPPED and r.reason == "suppressed"
            ),
        )
        if chart.legend:
            chart.svg = stacked_bars(
                self.labels, chart.legend, chart.title, partial_last=self.partial
            )

    def channels(self, chart: Chart) -> None:
        counts: dict[tuple[str, str], Counter] = defaultdict(Counter)
        for row in self.deliveries:
            counts[(row.channel, row.provider)][row.status] += row.count
        ordered = sorted(counts.items(), key=lambda item: (item[0][0], -sum(item[1].values())))
        rows = []
        for (channel, provider), by_status in ordered:
            name = f"{channel} · {provider or 'no provider'}"
            segments = [
                Segment(status, by_status[status], STATUS_COLOURS.get(status, "#bdbdbd"))
                for status in OUTCOMES
                if by_status[status]
            ]
            rows.append((name, segments))
        statuses = [s for s in OUTCOMES if any(c[s] for c in counts.values())]
        chart.legend = status_legend(statuses)
        chart.rows = {
            "statuses": statuses,
            "lines": [
                (
                    channel,
                    provider or "—",
                    [by_status[s] for s in statuses],
                    sum(by_status.values()),
                )
                for (channel, provider), by_status in ordered
            ],
        }
        if rows:
            chart.svg = horizontal_bars(rows, chart.title, width=1080, left=200)

    def skipped(self, chart: Chart) -> None:
        reasons: Counter = Counter()
        for row in self.deliveries_of(Status.SKIPPED, Status.CANCELLED):
            reasons[(row.status, row.reason or "no reason")] += row.count
        rows, links = [], []
        for (status, reason), n in reasons.most_common():
            colour = "#e53935" if reason == "suppressed" else STATUS_COLOURS[status]
            label = reason if status == Status.SKIPPED else f"{reason} (cancelled)"
            rows.append((label, [Segment(status, n, colour)]))
            query = {"status__exact": status, **period_filter(self.period)}
            if reason != "no reason":
                query["skip_reason__exact"] = reason
            links.append((label, changelist("delivery", **query)))
        chart.note = "Suppressed: the address is on the suppression list (bounce, complaint, STOP)."
        if rows:
            chart.svg = horizontal_bars(rows, chart.title)
        chart.rows = links

    def latency(self, chart: Chart) -> None:
        figures = latency.latency(self.period)
        rows = []
        for figure in figures.rows:
            name = "all channels" if figure.channel == "*" else figure.channel
            values = (figure.p50, figure.p95, figure.p99)
            segments = [
                Segment(label, value, colour)
                for label, value, colour in zip(
                    ("p50", "p95", "p99"), values, PERCENTILE_COLOURS, strict=True
                )
            ]
            rows.append((f"{name} (n={figure.count:,})", segments))
        if rows:
            chart.svg = grouped_bars(rows, chart.title)
        overall = next((f for f in figures.rows if f.channel == "*"), None)
        self.totals["p95"] = overall.p95 if overall else None
        chart.note = (
            "Immediate sends (no hold, no digest), from the event's arrival to the "
            "provider's acceptance. "
            + (
                f"A sample of {latency.LATENCY_SAMPLE:,} deliveries spread over the "
                f"period (about one in {figures.stride})."
                if figures.sampled
                else "Every delivery of the period."
            )
        )

    def retries(self, chart: Chart) -> None:
        retried = queries.retry_series(self.period)
        dead = [0] * len(self.labels)
        for row in self.deliveries_of(Status.DEAD):
            dead[row.bucket] += row.count
        chart.legend = [
            Series("retried (more than one attempt)", retried, "#fb8c00"),
            Series("dead (out of attempts)", dead, STATUS_COLOURS["dead"]),
        ]
        chart.svg = lines(self.labels, chart.legend, chart.title, partial_last=self.partial)
        chart.rows = queries.retries(self.period)
        self.totals["dead"] = sum(dead)
        self.totals["dead_url"] = changelist(
            "delivery", status__exact=Status.DEAD, **period_filter(self.period)
        )

    def failures(self, chart: Chart) -> None:
        chart.rows = [
            (
                reason,
                changelist(
                    "delivery",
                    status__exact=reason.status,
                    channel__exact=reason.channel,
                    error_code=reason.error_code,
                    **period_filter(self.period),
                ),
            )
            for reason in queries.failure_reasons(self.period)
        ]

    def scheduled(self, chart: Chart) -> None:
        digests = queries.digest_runs(self.period)
        held = queries.held_deliveries(self.period)
        by_frequency: dict[str, list[Segment]] = defaultdict(list)
        for d in digests:
            by_frequency[d.frequency].append(
                Segment(d.status, d.digests, STATUS_COLOURS.get(d.status, "#bdbdbd"))
            )
        rows = [(f"{frequency} digests", segments) for frequency, segments in by_frequency.items()]
        by_reason: dict[str, list[Segment]] = defaultdict(list)
        for h in held:
            by_reason[h.hold_reason].append(
                Segment(h.status, h.count, STATUS_COLOURS.get(h.status, "#bdbdbd"))
            )
        rows += [(f"held: {reason}", segments) for reason, segments in by_reason.items()]
        chart.rows = {"digests": digests, "held": held}
        chart.legend = status_legend(
            [s for s in OUTCOMES if any(r.status == s for r in [*digests, *held])]
        )
        if rows:
            chart.svg = horizontal_bars(rows, chart.title)


def status_legend(statuses: list[str]) -> list[Series]:
    return [Series(status, (), STATUS_COLOURS.get(status, "#bdbdbd")) for status in statuses]


def count(value: int | None) -> str:
    return f"{value or 0:,}"


def tiles(totals: dict[str, Any]) -> list[dict[str, Any]]:
    """The figures at the top of the page."""
    by_status = totals.get("by_status", {})
    failed, dead = by_status.get("failed", 0), totals.get("dead", 0)
    p95 = totals.get("p95")
    return [
        {"name": "events received", "value": count(totals.get("events"))},
        {"name": "notifications made", "value": count(totals.get("notifications"))},
        {"name": "deliveries", "value": count(totals.get("deliveries"))},
        {"name": "sent or delivered", "value": count(totals.get("accepted")), "tone": "good"},
        {"name": "failed", "value": count(failed), "tone": "bad" if failed else ""},
        {
            "name": "dead letters",
            "value": count(dead),
            "tone": "bad" if dead else "",
            "url": totals.get("dead_url"),
        },
        {
            "name": f"skipped ({count(totals.get('suppressed'))} suppressed)",
            "value": count(by_status.get("skipped")),
        },
        {"name": "p95 latency", "value": seconds(p95) if p95 is not None else "—"},
        {
            "name": "events failed",
            "value": count(totals.get("events_failed")),
            "tone": "bad" if totals.get("events_failed") else "",
            "url": totals.get("failed_events_url"),
        },
        {
            "name": "rule errors",
            "value": count(totals.get("rule_errors")),
            "tone": "bad" if totals.get("rule_errors") else "",
            "url": totals.get("rule_errors_url"),
        },
    ]


def duration_words(width: timedelta) -> str:
    hours = int(width.total_seconds() // 3600)
    if hours % 24:
        return "an hour" if hours == 1 else f"{hours} hours"
    days = hours // 24
    return "a day" if days == 1 else ("a week" if days == 7 else f"{days} days")


def dashboard_view(request: HttpRequest, model_admin: Any) -> HttpResponse:
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    period, error = parse_period(request.GET)
    board = Dashboard(period)
    started = time.perf_counter()
    charts = board.charts()
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Delivery health",
        "opts": model_admin.model._meta,
        "period": period,
        "period_error": error,
        "presets": [("24h", "Last 24 hours"), ("7d", "Last 7 days"), ("30d", "Last 30 days")],
        "start_value": request.GET.get("start") or period.start.date().isoformat(),
        "end_value": request.GET.get("end") or timezone.now().date().isoformat(),
        "charts": {chart.key: chart for chart in charts},
        "totals": board.totals,
        "tiles": tiles(board.totals),
        "bucket_words": duration_words(period.bucket),
        "partial": board.partial,
        "milliseconds": (time.perf_counter() - started) * 1000,
        "status_colours": STATUS_COLOURS,
    }
    return TemplateResponse(request, "admin_dashboard.html", context)


def dashboard_urls(model_admin: Any) -> list:
    """The admin URL, for ``ModelAdmin.get_urls`` of the delivery admin."""
    view = model_admin.admin_site.admin_view(lambda request: dashboard_view(request, model_admin))
    return [path("dashboard/", view, name="notify_delivery_dashboard")]
