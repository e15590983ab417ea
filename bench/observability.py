"""How fast the dashboard and /metrics are on a large outbox.

``python -m bench.observability`` makes a throwaway database (an SQLite
file in a temporary directory, or a PostgreSQL database dropped afterwards:
the same helpers as ``manage.py notify bench``), seeds it with a million
deliveries over 30 days (``bench.seed``), and times, for the
last 24 hours, 7 days and 30 days:

* each dashboard chart on its own (a fresh ``Dashboard`` per run, so a chart
  pays for every query it needs);
* the whole page, through Django's test client as a superuser;
* a ``/metrics`` scrape and a ``/readyz`` check (no period: whole tables).

Every figure is the median of ``--runs`` runs (the slowest is printed too).
``--json`` prints the raw figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PANELS = (
    "events",
    "outcomes",
    "channels",
    "skipped",
    "latency",
    "retries",
    "failures",
    "scheduled",
)
PERIODS = ("24h", "7d", "30d")


def timed(func: Any, runs: int) -> dict[str, float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return {"median": statistics.median(times), "max": max(times)}


def measure(options: dict[str, Any]) -> dict[str, Any]:
    """In the child process, on the throwaway database."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment
    from django.utils import timezone

    from bench.child import check_throwaway, database_version
    from bench.seed import seed
    from notify.admin.dashboard import Chart, Dashboard
    from notify.observability.health import readiness
    from notify.observability.metrics import render
    from notify.observability.queries import Period

    check_throwaway(options["expected_name"])
    call_command("migrate", verbosity=0, interactive=False)
    now = timezone.now()
    started = time.perf_counter()
    counts = seed(options["deliveries"], now)
    seeded = time.perf_counter() - started
    print(
        f"[dashboard bench {connection.vendor}] seeded {counts} in {seeded:.0f} s", file=sys.stderr
    )
    setup_test_environment()
    user = get_user_model().objects.create_superuser("bench", "bench@example.com", "bench")
    client = Client()
    client.force_login(user)
    runs = options["runs"]
    result: dict[str, Any] = {
        "database_version": database_version(),
        "rows": counts,
        "seed_seconds": seeded,
        "periods": {},
    }
    # Warm up (URL conf, admin, templates, the database's caches): untimed.
    Dashboard(Period.last("30d", now)).charts()
    client.get("/admin/notify/delivery/dashboard/?period=30d")
    for key in PERIODS:
        period = Period.last(key, now)
        figures: dict[str, Any] = {}
        for panel in PANELS:
            figures[panel] = timed(
                lambda p=panel, period=period: getattr(Dashboard(period), p)(Chart(p, p)), runs
            )

        def page(key: str = key) -> None:
            response = client.get(f"/admin/notify/delivery/dashboard/?period={key}")
            assert response.status_code == 200, response.status_code

        figures["page"] = timed(page, runs)
        result["periods"][key] = figures
    result["metrics"] = timed(render, runs)
    result["readyz"] = timed(readiness, runs)
    return result


# -- the parent: throwaway databases, one child each ------------------------------------------


def run_child(
    database: str, options: dict[str, Any], module: str = "bench.observability"
) -> dict[str, Any]:
    """``python -m <module> --child`` on a throwaway ``database``: what its
    ``measure(options)`` returned."""
    from bench.runner import PROJECT_DIR, THROWAWAY, BenchError

    var_dir = Path(tempfile.mkdtemp(prefix=f"notify-{module.split('.')[-1]}-bench-{database}-"))
    try:
        with THROWAWAY[database](var_dir) as (url, expected_name):
            options_path, result_path = var_dir / "options.json", var_dir / "result.json"
            options_path.write_text(json.dumps({**options, "expected_name": expected_name}))
            env = {
                **os.environ,
                "DATABASE_URL": url,
                "NOTIFY_VAR_DIR": str(var_dir),
                # A throwaway database signs with a throwaway key (on PostgreSQL
                # the settings make none up: notify.E009).
                "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY")
                or secrets.token_urlsafe(50),
                "NOTIFY_LOG_LEVEL": "WARNING",
                "DJANGO_SETTINGS_MODULE": os.environ.get(
                    "DJANGO_SETTINGS_MODULE", "notify.project.settings"
                ),
                "PYTHONPATH": os.pathsep.join(
                    p for p in (str(PROJECT_DIR), os.environ.get("PYTHONPATH")) if p
                ),
            }
            completed = subprocess.run(  # noqa: S603 - our own interpreter and module
                [
                    sys.executable,
                    "-m",
                    module,
                    "--child",
                    str(options_path),
                    str(result_path),
                ],
                cwd=PROJECT_DIR,
                env=env,
                check=False,
            )
            if completed.returncode != 0 or not result_path.exists():
                raise BenchError(f"the {database} measuring process failed")
            return json.loads(result_path.read_text())
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)


def report(results: dict[str, dict[str, Any]]) -> str:
    lines = []
    for result in results.values():
        rows = result["rows"]
        lines += [
            f"### {result['database_version']} — {rows['notify_delivery']:,} deliveries, "
            f"{rows['notify_notification']:,} notifications, {rows['notify_event']:,} events, "
            f"{rows['notify_deliveryattempt']:,} attempts, {rows['notify_digest']:,} digests "
            f"(seeded in {result['seed_seconds']:.0f} s)",
            "",
            "| chart (median / slowest, ms) | " + " | ".join(f"last {p}" for p in PERIODS) + " |",
            "| --- | " + " | ".join("---:" for _ in PERIODS) + " |",
        ]
        for name in (*PANELS, "page"):
            cells = []
            for period in PERIODS:
                figure = result["periods"][period][name]
                cells.append(f"{figure['median'] * 1000:.0f} / {figure['max'] * 1000:.0f}")
            label = "**whole page**" if name == "page" else name
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines += [
            "",
            f"`/metrics` scrape: {result['metrics']['median'] * 1000:.0f} ms "
            f"(slowest {result['metrics']['max'] * 1000:.0f}); `/readyz`: "
            f"{result['readyz']['median'] * 1000:.1f} ms.",
            "",
        ]
    return "\n".join(lines)


def child(argv: list[str], measure: Any) -> int:
    """The ``--child`` side of ``run_child``: Django set up on the throwaway
    database, ``measure(options)`` written where the parent reads it."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "notify.project.settings")
    import django

    django.setup()
    options = json.loads(Path(argv[1]).read_text())
    Path(argv[2]).write_text(json.dumps(measure(options)))
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        return child(argv, measure)
    parser = argparse.ArgumentParser(prog="python -m bench.observability")
    parser.add_argument("--deliveries", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    databases = ["sqlite", "postgres"] if args.database == "both" else [args.database]
    options = {"deliveries": args.deliveries, "runs": args.runs}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    results = {database: run_child(database, options) for database in databases}
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"{platform.node()}: {os.cpu_count()} CPUs, load average {load:.1f} at the start\n")
        print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
