"""The figures behind the dashboard and ``/metrics``: aggregate queries that stay
fast on millions of deliveries.

Counting index entries is cheap; decoding and sorting rows is not (SQLite has
no hash aggregation: a ``GROUP BY`` over a million rows sorts a million rows).
So the large counts are index range counts, never a scan that reads columns:

* **Deliveries** by (status, channel, provider, skip reason) and time bucket:
  the distinct combinations are found with a loose index scan on
  ``delivery_stats_idx`` (status, channel, provider, skip_reason, created_at) —
  one index seek per combination —, then every (combination, bucket) is one
  ``COUNT(*)`` over a range of that index. A million deliveries over 30 daily
  buckets is about a thousand range counts in one statement.
* **Events** per bucket: range counts on ``received_at`` (indexed).
* **Notifications** per bucket: ``id`` grows with ``created_at`` (rows are
  stamped when they are inserted), so each bucket edge is found by bisecting
  the primary key (about 20 index probes), and a bucket is a primary-key range
  count. An edge is off by the rows of a fan-out that straddles it (a fan-out
  stamps all its rows with its start time): a chart, not an invoice.
* **Retries** and **held deliveries** (reminders, delayed sends, quiet hours)
  read small partial indexes (``attempts > 1``, ``hold_reason > ''``), and
  **failures** the failed / dead / bounced part of ``delivery_stats_idx``.
* **Latency** (event received to provider acceptance): ``latency.py``.

``python -m bench.observability`` measures every query on a million
deliveries (``BENCHMARKS.md``, "Dashboard").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any

from django.db import connection
from django.utils import timezone

from notify.models import Delivery, Digest, Event, Notification
from notify.models.status import Status

# Deliveries the provider accepted (the latency's end point).
ACCEPTED = (Status.SENT, Status.DELIVERED, Status.BOUNCED)
FAILURES = (Status.FAILED, Status.DEAD, Status.BOUNCED)
# A loose index scan past this many combinations falls back to GROUP BY.
MAX_COMBOS = 2_000

PRESETS: dict[str, tuple[timedelta, timedelta]] = {
    "24h": (timedelta(hours=24), timedelta(hours=1)),
    "7d": (timedelta(days=7), timedelta(hours=6)),
    "30d": (timedelta(days=30), timedelta(days=1)),
}
MAX_CUSTOM_DAYS = 366


def bucket_for(span: timedelta) -> timedelta:
    """A bucket width that gives between 7 and 62 bars."""
    if span <= timedelta(days=2):
        return timedelta(hours=1)
    if span <= timedelta(days=8):
        return timedelta(hours=6)
    if span <= timedelta(days=62):
        return timedelta(days=1)
    return timedelta(days=7)


def align(moment: datetime, width: timedelta) -> datetime:
    """``moment`` rounded down to a multiple of ``width`` since the epoch (UTC)."""
    seconds = int(width.total_seconds())
    return datetime.fromtimestamp(int(moment.timestamp()) // seconds * seconds, UTC)


class PeriodError(ValueError):
    """A chosen period that cannot be shown; the message says why."""


@dataclass(frozen=True, slots=True)
class Period:
    """What the dashboard shows: ``[start, end)`` cut into buckets of ``bucket``."""

    key: str  # "24h", "7d", "30d" or "custom"
    start: datetime
    end: datetime
    bucket: timedelta

    @classmethod
    def last(cls, key: str, now: datetime | None = None) -> Period:
        """The last 24 hours / 7 days / 30 days in whole buckets; the newest is
        the current, partial one."""
        span, width = PRESETS[key]
        now = now or timezone.now()
        start = align(now, width) + width - span
        return cls(key, start, now, width)

    @classmethod
    def between(cls, first: date, last: date, now: datetime | None = None) -> Period:
        """Whole UTC days from ``first`` to ``last``, inclusive (not past now)."""
        now = now or timezone.now()
        if last < first:
            raise PeriodError("the end date is before the start date")
        if (last - first).days + 1 > MAX_CUSTOM_DAYS:
            raise PeriodError(f"choose at most {MAX_CUSTOM_DAYS} days")
        start = datetime.combine(first, time.min, tzinfo=UTC)
        if start >= now:
            raise PeriodError("the start date is in the future")
        end = min(datetime.combine(last + timedelta(days=1), time.min, tzinfo=UTC), now)
        return cls("custom", start, end, bucket_for(end - start))

    @property
    def edges(self) -> list[datetime]:
        """Bucket boundaries: ``start``, ``start + bucket``, ... ``end``."""
        edges = [self.start]
        while edges[-1] + self.bucket < self.end:
            edges.append(edges[-1] + self.bucket)
        edges.append(self.end)
        return edges

    @property
    def buckets(self) -> list[datetime]:
        return self.edges[:-1]


# -- SQL helpers ------------------------------------------------------------------------


def table(model: type) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def postgres() -> bool:
    return connection.vendor == "postgresql"


def ts() -> str:
    """A timestamp parameter (typed on PostgreSQL, where VALUES has no column types)."""
    return "%s::timestamptz" if postgres() else "%s"


def adapt(moment: datetime) -> Any:
    return connection.ops.adapt_datetimefield_value(moment)


def placeholders(values: Sequence[Any]) -> str:
    return ", ".join(["%s"] * len(values))


def fetch(sql: str, params: Sequence[Any] = ()) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, list(params))
        return cursor.fetchall()


def bucket_values(period: Period) -> tuple[str, list[Any]]:
    """``b(k, lo, hi)``: one row per bucket, for a correlated count per bucket."""
    edges = period.edges
    rows = ", ".join(f"({k}, {ts()}, {ts()})" for k in range(len(edges) - 1))
    params: list[Any] = []
    for lo, hi in pairwise(edges):
        params += [adapt(lo), adapt(hi)]
    return f"b(k, lo, hi) AS (VALUES {rows})", params


# -- deliveries -------------------------------------------------------------------------

COMBO = "status, channel, provider, skip_reason"


@dataclass(frozen=True, slots=True)
class DeliveryCount:
    status: str
    channel: str
    provider: str
    reason: str  # skip_reason: why skipped, or the digest frequency
    bucket: int  # index into Period.buckets; -1 when not bucketed
    count: int


def delivery_combos() -> list[tuple[str, str, str, str]] | None:
    """Every (status, channel, provider, skip_reason) present, by a loose index
    scan (one seek each); ``None`` past ``MAX_COMBOS``."""
    source = table(Delivery)
    first = f"SELECT {COMBO} FROM {source} ORDER BY {COMBO} LIMIT 1"
    following = (
        f"SELECT {COMBO} FROM {source} WHERE ({COMBO}) > (%s, %s, %s, %s) ORDER BY {COMBO} LIMIT 1"
    )
    combos = []
    with connection.cursor() as cursor:
        cursor.execute(first)
        row = cursor.fetchone()
        while row is not None:
            combos.append(tuple(row))
            if len(combos) > MAX_COMBOS:
                return None
            cursor.execute(following, list(row))
            row = cursor.fetchone()
    return combos


def delivery_counts(
    period: Period | None = None, statuses: Iterable[str] | None = None
) -> list[DeliveryCount]:
    """Deliveries created in ``period`` per combination and bucket (all of them,
    unbucketed, without a period), of ``statuses`` only if given. Zero counts
    are left out."""
    combos = delivery_combos()
    if combos is None:
        rows = _delivery_counts_grouped(period)
        return rows if statuses is None else [r for r in rows if r.status in set(statuses)]
    if statuses is not None:
        wanted = set(statuses)
        combos = [combo for combo in combos if combo[0] in wanted]
    if not combos:
        return []
    combo_rows = ", ".join(f"({i}, %s, %s, %s, %s)" for i in range(len(combos)))
    params: list[Any] = [value for combo in combos for value in combo]
    match = "d.status = c.st AND d.channel = c.ch AND d.provider = c.pr AND d.skip_reason = c.sk"
    if period is None:
        sql = (
            f"WITH c(i, st, ch, pr, sk) AS (VALUES {combo_rows}) "
            f"SELECT c.i, -1, (SELECT COUNT(*) FROM {table(Delivery)} d WHERE {match}) FROM c"
        )
    else:
        buckets, bucket_params = bucket_values(period)
        params += bucket_params
        sql = (
            f"WITH c(i, st, ch, pr, sk) AS (VALUES {combo_rows}), {buckets} "
            f"SELECT c.i, b.k, (SELECT COUNT(*) FROM {table(Delivery)} d WHERE {match} "
            "AND d.created_at >= b.lo AND d.created_at < b.hi) FROM c CROSS JOIN b"
        )
    return [DeliveryCount(*combos[i], bucket=k, count=n) for i, k, n in fetch(sql, params) if n]


def _delivery_counts_grouped(period: Period | None) -> list[DeliveryCount]:
    """The plain ``GROUP BY`` (too many combinations for the index scan)."""
    where, params, bucket = "", [], "-1"
    if period is not None:
        where = "WHERE created_at >= %s AND created_at < %s"
        params = [adapt(period.start), adapt(period.end)]
        bucket = bucket_expression("created_at", period)
        params = [*bucket_params(period), *params]
    sql = (
        f"SELECT {COMBO}, {bucket}, COUNT(*) FROM {table(Delivery)} {where} GROUP BY 1, 2, 3, 4, 5"
    )
    return [DeliveryCount(*row) for row in fetch(sql, params)]


def bucket_expression(column: str, period: Period) -> str:
    """SQL for the bucket index of ``column`` (two parameters: start, width)."""
    if postgres():
        return f"CAST(FLOOR(EXTRACT(EPOCH FROM ({column} - %s::timestamptz)) / %s) AS INTEGER)"
    return f"CAST((julianday({column}) - julianday(%s)) * 86400.0 / %s AS INTEGER)"


def bucket_params(period: Period) -> list[Any]:
    return [adapt(period.start), period.bucket.total_seconds()]


@dataclass(frozen=True, slots=True)
class Retries:
    status: str
    channel: str
    deliveries: int  # deliveries that took more than one attempt
    extra_attempts: int  # attempts beyond the first


def retries(period: Period | None = None) -> list[Retries]:
    """Deliveries that needed more than one attempt (partial index ``attempts > 1``)."""
    where, params = "attempts > 1", []
    if period is not None:
        where += " AND created_at >= %s AND created_at < %s"
        params = [adapt(period.start), adapt(period.end)]
    sql = (
        f"SELECT status, channel, COUNT(*), SUM(attempts - 1) FROM {table(Delivery)} "
        f"WHERE {where} GROUP BY status, channel ORDER BY status, channel"
    )
    return [Retries(s, c, n, int(extra or 0)) for s, c, n, extra in fetch(sql, params)]


def retry_series(period: Period) -> list[int]:
    """Deliveries per bucket that needed more than one attempt."""
    buckets, params = bucket_values(period)
    sql = (
        f"WITH {buckets} SELECT b.k, (SELECT COUNT(*) FROM {table(Delivery)} d "
        "WHERE d.attempts > 1 AND d.created_at >= b.lo AND d.created_at < b.hi) FROM b"
    )
    return [n for _, n in sorted(fetch(sql, params))]


@dataclass(frozen=True, slots=True)
class FailureReason:
    channel: str
    status: str
    error_code: str
    count: int
    example: str


def failure_reasons(period: Period, limit: int = 10) -> list[FailureReason]:
    """The most frequent (channel, status, error code) of failed, dead and
    bounced deliveries, with one error message as an example."""
    sql = (
        f"SELECT channel, status, error_code, COUNT(*), MAX(error_message) "
        f"FROM {table(Delivery)} WHERE status IN ({placeholders(FAILURES)}) "
        "AND created_at >= %s AND created_at < %s "
        "GROUP BY channel, status, error_code ORDER BY COUNT(*) DESC, channel, status, "
        f"error_code LIMIT {int(limit)}"
    )
    params = [*FAILURES, adapt(period.start), adapt(period.end)]
    return [
        FailureReason(channel, status, code, n, (example or "")[:300])
        for channel, status, code, n, example in fetch(sql, params)
    ]


@dataclass(frozen=True, slots=True)
class Held:
    hold_reason: str
    status: str
    count: int


def held_deliveries(period: Period | None = None) -> list[Held]:
    """Deliveries that waited on purpose (reminders, delayed or scheduled sends,
    quiet hours), by reason and current status (partial index)."""
    where, params = "hold_reason > ''", []
    if period is not None:
        where += " AND created_at >= %s AND created_at < %s"
        params = [adapt(period.start), adapt(period.end)]
    sql = (
        f"SELECT hold_reason, status, COUNT(*) FROM {table(Delivery)} WHERE {where} "
        "GROUP BY hold_reason, status ORDER BY hold_reason, status"
    )
    return [Held(*row) for row in fetch(sql, params)]


# -- events, notifications, digests -----------------------------------------------------


def event_series(period: Period) -> list[int]:
    """Events received per bucket (index on ``received_at``)."""
    buckets, params = bucket_values(period)
    sql = (
        f"WITH {buckets} SELECT b.k, (SELECT COUNT(*) FROM {table(Event)} e "
        "WHERE e.received_at >= b.lo AND e.received_at < b.hi) FROM b"
    )
    return [n for _, n in sorted(fetch(sql, params))]


def event_states(period: Period) -> dict[str, int]:
    """Events received in ``period`` by state (``event_status_idx``)."""
    states = [value for value, _ in Event.State.choices]
    rows = ", ".join("(%s)" for _ in states)
    sql = (
        f"WITH s(st) AS (VALUES {rows}) SELECT s.st, (SELECT COUNT(*) FROM {table(Event)} e "
        "WHERE e.status = s.st AND e.received_at >= %s AND e.received_at < %s) FROM s"
    )
    params = [*states, adapt(period.start), adapt(period.end)]
    return {state: n for state, n in fetch(sql, params)}


def rule_error_count(period: Period) -> int:
    """Rules that failed for an event in ``period`` (index on ``created_at``)."""
    from notify.models import RuleError

    sql = f"SELECT COUNT(*) FROM {table(RuleError)} WHERE created_at >= %s AND created_at < %s"
    return fetch(sql, [adapt(period.start), adapt(period.end)])[0][0]


def id_edges(model: type, column: str, moments: Iterable[datetime]) -> list[int]:
    """For each moment (ascending), the smallest id whose ``column`` is at or
    after it, by bisecting the primary key (``column`` grows with the id); one
    past the last id if none. About 20 primary-key probes per moment."""
    source = table(model)
    probe = (
        f"SELECT id, CASE WHEN {column} >= %s THEN 1 ELSE 0 END FROM {source} "
        "WHERE id >= %s ORDER BY id LIMIT 1"
    )
    edges = []
    with connection.cursor() as cursor:
        # Two subqueries: SQLite answers MIN and MAX from the index only one at a time.
        cursor.execute(f"SELECT (SELECT MIN(id) FROM {source}), (SELECT MAX(id) FROM {source})")
        first, last = cursor.fetchone()
        if first is None:
            return [1 for _ in moments]
        for moment in moments:
            value = adapt(moment)
            low, high = (edges[-1] if edges else first), last + 1
            while low < high:
                middle = (low + high) // 2
                cursor.execute(probe, [value, middle])
                found, reached = cursor.fetchone()
                if reached:
                    high = middle
                else:
                    low = found + 1
            edges.append(low)
    return edges


def notification_series(period: Period) -> list[int]:
    """Notifications created per bucket (primary-key ranges; see the module doc)."""
    edges = id_edges(Notification, "created_at", period.edges)
    rows = ", ".join(f"({k}, %s, %s)" for k in range(len(edges) - 1))
    params = [value for pair in pairwise(edges) for value in pair]
    sql = (
        f"WITH r(k, lo, hi) AS (VALUES {rows}) SELECT r.k, (SELECT COUNT(*) FROM "
        f"{table(Notification)} n WHERE n.id >= r.lo AND n.id < r.hi) FROM r"
    )
    return [n for _, n in sorted(fetch(sql, params))]


@dataclass(frozen=True, slots=True)
class DigestRuns:
    frequency: str
    status: str
    digests: int
    items: int


def digest_runs(period: Period) -> list[DigestRuns]:
    """Digests built in ``period`` by frequency and status, with their items."""
    sql = (
        f"SELECT frequency, status, COUNT(*), SUM(item_count) FROM {table(Digest)} "
        "WHERE created_at >= %s AND created_at < %s GROUP BY frequency, status "
        "ORDER BY frequency, status"
    )
    rows = fetch(sql, [adapt(period.start), adapt(period.end)])
    return [DigestRuns(f, s, n, int(items or 0)) for f, s, n, items in rows]
