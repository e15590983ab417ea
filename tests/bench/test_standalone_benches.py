"""The stand-alone benches (``python -m bench.observability``,
``python -m bench.attempt_insert``) end to end on a throwaway SQLite file, at
tiny sizes: each starts its measuring child, which sets Django up on that
file, and prints its figures."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from bench.runner import PROJECT_DIR

pytestmark = pytest.mark.slow


def run(module: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "NOTIFY_VAR_DIR"}}
    completed = subprocess.run(
        [sys.executable, "-m", module, "--database", "sqlite", *args],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


def test_attempt_insert_prints_both_ways_at_every_size():
    out = run("bench.attempt_insert", "--rows", "20")
    rows = re.findall(r"^sqlite\s+(\d+) rows: executemany\s+[\d.]+\s+multi-row\s+[\d.]+", out, re.M)
    assert [int(n) for n in rows] == [1, 2, 8, 32, 128, 500], out


def test_observability_prints_every_chart():
    out = run("bench.observability", "--deliveries", "2000", "--runs", "1")
    assert "2,000 deliveries" in out and "**whole page**" in out, out
    assert "`/metrics` scrape:" in out, out
