"""Fan-out: one event to N group members over email and in-app, preferences applied.

Measured per run, each in a forked process of its own (see ``measure.isolated``):

1. ``fan_out`` of N recipients: seconds, recipients/s, rows/s, queries, RSS
   high-water growth; then, in the same process and database, the baseline:
   the rows it wrote are read back, deleted, and inserted again unchanged
   (same columns, same values, ids included) with one raw ``executemany`` per
   table in one transaction; and the raw floor of the same rows before issue
   14 (``floor_before``: copies of the tables with the indexes of then);
2. the same fan-out under tracemalloc, for the Python heap peak (never timed);
3. both again for N/10 recipients, for the memory ratio peak(N) / peak(N/10),
   which stays near 1 when memory is flat in the number of recipients.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import Group
from django.db import connection, transaction
from django.utils import timezone

from bench.measure import (
    Stopwatch,
    count_queries,
    isolated,
    phase_timers,
    profile_call,
    python_heap_peak,
)
from bench.registry import Context, Figure, Workload, register
from notify.fanout import pipeline, sequence
from notify.fanout.pipeline import fan_out
from notify.models import (
    Category,
    CategoryPreference,
    ChannelPreference,
    ContactPoint,
    Delivery,
    Event,
    Notification,
    Suppression,
    UserSettings,
)
from notify.preferences import directory
from notify.preferences.directory import DatabaseDirectory
from rules.index import rule_index
from rules.models import Rule

EVENT_TYPE = "bench.fanout"
SMALL_EVENT_TYPE = "bench.fanout_small"
BATCH = 5000


def small_size(recipients: int) -> int:
    return max(1, recipients // 10)


# -- setup ----------------------------------------------------------------------------


def seed_users(prefix: str, count: int, groups: dict[str, int]) -> list[int]:
    """``count`` active users, every one in the first group, the first ``n`` in
    each of the others (``groups`` maps a group name to how many members)."""
    User = get_user_model()
    now = timezone.now()
    unusable = make_password(None)
    for start in range(0, count, BATCH):
        User.objects.bulk_create(
            [
                User(
                    username=f"{prefix}{i:07d}",
                    email=email_of(prefix, i),
                    first_name=f"User{i}",
                    password=unusable,  # hashing 100,000 passwords is not the point
                    date_joined=now,
                )
                for i in range(start, min(start + BATCH, count))
            ]
        )
    ids = list(
        User.objects.filter(username__startswith=prefix).order_by("pk").values_list("pk", flat=True)
    )
    Membership = User.groups.through
    for name, members in groups.items():
        group = Group.objects.create(name=name)
        for start in range(0, members, BATCH):
            Membership.objects.bulk_create(
                [
                    Membership(user_id=i, group_id=group.pk)
                    for i in ids[start : min(start + BATCH, members)]
                ]
            )
    return ids


def email_of(prefix: str, i: int) -> str:
    return "" if i % 100 < 5 else f"{prefix}{i}@example.com"  # 5% have no address


def seed_preferences(user_ids: list[int], category: Category, prefix: str) -> dict[str, int]:
    """A realistic mix, by position: opt-outs, digests, pauses, contact points,
    suppressed addresses."""
    now = timezone.now()
    rows: dict[str, list[Any]] = {
        "mode": [],
        "cell": [],
        "settings": [],
        "contact": [],
        "suppression": [],
    }
    for i, user_id in enumerate(user_ids):
        bucket = i % 100
        if 5 <= bucket < 10:  # category off: both channels skipped
            rows["mode"].append(CategoryPreference(user_id=user_id, category=category, mode="off"))
        elif 10 <= bucket < 15:  # email off for this category
            rows["cell"].append(
                ChannelPreference(
                    user_id=user_id, category=category, channel="email", enabled=False
                )
            )
        elif 15 <= bucket < 20:  # daily digest: email held, in-app sent
            rows["mode"].append(
                CategoryPreference(user_id=user_id, category=category, mode="daily")
            )
        elif bucket in (20, 21):  # a verified primary address of their own
            rows["contact"].append(
                ContactPoint(
                    user_id=user_id,
                    kind="email",
                    address=f"work{i}@example.org",
                    verified_at=now,
                    is_primary=True,
                )
            )
        elif bucket == 22:  # an unverified address besides the account's
            rows["contact"].append(
                ContactPoint(user_id=user_id, kind="email", address=f"new{i}@example.org")
            )
        elif 23 <= bucket < 28:
            rows["settings"].append(
                UserSettings(user_id=user_id, timezone="Europe/Paris", locale="fr")
            )
        elif bucket == 28:  # paused notifications
            rows["settings"].append(
                UserSettings(user_id=user_id, paused_until=now + timedelta(days=7))
            )
        elif bucket == 29:  # the address hard-bounced: suppressed, even for critical mail
            rows["suppression"].append(
                Suppression(kind="email", address=email_of(prefix, i), reason="hard_bounce")
            )
    models = {
        "mode": CategoryPreference,
        "cell": ChannelPreference,
        "settings": UserSettings,
        "contact": ContactPoint,
        "suppression": Suppression,
    }
    for key, model in models.items():
        model.objects.bulk_create(rows[key], batch_size=BATCH)
    return {key: len(value) for key, value in rows.items()}


def setup(ctx: Context) -> dict[str, Any]:
    small = small_size(ctx.recipients)
    ctx.say(f"fanout: seeding {ctx.recipients:,} users and their preferences")
    with Stopwatch() as watch:
        category = Category.objects.create(key="bench-orders", name="Bench orders")
        ids = seed_users("fan", ctx.recipients, {"bench": ctx.recipients, "bench-small": small})
        seeded = seed_preferences(ids, category, "fan")
        common = {
            "category": category,
            "channels": ["email", "inapp"],
            "message": "order_shipped",
        }
        Rule.objects.create(
            name="bench fan-out", event_type=EVENT_TYPE, recipients=["group:bench"], **common
        )
        Rule.objects.create(
            name="bench fan-out small",
            event_type=SMALL_EVENT_TYPE,
            recipients=["group:bench-small"],
            **common,
        )
    if connection.vendor == "postgresql":
        # What autovacuum does within a minute of a bulk load: without
        # statistics the first runs planned the group pages and the
        # preference joins blind (100,000 recipients: 30 s, 20 s, 13 s as
        # autovacuum caught up during the runs). SQLite has no autoanalyze.
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    rule_index.clear()
    ctx.say(f"fanout: seeded in {watch.seconds:.1f} s ({seeded})")
    return {"small": small, "seeded": seeded, "seed_seconds": round(watch.seconds, 2)}


# -- one measurement ------------------------------------------------------------------


def new_event(event_type: str) -> Event:
    return Event.objects.create(
        type=event_type,
        payload={"order_id": "B-1", "total": 150, "url": "https://shop.example.com/orders/B-1"},
        status=Event.State.PROCESSED,  # fanned out by hand: keep workers off it
    )


def delete_rows(event_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {Delivery._meta.db_table} WHERE notification_id IN "
            f"(SELECT id FROM {Notification._meta.db_table} WHERE event_id = %s)",
            [event_id],
        )
        cursor.execute(f"DELETE FROM {Notification._meta.db_table} WHERE event_id = %s", [event_id])
        cursor.execute(f"DELETE FROM {Event._meta.db_table} WHERE id = %s", [event_id])


def columns(model) -> list[str]:
    return [f.column for f in model._meta.concrete_fields]


def baseline_insert(event_id: int) -> dict[str, Any]:
    """Read back what fan-out wrote, delete it, insert it again with ``executemany``."""
    n_cols, d_cols = columns(Notification), columns(Delivery)
    n_table, d_table = Notification._meta.db_table, Delivery._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {', '.join(n_cols)} FROM {n_table} WHERE event_id = %s ORDER BY id",
            [event_id],
        )
        notifications = cursor.fetchall()
        cursor.execute(
            f"SELECT {', '.join('d.' + c for c in d_cols)} FROM {d_table} d "
            f"JOIN {n_table} n ON n.id = d.notification_id WHERE n.event_id = %s ORDER BY d.id",
            [event_id],
        )
        deliveries = cursor.fetchall()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {d_table} WHERE notification_id IN "
            f"(SELECT id FROM {n_table} WHERE event_id = %s)",
            [event_id],
        )
        cursor.execute(f"DELETE FROM {n_table} WHERE event_id = %s", [event_id])
    insert_n = (
        f"INSERT INTO {n_table} ({', '.join(n_cols)}) VALUES ({', '.join(['%s'] * len(n_cols))})"
    )
    insert_d = (
        f"INSERT INTO {d_table} ({', '.join(d_cols)}) VALUES ({', '.join(['%s'] * len(d_cols))})"
    )
    with Stopwatch() as watch, transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(insert_n, notifications)
        cursor.executemany(insert_d, deliveries)
    rows = len(notifications) + len(deliveries)
    return {
        "rows": rows,
        "seconds": watch.seconds,
        "rows_per_s": rows / watch.seconds,
        "before": floor_before(n_cols, d_cols, notifications, deliveries),
    }


# The indexes of the two tables before issue 14 (migrations 0001-0010): the
# rows fan-out wrote then, with the b-trees they paid for (20 per recipient
# with two deliveries, counting the tables).
INDEXES_BEFORE = {
    "n": [
        "UNIQUE INDEX {t}_u ON {t} (event_id, rule_id, user_id)",
        "INDEX {t}_e ON {t} (event_id)",
        "INDEX {t}_r ON {t} (rule_id)",
        "INDEX {t}_us ON {t} (user_id)",
        "INDEX {t}_c ON {t} (category_id)",
        "INDEX {t}_i ON {t} (user_id, inbox_at DESC) WHERE inbox_at IS NOT NULL",
        "INDEX {t}_ur ON {t} (user_id) WHERE inbox_at IS NOT NULL AND read_at IS NULL",
    ],
    "d": [
        "UNIQUE INDEX {t}_u ON {t} (notification_id, channel)",
        "INDEX {t}_n ON {t} (notification_id)",
        "INDEX {t}_due ON {t} (next_attempt_at) WHERE status IN ('pending', 'sending')",
        "INDEX {t}_p ON {t} (provider_message_id)",
        "INDEX {t}_dg ON {t} (digest_id)",
        "INDEX {t}_s ON {t} (status, channel, provider, skip_reason, created_at)",
        "INDEX {t}_rt ON {t} (created_at, status, channel, attempts) WHERE attempts > 1",
        "INDEX {t}_h ON {t} (created_at, hold_reason, status) WHERE hold_reason > ''",
        "INDEX {t}_dp ON {t} (channel, created_at) WHERE digest_id IS NULL AND status = 'digest'",
    ],
}


def floor_before(
    n_cols: list[str], d_cols: list[str], notifications: list, deliveries: list
) -> dict[str, Any]:
    """The raw floor of the rows as they were before issue 14: the same rows
    inserted with ``executemany`` into copies of the two tables that carry the
    indexes of then (``INDEXES_BEFORE``). Fan-out's goal is to beat it."""
    tables = {"n": "bench_floor_notification", "d": "bench_floor_delivery"}
    sources = {"n": Notification._meta.db_table, "d": Delivery._meta.db_table}
    with connection.cursor() as cursor:
        for key, table in tables.items():
            cursor.execute(f"DROP TABLE IF EXISTS {table}")
            cursor.execute(f"CREATE TABLE {table} AS SELECT * FROM {sources[key]} WHERE 1 = 0")
            if connection.vendor == "postgresql":
                cursor.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (id)")
            for index in INDEXES_BEFORE[key]:
                cursor.execute("CREATE " + index.format(t=table))
    insert_n = f"INSERT INTO {tables['n']} ({', '.join(n_cols)}) VALUES ({', '.join(['%s'] * len(n_cols))})"
    insert_d = f"INSERT INTO {tables['d']} ({', '.join(d_cols)}) VALUES ({', '.join(['%s'] * len(d_cols))})"
    try:
        with Stopwatch() as watch, transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(insert_n, notifications)
            cursor.executemany(insert_d, deliveries)
    finally:
        with connection.cursor() as cursor:
            for table in tables.values():
                cursor.execute(f"DROP TABLE IF EXISTS {table}")
    return {
        "seconds": watch.seconds,
        "recipients_per_s": len(notifications) / watch.seconds,
        "rows_per_s": (len(notifications) + len(deliveries)) / watch.seconds,
    }


# Where fan-out spends its time: (where the name is looked up, name, label).
PHASES = [
    (DatabaseDirectory, "group_member_ids", "recipients"),
    (sequence, "load_preferences", "preferences"),
    (directory, "load_suppressed", "suppressions"),  # inside load_preferences
    (sequence, "plan_chunk", "decide"),
    (pipeline, "write_fanout_chunk", "write"),
]
TOP_LEVEL = ("recipients", "preferences", "decide", "write")


def timed_fanout(event_type: str, with_baseline: bool) -> dict[str, Any]:
    """Runs in a forked child: one timed fan-out, then (optionally) the baseline."""
    event = new_event(event_type)
    with phase_timers(PHASES) as phases, count_queries() as queries, Stopwatch() as watch:
        stats = fan_out(event)
    phases["other"] = watch.seconds - sum(phases[k] or 0.0 for k in TOP_LEVEL)
    rows = stats.notifications + stats.deliveries
    figures = {
        "recipients": stats.recipients,
        "notifications": stats.notifications,
        "deliveries": stats.deliveries,
        "rows": rows,
        "chunks": stats.chunks,
        "seconds": watch.seconds,
        "recipients_per_s": stats.recipients / watch.seconds,
        "rows_per_s": rows / watch.seconds,
        "queries": queries.count,
        "rss_peak_mib": watch.rss_delta_mib,
        "phases": phases,
        "decisions": dict(stats.decisions),
    }
    if with_baseline:
        figures["baseline"] = baseline_insert(event.pk)
        figures["ratio"] = watch.seconds / figures["baseline"]["seconds"]
        figures["ratio_to_floor_before"] = watch.seconds / figures["baseline"]["before"]["seconds"]
    delete_rows(event.pk)
    return figures


def traced_fanout(event_type: str) -> float:
    """Runs in a forked child: the Python heap peak of one fan-out, in MiB."""
    event = new_event(event_type)
    _, peak = python_heap_peak(lambda: fan_out(event))
    delete_rows(event.pk)
    return peak


def profiled_fanout(event_type: str, path: str) -> str:
    event = new_event(event_type)
    _, text = profile_call(lambda: fan_out(event), path)
    delete_rows(event.pk)
    return text


def run(ctx: Context, state: dict[str, Any]) -> dict[str, Any]:
    if ctx.profile and ctx.run_number == 1:
        path = f"{ctx.profile}.{ctx.database}.fanout.prof"
        ctx.say(f"fanout: profiling one fan-out of {ctx.recipients:,} into {path}")
        print(isolated(lambda: profiled_fanout(EVENT_TYPE, path)), file=sys.stderr)
    ctx.say(f"fanout run {ctx.run_number}: {ctx.recipients:,} recipients")
    figures = isolated(lambda: timed_fanout(EVENT_TYPE, with_baseline=True))
    figures["heap_peak_mib"] = isolated(lambda: traced_fanout(EVENT_TYPE))
    ctx.say(f"fanout run {ctx.run_number}: {state['small']:,} recipients (memory ratio)")
    small = isolated(lambda: timed_fanout(SMALL_EVENT_TYPE, with_baseline=False))
    small.pop("decisions")
    small.pop("phases")
    small["heap_peak_mib"] = isolated(lambda: traced_fanout(SMALL_EVENT_TYPE))
    figures["small"] = small
    figures["memory_ratio"] = {
        "heap": figures["heap_peak_mib"] / small["heap_peak_mib"],
        "rss": figures["rss_peak_mib"] / small["rss_peak_mib"] if small["rss_peak_mib"] else None,
    }
    ctx.say(
        f"fanout run {ctx.run_number}: {figures['recipients_per_s']:,.0f} recipients/s, "
        f"{figures['queries']} queries, ratio to executemany {figures['ratio']:.2f}"
    )
    return figures


register(
    Workload(
        name="fanout",
        title="Fan-out: one event to N recipients (email + in-app, preferences applied)",
        setup=setup,
        run=run,
        figures=(
            Figure("recipients", "recipients"),
            Figure("rows written", "rows"),
            Figure("time", "seconds", "s", baseline="baseline.seconds"),
            Figure("  in recipient lookup", "phases.recipients", "s"),
            Figure("  in load_preferences", "phases.preferences", "s"),
            Figure("    of which load_suppressed", "phases.suppressions", "s"),
            Figure("  in plan_chunk (decide)", "phases.decide", "s"),
            Figure("  in write_fanout_chunk", "phases.write", "s"),
            Figure("  elsewhere", "phases.other", "s"),
            Figure("recipients/s", "recipients_per_s", baseline="baseline.before.recipients_per_s"),
            Figure("rows/s", "rows_per_s", baseline="baseline.rows_per_s"),
            Figure("queries", "queries"),
            Figure("chunks", "chunks"),
            Figure("Python heap peak", "heap_peak_mib", "MiB"),
            Figure("RSS high-water growth", "rss_peak_mib", "MiB"),
            Figure("N/10: recipients", "small.recipients"),
            Figure("N/10: time", "small.seconds", "s"),
            Figure("N/10: Python heap peak", "small.heap_peak_mib", "MiB"),
            Figure("N/10: RSS high-water growth", "small.rss_peak_mib", "MiB"),
            Figure("memory ratio N vs N/10 (heap)", "memory_ratio.heap", "x"),
            Figure("memory ratio N vs N/10 (RSS)", "memory_ratio.rss", "x"),
            Figure("time / baseline time", "ratio", "x"),
            Figure("time / raw floor of the rows before issue 14", "ratio_to_floor_before", "x"),
        ),
    )
)
