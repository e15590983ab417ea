"""Attempt rows: one ``executemany`` or one multi-row ``INSERT``, A/B.

``python -m bench.attempt_insert`` inserts the same prepared attempt rows
(``notify.outbox.rows.attempt_values``) both ways, alternated in one process
on a throwaway SQLite file and PostgreSQL database, each inside a
transaction rolled back, and prints the median time a row per tick size (1
row: a worker's tick at the defaults; hundreds: a tick of digests, one row
per item). It set ``notify.outbox.rows.ONE_STATEMENT_ROWS`` (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

SIZES = (1, 2, 8, 32, 128, 500)


class _Rollback(Exception):
    pass


def executemany(cursor, rows: list[list[Any]]) -> None:
    """One way: the one-row ``INSERT`` executed for each row (psycopg pipelines it)."""
    from notify.outbox.rows import _attempt_insert

    head, one = _attempt_insert()
    cursor.executemany(f"{head}{one}", rows)


def multi_row(cursor, rows: list[list[Any]]) -> None:
    """The other: one ``INSERT ... VALUES (...), (...)`` per 1,000 rows."""
    from notify.outbox.rows import _attempt_insert

    head, one = _attempt_insert()
    for start in range(0, len(rows), 1000):
        chunk = rows[start : start + 1000]
        cursor.execute(f"{head}{', '.join([one] * len(chunk))}", [v for r in chunk for v in r])


def measure(options: dict[str, Any]) -> dict[str, Any]:
    from django.core.management import call_command
    from django.db import connection, transaction
    from django.utils import timezone

    from bench.seed import seed
    from notify.models import Delivery, DeliveryAttempt
    from notify.outbox.rows import attempt_values

    call_command("migrate", verbosity=0)
    now = timezone.now()
    seed(2000, now)
    ids = list(Delivery.objects.values_list("id", flat=True)[: max(SIZES)])

    def rows(count: int) -> list[list[Any]]:
        return [
            attempt_values(
                DeliveryAttempt(
                    delivery_id=ids[i],
                    number=100 + i,
                    started_at=now,
                    finished_at=now,
                    provider="smtp",
                    outcome="sent",
                    sent={"message_id": f"<{i}@example.com>"},
                    response={"code": 250},
                )
            )
            for i in range(count)
        ]

    def timed(insert, prepared) -> float:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                started = time.perf_counter()
                insert(cursor, prepared)
                elapsed = time.perf_counter() - started
                raise _Rollback
        except _Rollback:
            return elapsed

    figures = {}
    for size in SIZES:
        prepared = rows(size)
        ways: dict[str, list[float]] = {"executemany": [], "multi_row": []}
        for n in range(max(20, options["rows"] // size)):
            pair = [("executemany", executemany), ("multi_row", multi_row)]
            for name, insert in pair if n % 2 else pair[::-1]:
                ways[name].append(timed(insert, prepared))
        figures[size] = {name: statistics.median(t) / size for name, t in ways.items()}
    return {"vendor": connection.vendor, "per_row": figures}


def main(argv: list[str]) -> int:
    from bench.observability import child, run_child

    if argv[:1] == ["--child"]:
        return child(argv, measure)

    parser = argparse.ArgumentParser(prog="python -m bench.attempt_insert")
    parser.add_argument("--database", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--rows", type=int, default=2000, help="rows inserted per way and size")
    args = parser.parse_args(argv)
    databases = ["sqlite", "postgres"] if args.database == "both" else [args.database]
    load = os.getloadavg()[0]
    print(f"load average {load:.2f} at the start; µs a row, median (multi-row / executemany)")
    for database in databases:
        result = run_child(database, {"rows": args.rows}, module="bench.attempt_insert")
        for size, ways in result["per_row"].items():
            a, b = ways["executemany"], ways["multi_row"]
            print(
                f"{database:8} {int(size):4d} rows: executemany {a * 1e6:7.1f}  "
                f"multi-row {b * 1e6:7.1f}  ratio {b / a:.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
