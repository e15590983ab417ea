"""notify.project.settings: importing it touches no file; it feeds environment
variables into NOTIFY and leaves out what is unset (notify.conf has the defaults);
the embedded default's secret key is written by `notify run`, not on import."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from django.conf import settings as django_settings

from notify import conf
from notify.management.commands.notify import ensure_secret_key_file, prepare_var_dir

ROOT = Path(__file__).resolve().parents[1]

PRINT = """
import json, notify.project.settings as s
print(json.dumps({
    "NOTIFY": s.NOTIFY, "SECRET_KEY": s.SECRET_KEY,
    "SECRET_KEY_IS_EPHEMERAL": s.SECRET_KEY_IS_EPHEMERAL, "EMBEDDED": s.EMBEDDED,
}))
"""


def import_settings(var_dir: Path, **environ: str) -> dict:
    """Import the settings module in a fresh interpreter; what it defined."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("NOTIFY_", "DJANGO_", "TWILIO_", "SLACK_", "FCM_", "APNS_"))
        and k not in {"DATABASE_URL", "PYTEST_VERSION"}  # as outside a test run
    }
    env.update(NOTIFY_VAR_DIR=str(var_dir), DJANGO_SETTINGS_MODULE="notify.project.settings")
    env.update(environ)
    completed = subprocess.run(
        [sys.executable, "-c", PRINT], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(completed.stdout)


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_importing_the_settings_creates_no_file_or_folder(tmp_path):
    var_dir = tmp_path / "var"
    defined = import_settings(var_dir)
    assert tree(tmp_path) == []
    # The embedded default signs with a key of its own until `notify run` writes one.
    assert defined["EMBEDDED"] and defined["SECRET_KEY_IS_EPHEMERAL"]
    assert defined["SECRET_KEY"]


def test_the_settings_read_the_key_that_notify_run_wrote(tmp_path):
    var_dir = tmp_path / "var"
    key = ensure_secret_key_file(var_dir / "secret_key")
    defined = import_settings(var_dir)
    assert defined["SECRET_KEY"] == key
    assert not defined["SECRET_KEY_IS_EPHEMERAL"]
    assert tree(tmp_path) == ["var", "var/secret_key"]


def test_djangos_secret_key_variable_wins(tmp_path):
    ensure_secret_key_file(tmp_path / "secret_key")
    defined = import_settings(tmp_path, DJANGO_SECRET_KEY="from-the-environment")
    assert defined["SECRET_KEY"] == "from-the-environment"


def test_outside_the_embedded_default_no_key_is_made_up(tmp_path):
    production = import_settings(tmp_path, DATABASE_URL="postgres://nobody@127.0.0.1:1/none")
    assert production["EMBEDDED"] is False
    assert production["SECRET_KEY"] == ""  # refused at start-up: notify.E009
    assert not production["SECRET_KEY_IS_EPHEMERAL"]
    debug = import_settings(
        tmp_path, DATABASE_URL="postgres://nobody@127.0.0.1:1/none", DJANGO_DEBUG="1"
    )
    assert debug["SECRET_KEY"] and debug["SECRET_KEY_IS_EPHEMERAL"]
    assert tree(tmp_path) == []


def test_unset_variables_leave_their_keys_to_notify_conf(tmp_path):
    notify = import_settings(tmp_path)["NOTIFY"]
    assert set(notify) == {
        "CHANNELS",
        "SANDBOX",
        "SANDBOX_DIR",
        "TEMPLATE_DIRS",
        "SCHEDULER_LOCK_FILE",
    }
    assert set(notify) <= set(conf.SETTINGS)


def test_set_variables_are_fed_into_notify(tmp_path):
    notify = import_settings(
        tmp_path,
        NOTIFY_SITE_URL="https://notify.example",
        NOTIFY_WORKER_THREADS="5",
        NOTIFY_EAGER="yes",
        NOTIFY_BROKER_URL="",
        NOTIFY_METRICS_ALLOWED_IPS="10.0.0.0/8, 127.0.0.1",
        NOTIFY_READINESS_MAX_OUTBOX_LAG="60",
        TWILIO_ACCOUNT_SID="AC1",
        TWILIO_AUTH_TOKEN="token",
        TWILIO_FROM="+15550001111",
    )["NOTIFY"]
    assert notify["SITE_URL"] == "https://notify.example"
    assert notify["WORKER_THREADS"] == 5
    assert notify["EAGER"] is True
    assert notify["BROKER_URL"] is None
    assert notify["METRICS_ALLOWED_IPS"] == ["10.0.0.0/8", "127.0.0.1"]
    assert notify["READINESS_MAX_OUTBOX_LAG"] == 60.0
    sms = notify["CHANNELS"]["sms"]["OPTIONS"]
    assert sms["STATUS_CALLBACK"] == "https://notify.example/webhooks/twilio/status"
    assert "MAX_SEGMENTS" not in sms and "TIMEOUT" not in sms  # the channel's defaults


def test_the_key_file_is_written_once_and_readable_by_its_owner_only(tmp_path):
    path = tmp_path / "var" / "secret_key"
    key = ensure_secret_key_file(path)
    assert len(key) >= 50
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_secret_key_file(path) == key
    assert tree(tmp_path) == ["var", "var/secret_key"]


def test_notify_run_signs_with_the_key_it_wrote(settings, tmp_path):
    settings.SECRET_KEY_FILE = tmp_path / "var" / "secret_key"
    settings.SECRET_KEY_IS_EPHEMERAL = True
    settings.STATIC_ROOT = tmp_path / "var" / "static"
    prepare_var_dir()
    assert (tmp_path / "var" / "secret_key").read_text() == django_settings.SECRET_KEY
    assert (tmp_path / "var" / "static").is_dir()


def test_notify_run_leaves_a_configured_key_alone(settings, tmp_path):
    settings.SECRET_KEY = "configured"
    settings.SECRET_KEY_FILE = tmp_path / "secret_key"
    settings.SECRET_KEY_IS_EPHEMERAL = False
    settings.STATIC_ROOT = None
    prepare_var_dir()
    assert django_settings.SECRET_KEY == "configured"
    assert tree(tmp_path) == []


def test_every_channel_and_the_worker_knobs_come_from_the_environment(tmp_path):
    notify = import_settings(
        tmp_path,
        TWILIO_ACCOUNT_SID="AC1",
        TWILIO_AUTH_TOKEN="token",
        TWILIO_MESSAGING_SERVICE_SID="MG1",
        TWILIO_WHATSAPP_FROM="+15550002222",
        TWILIO_WHATSAPP_CONTENT_SID="HX" + "0" * 32,
        SLACK_BOT_TOKEN="xoxb-1",
        SLACK_TIMEOUT="4",
        NOTIFY_SLACK_WEBHOOKS="1",
        NOTIFY_TEAMS_WEBHOOKS="1",
        NOTIFY_DISCORD_WEBHOOKS="1",
        NOTIFY_APPRISE="1",
        NOTIFY_APPRISE_SCHEMES="ntfys, tgram",
        NOTIFY_WECOM_ROBOTS="1",
        NOTIFY_DINGTALK_ROBOTS="1",
        NOTIFY_FEISHU_ROBOTS="1",
        NOTIFY_WEBPUSH_VAPID_PRIVATE_KEY_FILE="/run/secrets/vapid.pem",
        NOTIFY_WEBPUSH_VAPID_SUBJECT="mailto:ops@example.com",
        FCM_CREDENTIALS_FILE="/run/secrets/firebase.json",
        APNS_KEY_FILE="/run/secrets/AuthKey.p8",
        APNS_KEY_ID="ABC123DEFG",
        APNS_TEAM_ID="DEF123GHIJ",
        APNS_TOPIC="com.example.app",
        APNS_BASE_URL="https://api.sandbox.push.apple.com",
        NOTIFY_WEBHOOK_SECRET="s3cret",
        NOTIFY_WEBHOOK_TIMEOUT="3",
        NOTIFY_WEBHOOK_ALLOWED_HOSTS="hooks.example.com,.example.org",
        NOTIFY_WORKER_BATCH_SIZE="20",
        NOTIFY_CLAIM_TTL="300",
        NOTIFY_RETRY_BASE_DELAY="30",
        NOTIFY_MAX_ATTEMPTS="4",
    )["NOTIFY"]
    channels = notify["CHANNELS"]
    assert channels["sms"]["OPTIONS"]["MESSAGING_SERVICE_SID"] == "MG1"
    whatsapp = channels["whatsapp"]
    assert whatsapp["BACKEND"] == "channels.whatsapp.TwilioWhatsAppChannel"
    assert whatsapp["OPTIONS"]["FROM"] == "+15550002222"
    assert whatsapp["OPTIONS"]["ACCOUNT_SID"] == "AC1"
    assert channels["chat"]["OPTIONS"] == {"BOT_TOKEN": "xoxb-1", "TIMEOUT": 4.0}
    for alias in ("slack_webhook", "teams", "discord", "wecom", "dingtalk", "feishu"):
        assert channels[alias]["OPTIONS"] == {"TIMEOUT": 3.0}  # providers' own hosts
    assert channels["dingtalk"]["BACKEND"] == "channels.robots.DingTalkRobotChannel"
    assert channels["browser"] == {
        "BACKEND": "channels.webpush.WebPushChannel",
        "OPTIONS": {
            "VAPID_PRIVATE_KEY_FILE": "/run/secrets/vapid.pem",
            "VAPID_SUBJECT": "mailto:ops@example.com",
        },
    }
    assert channels["fcm"]["OPTIONS"] == {"CREDENTIALS_FILE": "/run/secrets/firebase.json"}
    assert channels["apns"]["OPTIONS"] == {
        "KEY_FILE": "/run/secrets/AuthKey.p8",
        "KEY_ID": "ABC123DEFG",
        "TEAM_ID": "DEF123GHIJ",
        "TOPIC": "com.example.app",
        "BASE_URL": "https://api.sandbox.push.apple.com",
    }
    hosts = ["hooks.example.com", ".example.org"]
    assert channels["apprise"]["OPTIONS"] == {
        "TIMEOUT": 3.0,
        "ALLOWED_HOSTS": hosts,
        "SCHEMES": ["ntfys", "tgram"],
    }
    assert channels["webhook"]["OPTIONS"] == {
        "SECRET": "s3cret",
        "TIMEOUT": 3.0,
        "ALLOWED_HOSTS": hosts,
    }
    assert (notify["WORKER_BATCH_SIZE"], notify["CLAIM_TTL"]) == (20, 300.0)
    assert (notify["RETRY_BASE_DELAY"], notify["MAX_ATTEMPTS"]) == (30.0, 4)


def test_without_their_variables_the_optional_channels_are_absent(tmp_path):
    channels = import_settings(tmp_path)["NOTIFY"]["CHANNELS"]
    assert set(channels) == {"email", "inapp", "sms", "chat", "webhook"}
    assert channels["sms"]["BACKEND"] == "channels.sandbox.SandboxChannel"
