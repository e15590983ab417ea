"""Logs for people: an idle ``notify run`` is quiet (no per-tick scheduler
lines), each request is one access-log line, and a send's lines keep its ids."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

import pytest

from notify.logs import PlainFormatter, log_context
from tests.runtime.test_embedded_run import ROOT, free_port, get, manage

IDLE_SECONDS = 60


@pytest.mark.slow
def test_idle_run_prints_almost_nothing(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "NOTIFY_LOG_LEVEL"}}
    env.update(
        NOTIFY_VAR_DIR=str(tmp_path / "var"),
        DJANGO_SETTINGS_MODULE="notify.project.settings",
        PYTHONUNBUFFERED="1",
    )
    manage(env, "migrate", "--no-input")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "notify", "run", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(
        target=lambda: lines.extend((time.monotonic(), line) for line in process.stdout),
        daemon=True,
    )
    reader.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if get(f"{base}/healthz")[0] == 200:
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("the server did not answer /healthz within 60 s")
                time.sleep(0.2)
        time.sleep(1)
        ready = time.monotonic()
        get(f"{base}/")  # one request, one line
        time.sleep(IDLE_SECONDS)
        stopping = time.monotonic()
    finally:
        process.terminate()
        process.wait(15)
        reader.join(5)
    text = "".join(line for _, line in lines)
    idle = [line for at, line in lines if ready < at < stopping]
    assert "Running job" not in text and "executed successfully" not in text
    # 20 minutes idle must stay under 20 lines: so no line may recur per tick.
    assert len(idle) == 1, idle
    assert sum('"GET / HTTP/1.1" 200' in line for line in idle) == 1, idle


def test_plain_lines_of_a_send_carry_its_ids():
    formatter = PlainFormatter()
    with log_context(event_id=12, delivery_id=40, channel="email"):
        record = logging.getLogger("notify.delivery").makeRecord(
            "notify.delivery", logging.INFO, __file__, 1, "sent", (), None
        )
        for key, value in {"event_id": 12, "delivery_id": 40, "channel": "email"}.items():
            record.__dict__.setdefault(key, value)
    line = formatter.format(record)
    assert line.endswith("INFO notify.delivery sent event_id=12 delivery_id=40 channel=email")
