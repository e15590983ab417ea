"""The embedded default as a newcomer runs it: ``notify demo`` then ``notify run``.

Starts the real server process (uvicorn + worker pool + scheduler) on a free
port against a throwaway SQLite database and drives it over HTTP.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from channels import sandbox

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def manage(env, *args, **kwargs):
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        **kwargs,
    )


def get(url: str, headers: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, response.read()


@pytest.fixture
def embedded_server(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "NOTIFY_EMAIL_BACKEND"}}
    env.update(
        NOTIFY_VAR_DIR=str(tmp_path / "var"), DJANGO_SETTINGS_MODULE="notify.project.settings"
    )
    manage(env, "migrate", "--no-input")
    demo = manage(env, "notify", "demo")
    token = manage(env, "notify", "apikey", "create", "test").stdout.strip().splitlines()[-1]
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "notify", "run", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    try:
        while time.monotonic() - started < 60:
            try:
                if get(f"{base}/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("the server did not answer /healthz within 60 s")
        yield {
            "base": base,
            "token": token,
            "demo": demo.stdout,
            "sandbox": tmp_path / "var" / "sandbox",
        }
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail("the server did not stop within 15 s of SIGTERM")


def test_demo_prints_logins_and_server_delivers_an_api_event(embedded_server):
    assert "alice" in embedded_server["demo"] and "notify-alice" in embedded_server["demo"]
    base, token = embedded_server["base"], embedded_server["token"]
    body = json.dumps(
        {"type": "order.shipped", "payload": {"order_id": "Z-9", "customer_id": 2}}
    ).encode()
    request = urllib.request.Request(
        f"{base}/api/v1/events",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 202
        event_id = json.loads(response.read())["id"]
    deadline = time.monotonic() + 15
    statuses = {}
    while time.monotonic() < deadline:
        _, raw = get(f"{base}/api/v1/events/{event_id}", {"Authorization": f"Bearer {token}"})
        event = json.loads(raw)
        statuses = {
            d["channel"]: d["status"] for n in event["notifications"] for d in n["deliveries"]
        }
        if statuses and all(s == "sent" for s in statuses.values()):
            break
        time.sleep(0.2)
    assert statuses == {"email": "sent", "inapp": "sent"}
    # The sandbox outbox page is staff-only (issue 13); what it shows is on disk.
    _, page = get(f"{base}/dev/outbox/")  # the admin login page, after the redirect
    assert b"Z-9" not in page
    records = sandbox.read(limit=50, directory=embedded_server["sandbox"])
    assert "Z-9" in json.dumps(records, default=str)
