"""``manage.py notify bench``: how fast is notify, against the plainest way to do the same.

The command registers the options with ``add_arguments(parser)`` and calls
``main(options, stdout)``. Workloads (``registry.WORKLOAD_MODULES``) run in a
separate process on a throwaway database, ``--runs`` times each; the report
gives every figure's median, the individual runs, a baseline measured in the
same run and the ratio to it. See BENCHMARKS.md for the figures and what they
mean.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from bench.registry import WORKLOAD_MODULES


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="Print one JSON document.")
    parser.add_argument(
        "--recipients",
        type=int,
        default=100_000,
        help="Recipients of the fan-out event (default 100,000; N/10 is measured too).",
    )
    parser.add_argument(
        "--emails",
        type=int,
        default=2_000,
        help="Emails (and HTTP deliveries) sent by the delivery workload, and requests "
        "sent by the api workload (default 2,000).",
    )
    parser.add_argument("--runs", type=int, default=3, help="Runs per workload (median reported).")
    parser.add_argument(
        "--database",
        choices=["sqlite", "postgres", "both"],
        default="sqlite",
        help="A fresh SQLite file, a fresh PostgreSQL database on NOTIFY_BENCH_POSTGRES_URL "
        "or DATABASE_URL's server (default postgres://postgres@127.0.0.1:5432), or both.",
    )
    parser.add_argument(
        "--workload",
        action="append",
        choices=list(WORKLOAD_MODULES),
        help="Run only this workload (repeatable; default: all).",
    )
    parser.add_argument(
        "--profile",
        metavar="PREFIX",
        help="Also profile one fan-out with cProfile (untimed) into PREFIX.<database>.fanout.prof.",
    )


def main(options: dict[str, Any], stdout: TextIO) -> int:
    """Run the benchmarks; write the report (or JSON) to ``stdout``; return an exit code."""
    from bench.report import render
    from bench.runner import BenchError, normalise, run_benchmarks

    try:
        options = normalise(options)
        document = run_benchmarks(options)
    except BenchError as exc:
        print(f"notify bench: {exc}", file=sys.stderr)
        return 1
    if options["json"]:
        stdout.write(json.dumps(document, indent=2, default=str) + "\n")
    else:
        stdout.write(render(document))
    failed = [key for key, entry in document["workloads"].items() if "error" in entry]
    if failed:
        print(f"notify bench: {', '.join(failed)} failed; tracebacks above", file=sys.stderr)
        return 1
    return 0
