"""A large, realistic outbox written in SQL, for the dashboard benchmark.

``seed(deliveries, now)`` fills an empty database with ``deliveries`` delivery
rows spread over the 30 days before ``now`` (and the events, notifications,
attempts and digests that go with them) in a handful of ``INSERT ... SELECT``
statements over a number series: ``generate_series`` on PostgreSQL, a recursive
CTE on SQLite. Rows are derived from their number by a multiplicative hash, so
the mix is the same on every run and every database:

* 10 deliveries per event: 5 notifications (users drawn from 10,000 new ones,
  one of four categories), each to ``email`` and to ``inapp`` (every tenth to ``sms``);
* per 1,000 deliveries: 700 sent, 60 delivered, 60 skipped (opted out, no
  address, suppressed, not verified), 30 failed, 10 dead, 15 bounced, 25
  pending, 50 held for a digest, 50 sent after a hold (delayed, quiet hours);
* providers ``smtp`` and ``postmark`` (email), ``inbox`` (in-app), ``twilio``
  (SMS); a sent delivery is accepted 0.2 to 10 s after its event was received;
* one attempt per attempted delivery, and one digest per 50 deliveries.

Never run this against a database you care about: the benchmark gives it a
throwaway one (see ``bench.observability``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import connection, transaction

HASH = 2654435761  # Knuth's multiplicative hash: a stable spread of i over 0..999
USERS = 10_000
CATEGORIES = ("orders", "security", "comments", "billing")


def series(count: int) -> str:
    """A relation ``n(i)`` of the integers 1..count."""
    if connection.vendor == "postgresql":
        return f"(SELECT generate_series(1::bigint, {int(count)}) AS i) AS n"
    return (
        f"(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {int(count)}) "
        "SELECT i FROM s) AS n"
    )


def plus_seconds(base: str, seconds: str) -> str:
    """SQL for the timestamp ``base`` (a parameter placeholder) plus ``seconds``."""
    if connection.vendor == "postgresql":
        return f"({base}::timestamptz + ({seconds}) * interval '1 second')"
    return f"strftime('%Y-%m-%d %H:%M:%f', {base}, '+' || ({seconds}) || ' seconds')"


def execute(cursor, sql: str, start: str) -> None:
    """``cursor.execute`` with the modulo and ``strftime`` percent signs escaped
    and every ``%s`` bound to ``start`` (the beginning of the seeded period)."""
    params = [start] * sql.count("%s")
    cursor.execute(sql.replace("%", "%%").replace("%%s", "%s"), params)


def last_id(cursor, table: str) -> int:
    cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}")
    return cursor.fetchone()[0]


def first_id_after(cursor, table: str, before: int) -> int:
    """The first id an ``INSERT ... SELECT`` just made (ids are consecutive in it)."""
    cursor.execute(f"SELECT MIN(id) FROM {table} WHERE id > %s", [before])
    return cursor.fetchone()[0]


def seed(deliveries: int, now: datetime, days: int = 30) -> dict[str, int]:
    """Add the rows (to an empty database, or next to what is there: ids are
    taken as they come); return the row count of each table."""
    notifications = deliveries // 2
    events = max(1, notifications // 5)
    span = days * 86400
    start = connection.ops.adapt_datetimefield_value(now - timedelta(days=days))
    h = f"((n.i * {HASH}) % 1000)"
    true = "true" if connection.vendor == "postgresql" else "1"
    false = "false" if connection.vendor == "postgresql" else "0"
    with transaction.atomic(), connection.cursor() as cursor:
        before = last_id(cursor, "auth_user")
        execute(
            cursor,
            "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, "
            "email, is_staff, is_active, date_joined) "
            f"SELECT '!', {false}, 'seed-' || ({before} + n.i), '', '', "
            f"'seed-' || ({before} + n.i) || '@example.com', {false}, {true}, %s "
            f"FROM {series(USERS)}",
            start,
        )
        first_user = first_id_after(cursor, "auth_user", before)
        categories = []
        for key in CATEGORIES:
            cursor.execute("SELECT id FROM notify_category WHERE key = %s", [key])
            row = cursor.fetchone()
            if row is None:
                cursor.execute(
                    "INSERT INTO notify_category (key, name, description, critical, "
                    "critical_reason, opt_in, default_mode, default_channels) VALUES "
                    f"(%s, %s, '', {false}, '', {false}, 'now', '[]')",
                    [key, key.title()],
                )
                cursor.execute("SELECT id FROM notify_category WHERE key = %s", [key])
                row = cursor.fetchone()
            categories.append(row[0])
        category = (
            "CASE n.i % 4 "
            + " ".join(f"WHEN {i} THEN {pk}" for i, pk in enumerate(categories))
            + " END"
        )
        before_events = last_id(cursor, "notify_event")
        received = plus_seconds("%s", f"(n.i - 1) * {span / events:.6f}")
        execute(
            cursor,
            "INSERT INTO notify_event (type, payload, recipients, source, object_ref, "
            "idempotency_scope, request_hash, received_at, processed_at, status, attempts, "
            "error, tags) "
            "SELECT CASE n.i % 4 WHEN 0 THEN 'order.shipped' WHEN 1 THEN 'comment.posted' "
            "WHEN 2 THEN 'user.login' ELSE 'invoice.paid' END, '{}', '[]', "
            "CASE n.i % 3 WHEN 0 THEN 'api' WHEN 1 THEN 'signal' ELSE 'python' END, '', '', '', "
            f"{received}, {received}, 'processed', 1, '', '[]' FROM {series(events)}",
            start,
        )
        first_event = first_id_after(cursor, "notify_event", before_events)
        # Notification i belongs to the event (i - 1) / 5, made 50 ms after it.
        made = plus_seconds("%s", f"((n.i - 1) / 5) * {span / events:.6f} + 0.05")
        before_notifications = last_id(cursor, "notify_notification")
        execute(
            cursor,
            "INSERT INTO notify_notification (event_id, rule_id, user_id, category_id, "
            "created_at, title, body, url, group_key) "
            f"SELECT {first_event} + (n.i - 1) / 5, NULL, {first_user} + (n.i * 7919) % {USERS}, "
            f"{category}, {made}, '', '', '', '' FROM {series(notifications)}",
            start,
        )
        first_notification = first_id_after(cursor, "notify_notification", before_notifications)
        status = (
            f"CASE WHEN {h} < 700 THEN 'sent' WHEN {h} < 760 THEN 'delivered' "
            f"WHEN {h} < 820 THEN 'skipped' WHEN {h} < 850 THEN 'failed' "
            f"WHEN {h} < 860 THEN 'dead' WHEN {h} < 875 THEN 'bounced' "
            f"WHEN {h} < 900 THEN 'pending' WHEN {h} < 950 THEN 'digest' ELSE 'sent' END"
        )
        channel = (
            "CASE WHEN n.i % 2 = 1 THEN 'email' WHEN ((n.i + 1) / 2) % 10 = 0 THEN 'sms' "
            "ELSE 'inapp' END"
        )
        provider = (
            f"CASE WHEN {h} >= 760 AND {h} < 820 THEN '' WHEN {h} >= 875 AND {h} < 950 THEN '' "
            f"WHEN n.i % 2 = 1 THEN CASE WHEN {h} % 3 = 0 THEN 'postmark' ELSE 'smtp' END "
            "WHEN ((n.i + 1) / 2) % 10 = 0 THEN 'twilio' ELSE 'inbox' END"
        )
        skip_reason = (
            f"CASE WHEN {h} >= 760 AND {h} < 820 THEN CASE {h} % 4 WHEN 0 THEN 'opted_out' "
            "WHEN 1 THEN 'no_address' WHEN 2 THEN 'suppressed' ELSE 'unverified' END "
            f"WHEN {h} >= 900 AND {h} < 950 THEN 'daily' ELSE '' END"
        )
        hold_reason = (
            f"CASE WHEN {h} >= 950 THEN CASE {h} % 2 WHEN 0 THEN 'delayed' ELSE 'quiet_hours' "
            "END ELSE '' END"
        )
        attempts = (
            f"CASE WHEN {h} >= 760 AND {h} < 820 THEN 0 WHEN {h} >= 900 AND {h} < 950 THEN 0 "
            f"WHEN {h} >= 850 AND {h} < 860 THEN 10 "
            f"WHEN {h} % 20 = 7 THEN 2 WHEN {h} % 50 = 3 THEN 3 ELSE 1 END"
        )
        error_code = (
            f"CASE WHEN {h} >= 820 AND {h} < 850 THEN CASE {h} % 3 WHEN 0 THEN '550' "
            "WHEN 1 THEN 'invalid_recipient' ELSE 'template' END "
            f"WHEN {h} >= 850 AND {h} < 860 THEN CASE {h} % 2 WHEN 0 THEN 'timeout' ELSE '503' END "
            f"WHEN {h} >= 860 AND {h} < 875 THEN 'hard_bounce' ELSE '' END"
        )
        error_message = (
            f"CASE WHEN {h} >= 820 AND {h} < 875 THEN 'the provider refused the message' "
            "ELSE '' END"
        )
        created = plus_seconds("%s", f"(((n.i + 1) / 2 - 1) / 5) * {span / events:.6f} + 0.05")
        accepted = plus_seconds(
            "%s", f"(((n.i + 1) / 2 - 1) / 5) * {span / events:.6f} + 0.2 + ({h} % 100) / 10.0"
        )
        held = plus_seconds("%s", f"(((n.i + 1) / 2 - 1) / 5) * {span / events:.6f} + 3600")
        sent_at = (
            f"CASE WHEN {h} < 760 OR ({h} >= 860 AND {h} < 875) THEN {accepted} "
            f"WHEN {h} >= 950 THEN {held} ELSE NULL END"
        )
        before_deliveries = last_id(cursor, "notify_delivery")
        execute(
            cursor,
            "INSERT INTO notify_delivery (notification_id, channel, status, skip_reason, "
            "hold_reason, digest_id, attempts, next_attempt_at, claimed_until, provider, "
            "provider_message_id, error_code, error_message, created_at, sent_at, "
            "delivered_at, updated_at) "
            f"SELECT {first_notification} - 1 + (n.i + 1) / 2, {channel}, {status}, {skip_reason}, {hold_reason}, NULL, "
            f"{attempts}, {created}, NULL, {provider}, '', {error_code}, {error_message}, "
            f"{created}, {sent_at}, NULL, {created} FROM {series(notifications * 2)}",
            start,
        )
        cursor.execute(
            "INSERT INTO notify_deliveryattempt (delivery_id, number, started_at, finished_at, "
            "provider, outcome, error_code, error_message, retry_at, sent, response) "
            "SELECT id, attempts, created_at, COALESCE(sent_at, created_at), provider, "
            "CASE status WHEN 'failed' THEN 'permanent' WHEN 'dead' THEN 'transient' "
            "WHEN 'pending' THEN 'transient' ELSE 'sent' END, error_code, '', NULL, '{}', '{}' "
            f"FROM notify_delivery WHERE attempts > 0 AND id > {before_deliveries}"
        )
        digests = max(1, notifications * 2 // 50)
        due = plus_seconds("%s", f"n.i * {span / digests:.6f}")
        execute(
            cursor,
            "INSERT INTO notify_digest (user_id, channel, frequency, period, due_at, status, "
            "item_count, attempts, provider, provider_message_id, error_message, sent, "
            "created_at, sent_at) "
            f"SELECT {first_user} + n.i % {USERS}, 'email', CASE WHEN n.i % 7 = 0 THEN 'weekly' "
            "ELSE 'daily' END, 'p' || n.i, "
            f"{due}, CASE WHEN n.i % 40 = 0 THEN 'failed' ELSE 'sent' END, 1 + n.i % 9, 1, "
            f"'smtp', '', '', '{{}}', {due}, {due} FROM {series(digests)}",
            start,
        )
        counts = {}
        for table in (
            "notify_event",
            "notify_notification",
            "notify_delivery",
            "notify_deliveryattempt",
            "notify_digest",
        ):
            cursor.execute(f"SELECT COUNT(*) FROM {table}")
            counts[table] = cursor.fetchone()[0]
    with connection.cursor() as cursor:
        # PostgreSQL: what autovacuum does after bulk inserts (visibility map
        # and statistics); SQLite: statistics for the planner.
        # (VACUUM cannot run in a transaction: a test's seeding only analyzes.)
        vacuum = connection.vendor == "postgresql" and not connection.in_atomic_block
        cursor.execute("VACUUM ANALYZE" if vacuum else "ANALYZE")
    return counts
