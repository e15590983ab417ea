"""Settings from the environment: an empty DATABASE_URL is "not set" (issue 12)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_an_empty_database_url_falls_back_to_the_embedded_sqlite(tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": "",
        "NOTIFY_VAR_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "notify.project.settings",
    }
    code = "from django.conf import settings; print(settings.DATABASES['default']['ENGINE'])"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "notify.project.sqlite3"
