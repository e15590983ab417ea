"""``notify bench --workload api``: a tiny run against a real ``notify run``."""

from __future__ import annotations

import io
import json

import pytest

from bench import main
from bench.load import percentile

pytestmark = pytest.mark.slow


def test_api_workload_reports_latency_beside_the_healthz_baseline():
    out = io.StringIO()
    options = {"emails": 100, "runs": 1, "json": True, "database": "sqlite", "workload": ["api"]}
    assert main(options, out) == 0
    api = json.loads(out.getvalue())["workloads"]["api"]
    median = api["median"]
    assert median["requests"] == 100 and median["errors"] == 0
    assert median["statuses"] == {"202": 100}
    assert 0 < median["p50_ms"] <= median["p99_ms"] <= median["max_ms"]
    assert api["baseline"]["requests"] == 100 and api["baseline"]["p99_ms"] > 0
    assert api["ratio"] > 0
    assert median["cpu_ms"] > 0
    most = median["max"]
    for name in ("keep_alive", "healthz", "single"):
        assert most[name]["requests"] == 100 and most[name]["errors"] == 0
        assert most[name]["achieved_rate"] > 0
    assert most["keep_alive"]["statuses"] == {"202": 100}
    assert most["single"]["keep_alive"] is False
    assert most["batch"]["statuses"] == {"200": 2}  # 2 batches of 1,000 events
    assert most["batch"]["events_per_second"] > 0
    assert most["batch_vs_keep_alive"] > 0
    web = median["web"]  # the web process alone, on events due tomorrow
    assert web["keep_alive"]["statuses"] == {"202": 100}
    assert web["healthz"]["statuses"] == {"200": 100}
    assert web["batch"]["statuses"] == {"200": 2}
    assert web["cpu_ms"] > 0 and web["batch"]["events_per_second"] > 0


def test_percentile_is_the_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 0.50) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([7.0], 0.99) == 7.0
