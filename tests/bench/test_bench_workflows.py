"""``notify bench --workload workflows`` at a tiny size: every run advanced by
the two runner processes, one step each, the baseline beside it."""

from __future__ import annotations

import io
import json

from bench import main


def test_workflows_workload_advances_every_run():
    out = io.StringIO()
    options = {"recipients": 200, "emails": 10, "runs": 1, "json": True, "database": "sqlite"}
    assert main({**options, "workload": ["workflows"]}, out) == 0
    workload = json.loads(out.getvalue())["workloads"]["workflows"]
    figures = workload["median"]
    assert figures["runs"] == figures["steps"] == figures["deliveries"] == 200
    assert figures["steps_per_second"] > 0
    assert workload["baseline"]["rows_per_second"] > 0
