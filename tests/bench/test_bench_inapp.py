"""``notify bench --workload inapp``: tiny size, one run, JSON out."""

from __future__ import annotations

import io
import json

from bench import main


def test_inapp_workload_figures():
    out = io.StringIO()
    code = main(
        {"emails": 120, "runs": 1, "json": True, "database": "sqlite", "workload": ["inapp"]}, out
    )
    assert code == 0
    median = json.loads(out.getvalue())["workloads"]["inapp"]["median"]
    assert median["items"] == median["written_in_bulk"] == median["written_by_worker"] == 120
    # the baseline: one statement per item; bulk: one UPDATE (+ SQLite's changes()) per 50
    assert median["per_item"]["queries"] == 120
    assert median["bulk"]["queries"] == 3 * 2
    assert median["bulk"]["ms_per_item"] > 0 and median["speedup"] > 0
