"""The documented production settings (README, "Production checklist"):
`manage.py check --deploy` prints no warning with them, and each production
check fails start-up when its setting is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from notify.checks import (
    check_secret_key,
    check_site_url,
    check_webhook_credentials,
    production_reasons,
)

ROOT = Path(__file__).resolve().parents[1]

# README, "Production checklist": PostgreSQL (never reached by the checks), a
# real SMTP mailer, https everywhere.
PRODUCTION = {
    # A reachable server, as in production: the demo-password check (notify.E020)
    # queries it, and an unreachable one makes the connection pool log warnings.
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres",
    "DJANGO_SECRET_KEY": "x7Jq-2mZ_pV9rL4tN8wB1cK6yH3dF0sG5aE-uR7iO2nM9lQ4vT8jW1xC6bY3zP0e",
    "DJANGO_ALLOWED_HOSTS": "notify.example.com",
    "DJANGO_CSRF_TRUSTED_ORIGINS": "https://notify.example.com",
    "DJANGO_SECURE_HSTS_SECONDS": "31536000",
    "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "DJANGO_SECURE_HSTS_PRELOAD": "1",
    "DJANGO_SECURE_SSL_REDIRECT": "1",
    "DJANGO_SECURE_COOKIES": "1",
    "DJANGO_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
    "NOTIFY_SITE_URL": "https://notify.example.com",
    "NOTIFY_EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
    "NOTIFY_EMAIL_OPTIONS": '{"host": "smtp.example.com", "port": 587, "use_tls": true}',
    "NOTIFY_WEBHOOK_BASIC_AUTH": "notify:a-long-random-webhook-password",
    "NOTIFY_METRICS_TOKEN": "a-long-random-metrics-token",
    "DEFAULT_FROM_EMAIL": "notify@notify.example.com",
}


def manage(*args: str, **environ: str) -> subprocess.CompletedProcess:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("NOTIFY_", "DJANGO_", "TWILIO_", "SLACK_", "ANYMAIL_"))
        and k not in {"DATABASE_URL", "PYTEST_VERSION"}  # as outside a test run
    }
    env.update(DJANGO_SETTINGS_MODULE="notify.project.settings", **environ)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_the_documented_settings(tmp_path):
    done = manage("check", "--deploy", NOTIFY_VAR_DIR=str(tmp_path), **PRODUCTION)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "WARNING" not in output and "ERROR" not in output, output
    assert "System check identified no issues" in output, output


@pytest.mark.parametrize(
    ("unset", "check_id"),
    [
        ("DJANGO_SECRET_KEY", "notify.E009"),
        ("NOTIFY_SITE_URL", "notify.W021"),  # the default, http://127.0.0.1:8000
        ("DJANGO_SECURE_HSTS_SECONDS", "security.W004"),
        ("DJANGO_SECURE_COOKIES", "security.W012"),
    ],
)
def test_each_missing_setting_is_named(tmp_path, unset, check_id):
    environ = {k: v for k, v in PRODUCTION.items() if k != unset}
    done = manage("check", "--deploy", NOTIFY_VAR_DIR=str(tmp_path), **environ)
    assert check_id in done.stdout + done.stderr


def test_an_http_site_url_is_refused_in_production(settings):
    settings.EMBEDDED = False
    settings.DEBUG = False
    settings.NOTIFY = {**settings.NOTIFY, "SITE_URL": "http://notify.example.com"}
    [error] = check_site_url()
    assert error.id == "notify.E021" and "NOTIFY_SITE_URL" in error.hint
    settings.NOTIFY = {**settings.NOTIFY, "SITE_URL": "http://127.0.0.1:8000"}
    [warning] = check_site_url()
    assert warning.id == "notify.W021"
    settings.NOTIFY = {**settings.NOTIFY, "SITE_URL": "https://notify.example.com"}
    assert check_site_url() == []


def test_the_embedded_default_may_be_http(settings):
    settings.EMBEDDED = True
    settings.DEBUG = False
    settings.MAILERS = {"default": {"BACKEND": "channels.sandbox.SandboxEmailBackend"}}
    settings.NOTIFY = {**settings.NOTIFY, "SITE_URL": "http://127.0.0.1:8000"}
    assert production_reasons() == []
    assert check_site_url() == []


def test_an_esp_without_webhook_credentials_says_what_to_set(settings):
    settings.MAILERS = {
        "default": {"BACKEND": "anymail.backends.postmark.EmailBackend", "OPTIONS": {}}
    }
    settings.ANYMAIL = {}
    [error] = check_webhook_credentials()
    assert error.id == "notify.E022" and "NOTIFY_WEBHOOK_BASIC_AUTH" in error.hint
    settings.ANYMAIL = {"WEBHOOK_SECRET": ["notify:secret"]}
    assert check_webhook_credentials() == []


def test_twilio_without_its_auth_token_says_what_to_set(settings):
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {
            **settings.NOTIFY["CHANNELS"],
            "sms": {
                "BACKEND": "channels.sms.TwilioSmsChannel",
                "OPTIONS": {"ACCOUNT_SID": "AC1", "AUTH_TOKEN": "", "FROM": "+15005550006"},
            },
        },
    }
    errors = check_webhook_credentials()
    assert any(e.id == "notify.E022" and "TWILIO_AUTH_TOKEN" in e.hint for e in errors)


def test_a_key_made_up_for_one_process_is_refused_in_production(settings):
    settings.SECRET_KEY_IS_EPHEMERAL = True
    settings.EMBEDDED = False
    settings.DEBUG = False
    [error] = check_secret_key()
    assert error.id == "notify.E009" and "DJANGO_SECRET_KEY" in error.hint
    settings.DEBUG = True
    assert check_secret_key() == []


def test_password_validators_are_djangos_four(settings):
    names = [v["NAME"].rpartition(".")[2] for v in settings.AUTH_PASSWORD_VALIDATORS]
    assert names == [
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    ]


def test_the_readme_checklist_names_every_setting_used_here():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    checklist = readme.split("## Production checklist", 1)[1].split("\n## ", 1)[0]
    for name in PRODUCTION:
        if name in {"DATABASE_URL", "DEFAULT_FROM_EMAIL"} or name.startswith("NOTIFY_EMAIL_"):
            continue  # "Running it for real" and "Configuration" cover these
        assert f"`{name}`" in checklist, name
