"""Links follow the port: ``notify run --port N`` with no NOTIFY_SITE_URL sends
emails whose every link (footer unsubscribe, manage preferences,
``List-Unsubscribe``) points at port N."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.runtime.test_embedded_run import ROOT, free_port, get, manage

pytestmark = pytest.mark.slow

URL = re.compile(r"https?://[^\s<>\"')]+")


def test_every_link_in_a_sent_email_uses_the_port_in_use(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "NOTIFY_EMAIL_BACKEND", "NOTIFY_SITE_URL", "PORT"}
    }
    env.update(
        NOTIFY_VAR_DIR=str(tmp_path / "var"), DJANGO_SETTINGS_MODULE="notify.project.settings"
    )
    manage(env, "migrate", "--no-input")
    manage(env, "notify", "demo")
    token = manage(env, "notify", "apikey", "create", "t").stdout.strip().splitlines()[-1]
    port = free_port()
    assert port != 8000
    env["PORT"] = str(port)  # `make run PORT=…` and platforms that set PORT
    process = subprocess.Popen(
        [sys.executable, "manage.py", "notify", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    outbox = tmp_path / "var" / "sandbox" / "outbox.jsonl"
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
        request = urllib.request.Request(
            f"{base}/api/v1/events",
            data=json.dumps(
                {"type": "order.shipped", "payload": {"order_id": "P-1", "customer_id": 2}}
            ).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 202
        deadline = time.monotonic() + 20
        emails: list[dict] = []
        while not emails and time.monotonic() < deadline:
            if outbox.exists():
                entries = [json.loads(line) for line in outbox.read_text().splitlines() if line]
                emails = [e for e in entries if e["channel"] == "email" and "P-1" in e["text"]]
            time.sleep(0.2)
        assert emails, "no email was recorded within 20 s"
    finally:
        process.terminate()
        process.wait(15)

    for email in emails:
        links = URL.findall(email["text"]) + URL.findall(email["html"])
        links += URL.findall(email["headers"]["List-Unsubscribe"])
        assert any("/unsubscribe/" in link for link in links)
        assert any("/settings/notifications/" in link for link in links)
        assert links and all(link.startswith(f"{base}/") for link in links), links
