"""The runner: throwaway databases, one measuring process each, medians, the report.

For each database asked for, the runner makes a fresh one (an SQLite file in a
temporary directory, or a PostgreSQL database ``notify_bench_<pid>`` dropped
afterwards), starts ``bench.child`` with ``DATABASE_URL`` pointing at it,
and reads back the raw figures of every run. The user's own database is never
opened: the child refuses to run unless its database is the one made for it.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import django

from bench.registry import WORKLOAD_MODULES, get_workload

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/postgres"
DEFAULTS: dict[str, Any] = {
    "json": False,
    "recipients": 100_000,
    "emails": 2_000,
    "runs": 3,
    "database": "sqlite",
    "workload": None,  # None: every registered workload
    "profile": None,
}


class BenchError(Exception):
    """A benchmark could not run; the message says why."""


def normalise(options: dict[str, Any]) -> dict[str, Any]:
    merged = {k: options.get(k) if options.get(k) is not None else v for k, v in DEFAULTS.items()}
    for key in ("recipients", "emails", "runs"):
        if int(merged[key]) < 1:
            raise BenchError(f"--{key} must be at least 1 (got {merged[key]})")
        merged[key] = int(merged[key])
    if merged["database"] not in ("sqlite", "postgres", "both"):
        raise BenchError(
            f"--database must be sqlite, postgres or both (got {merged['database']!r})"
        )
    names = merged["workload"] or list(WORKLOAD_MODULES)
    unknown = [n for n in names if n not in WORKLOAD_MODULES]
    if unknown:
        raise BenchError(
            f"unknown workload {', '.join(unknown)}; choose from {', '.join(WORKLOAD_MODULES)}"
        )
    merged["workload"] = [n for n in WORKLOAD_MODULES if n in names]
    return merged


# -- throwaway databases ----------------------------------------------------------------


@contextlib.contextmanager
def throwaway_sqlite(var_dir: Path) -> Iterator[tuple[str, str]]:
    path = var_dir / "bench.sqlite3"
    yield f"sqlite:///{path}", str(path)


def postgres_server_url() -> str:
    explicit = os.environ.get("NOTIFY_BENCH_POSTGRES_URL")
    if explicit:
        return explicit
    current = os.environ.get("DATABASE_URL", "")
    if current.startswith(("postgres://", "postgresql://")):
        return current
    return DEFAULT_POSTGRES_URL


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


@contextlib.contextmanager
def throwaway_postgres(var_dir: Path) -> Iterator[tuple[str, str]]:
    import psycopg

    server = postgres_server_url()
    name = f"notify_bench_{os.getpid()}"
    admin_url = with_database(server, "postgres").replace("postgresql://", "postgres://", 1)
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        raise BenchError(
            f"cannot reach PostgreSQL at {urlsplit(server).hostname}:{urlsplit(server).port}: "
            f"{exc}. Set NOTIFY_BENCH_POSTGRES_URL (or DATABASE_URL) to a server where this "
            "user may create databases."
        ) from exc
    with admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield with_database(server, name), name
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


THROWAWAY = {"sqlite": throwaway_sqlite, "postgres": throwaway_postgres}


def measure_database(database: str, options: dict[str, Any]) -> dict[str, Any]:
    """Make a throwaway database, run the measuring process on it, drop it."""
    var_dir = Path(tempfile.mkdtemp(prefix=f"notify-bench-{database}-"))
    try:
        with THROWAWAY[database](var_dir) as (url, expected_name):
            child_options = {
                "database": database,
                "expected_name": expected_name,
                "recipients": options["recipients"],
                "emails": options["emails"],
                "runs": options["runs"],
                "workloads": options["workload"],
                "profile": options["profile"],
            }
            options_path, result_path = var_dir / "options.json", var_dir / "result.json"
            options_path.write_text(json.dumps(child_options))
            env = {
                **os.environ,
                "DATABASE_URL": url,
                "NOTIFY_VAR_DIR": str(var_dir),
                # A throwaway database signs with a throwaway key (on PostgreSQL
                # the settings make none up: notify.E009).
                "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY")
                or secrets.token_urlsafe(50),
                "NOTIFY_LOG_LEVEL": "WARNING",
                "NOTIFY_EAGER": "0",
                "DJANGO_SETTINGS_MODULE": os.environ.get(
                    "DJANGO_SETTINGS_MODULE", "notify.project.settings"
                ),
                "PYTHONPATH": os.pathsep.join(
                    p for p in (str(PROJECT_DIR), os.environ.get("PYTHONPATH")) if p
                ),
            }
            completed = subprocess.run(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "bench.child", str(options_path), str(result_path)],
                cwd=PROJECT_DIR,
                env=env,
                check=False,
            )
            if completed.returncode != 0 or not result_path.exists():
                raise BenchError(
                    f"the {database} measuring process failed (exit {completed.returncode}); "
                    "its traceback is above"
                )
            return json.loads(result_path.read_text())
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)


# -- aggregation ------------------------------------------------------------------------


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def median_of(values: list[Any]) -> Any:
    """The median of every number, recursively through dicts; else the first value."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    if all(is_number(v) for v in present):
        median = statistics.median(present)
        integral = all(isinstance(v, int) for v in present) and median == int(median)
        return int(median) if integral else median
    if all(isinstance(v, dict) for v in present):
        keys = dict.fromkeys(k for v in present for k in v)
        return {k: median_of([v.get(k) for v in present]) for k in keys}
    return present[0]


def summarise(name: str, database: str, version: str, measured: dict[str, Any]) -> dict[str, Any]:
    workload = get_workload(name)
    entry = {
        "workload": name,
        "title": workload.title,
        "database": database,
        "database_version": version,
    }
    if "error" in measured:
        return {**entry, "error": measured["error"]}
    median = median_of(measured["runs"])
    return {
        **entry,
        "setup_seconds": measured["setup_seconds"],
        "median": {k: v for k, v in median.items() if k not in ("baseline", "ratio")},
        "baseline": median.get("baseline"),
        "ratio": median.get("ratio"),
        "runs": measured["runs"],
    }


def machine_info() -> dict[str, Any]:
    import sqlite3

    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_model": platform.processor() or platform.machine(),
        "memory_mib": None,
        "python": platform.python_version(),
        "django": django.get_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        # Figures are only comparable on a quiet machine: say how busy it was.
        "load_average": [round(x, 2) for x in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.partition(":")[2].strip()
                break
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_mib"] = int(line.split()[1]) // 1024
                break
    return info


def code_version() -> dict[str, Any] | None:
    """The commit measured, and whether the working tree differed from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607 - git from PATH, read-only
            cwd=PROJECT_DIR,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],  # noqa: S607
            cwd=PROJECT_DIR,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": commit, "modified": bool(changes)}


def run_benchmarks(options: dict[str, Any]) -> dict[str, Any]:
    databases = ["sqlite", "postgres"] if options["database"] == "both" else [options["database"]]
    document: dict[str, Any] = {
        "machine": machine_info(),
        "code": code_version(),
        "options": {k: options[k] for k in ("recipients", "emails", "runs", "database")},
        "workloads": {},
    }
    for database in databases:
        measured = measure_database(database, options)
        version = measured["database_version"]
        for name, raw in measured["workloads"].items():
            key = name if len(databases) == 1 else f"{name}/{database}"
            document["workloads"][key] = summarise(name, database, version, raw)
    return document
