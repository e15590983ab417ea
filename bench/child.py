"""The measuring process: ``python -m bench.child OPTIONS.json RESULT.json``.

The runner starts it with ``DATABASE_URL`` and ``NOTIFY_VAR_DIR`` pointing at a
throwaway database, so nothing here can reach the user's own data. It migrates,
then for each workload: ``setup`` once, ``run`` ``runs`` times, ``teardown``;
and writes every run's raw figures as JSON (or, for a workload that raised,
its traceback). Aggregation is the runner's job.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any


def database_version() -> str:
    from django.db import connection

    if connection.vendor == "sqlite":
        import sqlite3

        return f"SQLite {sqlite3.sqlite_version}"
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        return f"PostgreSQL {cursor.fetchone()[0]}"


def check_throwaway(expected: str) -> None:
    """Refuse to touch any database but the one the runner made for us."""
    from django.conf import settings

    actual = str(settings.DATABASES["default"]["NAME"])
    if actual != expected:
        raise SystemExit(
            f"notify bench: the settings point at database {actual!r}, not the throwaway "
            f"{expected!r}; does DJANGO_SETTINGS_MODULE read DATABASE_URL?"
        )


def measure(options: dict[str, Any]) -> dict[str, Any]:
    from django.core.management import call_command

    from bench.registry import Context
    from notify.runtime.heap import freeze_startup_heap

    ctx = Context(
        database=options["database"],
        recipients=options["recipients"],
        emails=options["emails"],
        runs=options["runs"],
        profile=options.get("profile"),
    )
    check_throwaway(options["expected_name"])
    started = time.perf_counter()
    call_command("migrate", verbosity=0, interactive=False)
    ctx.say(f"migrated a fresh database in {time.perf_counter() - started:.1f} s")
    # What every process that runs the pipeline does once it is set up
    # (``notify worker``, ``run``, ``scheduler``, each Celery worker process):
    # the workloads measure the code as those processes run it.
    freeze_startup_heap()
    result: dict[str, Any] = {"database_version": database_version(), "workloads": {}}
    for name in options["workloads"]:
        try:
            result["workloads"][name] = measure_workload(name, ctx)
        except Exception:
            # One broken workload must not cost the figures of the others.
            error = traceback.format_exc()
            print(error, file=sys.stderr)
            ctx.say(f"{name}: FAILED, carrying on with the other workloads")
            result["workloads"][name] = {"error": error}
    return result


def measure_workload(name: str, ctx: Any) -> dict[str, Any]:
    from bench.registry import get_workload

    workload = get_workload(name)
    setup_started = time.perf_counter()
    state = workload.setup(ctx)
    setup_seconds = time.perf_counter() - setup_started
    runs = []
    try:
        for number in range(1, ctx.runs + 1):
            ctx.run_number = number
            runs.append(workload.run(ctx, state))
    finally:
        workload.teardown(state)
    return {"setup_seconds": setup_seconds, "runs": runs}


def main(argv: list[str]) -> int:
    options_path, result_path = argv
    with open(options_path) as handle:
        options = json.load(handle)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "notify.project.settings")
    import django

    django.setup()
    result = measure(options)
    with open(result_path, "w") as handle:
        json.dump(result, handle, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
