"""Latency, from an event's arrival to the provider's acceptance of its
deliveries, for the dashboard (percentiles) and ``/metrics`` (a histogram).

Only immediate sends count: a delivery held on purpose (delayed, scheduled,
quiet hours) or gathered into a digest waits by design. The rows are joined
delivery -> notification -> event by primary key.

* **Percentiles** (``latency``): exact up to ``LATENCY_SAMPLE`` deliveries in
  the period; above, a sample of that many ids: one in each of as many equal
  strata of the period's id range, at a golden-ratio offset inside it (a
  plain stride lines up with fan-out's layout, each recipient's channels side
  by side, and samples one channel only). Computed in SQL: ``percentile_cont``
  on PostgreSQL; on SQLite ``ROW_NUMBER()`` and ``COUNT(*) OVER`` windows
  return the two ranks around each percentile, interpolated in Python exactly
  as ``percentile_cont`` does.
* **Histogram** (``latency_histogram``): every immediate send of a short
  window (``/metrics``: the last hour), counted per bucket in SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from notify.models import Delivery, Event, Notification
from notify.observability.queries import (
    ACCEPTED,
    Period,
    adapt,
    fetch,
    id_edges,
    placeholders,
    postgres,
    table,
)

LATENCY_SAMPLE = 20_000
PERCENTILES = (0.5, 0.95, 0.99)


@dataclass(frozen=True, slots=True)
class Latency:
    channel: str  # "*": every channel
    count: int  # deliveries measured
    p50: float
    p95: float
    p99: float


@dataclass(frozen=True, slots=True)
class LatencyFigures:
    rows: list[Latency]
    sampled: bool  # False: every delivery of the period was measured
    stride: int


GOLDEN = 0.6180339887498949


def latency_rows_sql(sampled: bool = True) -> str:
    """``lat(channel, secs)``: seconds from event received to provider
    acceptance of immediate sends (no hold, no digest).

    Sampled, the parameters are the first id, the step, the jitter factor and
    the number of ids: sample ``j`` is the id ``first + floor((j + frac(j *
    jitter)) * step)``, one id in each of ``number`` equal strata at a
    golden-ratio offset inside it, so that no pattern in the ids (fan-out
    writes each recipient's channels side by side) can line up with the
    sample (step 1 and jitter 0: every id). Not sampled, they are the first id
    and the one past the last. Then come the accepted statuses and the period.
    """
    if not sampled:
        ids, join = "", f"{table(Delivery)} d"
        where = "d.id >= %s AND d.id < %s AND "
    elif postgres():
        ids = (
            "s(id) AS (SELECT CAST(%s AS bigint) + CAST(FLOOR((j + j * %s - FLOOR(j * %s)) "
            "* %s) AS bigint) FROM generate_series(0, CAST(%s AS bigint) - 1) AS j), "
        )
        join, where = f"s JOIN {table(Delivery)} d ON d.id = s.id", ""
    else:
        ids = (
            "j(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM j WHERE j + 1 < %s), "
            "s(id) AS (SELECT %s + CAST((j + j * %s - CAST(j * %s AS INTEGER)) * %s AS INTEGER) "
            "FROM j), "
        )
        join, where = f"s JOIN {table(Delivery)} d ON d.id = s.id", ""
    if postgres():
        seconds = "EXTRACT(EPOCH FROM (d.sent_at - e.received_at))"
    else:
        seconds = "(julianday(d.sent_at) - julianday(e.received_at)) * 86400.0"
    return (
        f"{ids}lat(channel, secs) AS (SELECT d.channel, {seconds} FROM {join} "
        f"JOIN {table(Notification)} n ON n.id = d.notification_id "
        f"JOIN {table(Event)} e ON e.id = n.event_id "
        f"WHERE {where}d.status IN ({placeholders(ACCEPTED)}) AND d.sent_at IS NOT NULL "
        "AND d.hold_reason = '' AND d.digest_id IS NULL "
        "AND d.created_at >= %s AND d.created_at < %s)"
    )


def latency_histogram(
    start: datetime, end: datetime, bounds: Sequence[float]
) -> dict[str, tuple[list[int], float]]:
    """Every immediate send created in ``[start, end)``, per channel: cumulative
    counts at each upper bound (the last is the total) and the sum of seconds."""
    first, stop = id_edges(Delivery, "created_at", [start, end])
    if stop <= first:
        return {}
    buckets = ", ".join(f"SUM(CASE WHEN secs <= {float(b)!r} THEN 1 ELSE 0 END)" for b in bounds)
    sql = (
        f"WITH {latency_rows_sql(sampled=False)} SELECT channel, {buckets}, COUNT(*), "
        "SUM(secs) FROM lat GROUP BY channel ORDER BY channel"
    )
    params = [first, stop, *ACCEPTED, adapt(start), adapt(end)]
    return {
        row[0]: ([int(n or 0) for n in row[1:-1]], float(row[-1] or 0.0))
        for row in fetch(sql, params)
    }


def latency(period: Period, sample: int = LATENCY_SAMPLE) -> LatencyFigures:
    """p50 / p95 / p99 seconds from event received to provider acceptance, per
    channel and for all ("*"), of immediate sends created in ``period``."""
    first, stop = id_edges(Delivery, "created_at", [period.start, period.end])
    span = stop - first
    if span <= 0:
        return LatencyFigures([], sampled=False, stride=1)
    number, step, jitter = (span, 1.0, 0.0) if span <= sample else (sample, span / sample, GOLDEN)
    bounds = [*ACCEPTED, adapt(period.start), adapt(period.end)]
    if postgres():
        params: list[Any] = [first, jitter, jitter, step, number, *bounds]
    else:
        params = [number, first, jitter, jitter, step, *bounds]
    both = (
        "every(channel, secs) AS (SELECT channel, secs FROM lat "
        "UNION ALL SELECT '*', secs FROM lat)"
    )
    if postgres():
        sql = (
            f"WITH {latency_rows_sql()}, {both} SELECT channel, COUNT(*), percentile_cont("
            f"ARRAY[{', '.join(str(p) for p in PERCENTILES)}]) WITHIN GROUP (ORDER BY secs) "
            "FROM every GROUP BY channel ORDER BY channel"
        )
        figures = [
            Latency(channel, n, *[float(v) for v in values])
            for channel, n, values in fetch(sql, params)
        ]
    else:
        figures = _sqlite_percentiles(latency_rows_sql(), both, params)
    return LatencyFigures(figures, sampled=span > sample, stride=max(1, round(step)))


def _sqlite_percentiles(rows: str, both: str, params: list[Any]) -> list[Latency]:
    """The two ranks around each percentile, from window functions, then
    ``percentile_cont``'s interpolation: v[r] + (pos - r) * (v[r + 1] - v[r])."""
    wanted = " OR ".join(
        f"rn = 1 + CAST((n - 1) * {p} AS INTEGER) OR rn = 2 + CAST((n - 1) * {p} AS INTEGER)"
        for p in PERCENTILES
    )
    sql = (
        f"WITH RECURSIVE {rows}, {both}, ranked AS (SELECT channel, secs, "
        "ROW_NUMBER() OVER (PARTITION BY channel ORDER BY secs) AS rn, "
        "COUNT(*) OVER (PARTITION BY channel) AS n FROM every) "
        f"SELECT channel, n, rn, secs FROM ranked WHERE {wanted} ORDER BY channel, rn"
    )
    by_channel: dict[str, tuple[int, dict[int, float]]] = {}
    for channel, n, rank, secs in fetch(sql, params):
        by_channel.setdefault(channel, (n, {}))[1][rank] = float(secs)
    figures = []
    for channel, (n, values) in sorted(by_channel.items()):
        points = []
        for p in PERCENTILES:
            position = (n - 1) * p
            rank = int(position) + 1
            below = values[rank]
            above = values.get(rank + 1, below)
            points.append(below + (position - int(position)) * (above - below))
        figures.append(Latency(channel, n, *points))
    return figures
