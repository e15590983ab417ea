"""``notify bench``: tiny sizes, one run, JSON out; the registry and medians alone."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.conf import settings

from bench import add_arguments, main
from bench.registry import WORKLOAD_MODULES, get_workload
from bench.runner import median_of


def user_database_state() -> tuple[bool, float | None]:
    """Whether the configured SQLite file exists, and when it last changed."""
    path = Path(str(settings.DATABASES["default"]["NAME"]))
    return path.exists(), path.stat().st_mtime if path.exists() else None


@pytest.fixture(scope="module")
def report() -> dict:
    before = user_database_state()
    out = io.StringIO()
    options = {"recipients": 300, "emails": 50, "runs": 1, "json": True, "database": "sqlite"}
    # The other workloads have tests of their own; these two keep this file fast.
    code = main({**options, "workload": ["fanout", "delivery"]}, out)
    assert code == 0
    assert user_database_state() == before, "the bench touched the configured database"
    return json.loads(out.getvalue())


def test_report_names_the_machine(report):
    machine = report["machine"]
    assert machine["cpu_count"] >= 1
    assert machine["python"] and machine["django"] and machine["sqlite"]


def test_fanout_figures(report):
    fanout = report["workloads"]["fanout"]
    assert fanout["database"] == "sqlite"
    assert len(fanout["runs"]) == 1
    median = fanout["median"]
    assert median["recipients"] == 300
    assert median["notifications"] == 300
    assert median["deliveries"] == 600  # email + in-app for everyone, sent or skipped
    assert median["recipients_per_s"] > 0
    assert median["queries"] > 0
    assert median["heap_peak_mib"] > 0
    assert median["rss_peak_mib"] >= 0
    assert median["small"]["recipients"] == 30
    assert median["memory_ratio"]["heap"] > 0
    # Preferences were applied: some deliveries are skipped and some held for a digest.
    assert {"pending", "skipped", "digest"} <= set(median["decisions"])
    assert fanout["baseline"]["rows"] == 900
    assert fanout["baseline"]["rows_per_s"] > 0
    assert fanout["ratio"] > 0
    # The raw floor of the same rows with the indexes before issue 14, same run.
    assert fanout["baseline"]["before"]["recipients_per_s"] > 0
    assert median["ratio_to_floor_before"] > 0


def test_delivery_figures(report):
    delivery = report["workloads"]["delivery"]
    median = delivery["median"]
    assert median["emails"] == 50
    assert median["emails_per_s"] > 0
    assert median["phases"]["send"] > 0
    assert delivery["baseline"]["emails"] == 50
    assert delivery["baseline"]["emails_per_s"] > 0
    assert delivery["ratio"] > 0


def test_every_listed_workload_registers_itself():
    for name in WORKLOAD_MODULES:
        workload = get_workload(name)
        assert workload.name == name
        assert workload.figures


def test_median_of_runs_recurses_and_keeps_ints():
    runs = [
        {"n": 1, "t": 3.0, "nested": {"x": 10}, "label": "a", "maybe": None},
        {"n": 3, "t": 1.0, "nested": {"x": 30}, "label": "b", "maybe": 2.0},
        {"n": 2, "t": 2.0, "nested": {"x": 20}, "label": "c", "maybe": 4.0},
    ]
    assert median_of(runs) == {"n": 2, "t": 2.0, "nested": {"x": 20}, "label": "a", "maybe": 3.0}


def test_options_are_checked():
    out = io.StringIO()
    assert main({"recipients": 0}, out) == 1
    assert main({"workload": ["nope"]}, out) == 1
    assert out.getvalue() == ""


def test_add_arguments_defaults():
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    options = vars(parser.parse_args([]))
    assert options["recipients"] == 100_000
    assert options["emails"] == 2_000
    assert options["runs"] == 3
    assert options["database"] == "sqlite"
    assert not options["json"]


def test_a_failed_workload_is_reported_not_hidden():
    from bench.report import render

    document = {
        "machine": {
            "cpu_count": 2,
            "cpu_model": "test",
            "memory_mib": None,
            "python": "3.12",
            "django": "6.1",
            "platform": "test",
        },
        "code": None,
        "options": {"recipients": 10, "emails": 1, "runs": 1, "database": "sqlite"},
        "workloads": {
            "fanout": {
                "workload": "fanout",
                "database": "sqlite",
                "database_version": "SQLite 3",
                "error": "Traceback (most recent call last):\nValueError: boom",
            }
        },
    }
    text = render(document)
    assert "FAILED" in text
    assert "ValueError: boom" in text
