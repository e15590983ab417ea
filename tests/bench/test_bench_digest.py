"""``notify bench --workload digest``: tiny size, one run, JSON out."""

from __future__ import annotations

import io
import json

from bench import main


def test_digest_workload_figures():
    out = io.StringIO()
    code = main(
        {"emails": 30, "runs": 1, "json": True, "database": "sqlite", "workload": ["digest"]}, out
    )
    assert code == 0
    digest = json.loads(out.getvalue())["workloads"]["digest"]
    median = digest["median"]
    assert (median["users"], median["digests"], median["items"]) == (30, 30, 150)
    assert median["digests_per_s"] > 0
    assert median["queries_per_digest"] > 0
    assert median["phases"]["build"] > 0 and median["phases"]["smtp"] > 0
    assert digest["baseline"]["emails"] == 30
    assert digest["ratio"] > 0
