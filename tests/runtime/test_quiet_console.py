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

from notify import conf
from notify.logs import PlainFormatter, log_context
from notify.scheduling.scheduler import JOBS, _run_job
from tests.runtime.test_embedded_run import ROOT, free_port, get, manage

IDLE_SECONDS = 60
# Everything that repeats in an idle `notify run`, at its default period.
REPEATING = (
    "POLL_INTERVAL",
    "CONFIG_CHECK_INTERVAL",
    "SCHEDULER_STANDBY_INTERVAL",
    "RELAY_INTERVAL",
)


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
    # The whole console: the start-up block, then the one request.
    assert len(lines) < 20, text
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


# -- why 60 seconds stand for 20 minutes -----------------------------------------------


def test_the_idle_window_sees_every_loop_repeat_at_the_defaults():
    """The twin of the idle run above, at the real defaults: every loop of an
    idle process repeats at least twice within IDLE_SECONDS, so a line logged
    per repetition would have shown there; a scheduler job that repeats less
    often (every job: the tick is SCHEDULER_TICK, a minute) is proven silent
    below, by running it."""
    for key in REPEATING:
        assert 0 < conf.SETTINGS[key].default <= IDLE_SECONDS / 2, key
    assert conf.SETTINGS["SCHEDULER_TICK"].default == IDLE_SECONDS


@pytest.mark.django_db(transaction=True)  # the job closes its connections, as it does live
def test_every_scheduler_job_is_silent_when_there_is_nothing_to_do(caplog):
    """Run each job once, idle, the way the scheduler runs it: nothing at INFO
    or above (the hourly purge included, which the 60 s window does not repeat)."""
    with caplog.at_level(logging.DEBUG):
        for name, func, _ in JOBS:
            _run_job(name, func)
    loud = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert loud == [], [(r.name, r.getMessage(), r.exc_text) for r in loud]
