"""Signed webhooks to named internal hosts (``NOTIFY_WEBHOOK_INTERNAL_HOSTS``),
and never to link-local or cloud metadata addresses, whatever the options say."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from channels.base import ChannelConfigurationError, InvalidRecipient, OutgoingMessage
from channels.webhook import INTERNAL_HOSTS_ENV, SignedWebhookChannel, SignedWebhookUrlPolicy
from notify.checks import check_channels

SECRET = "whsec-internal-7a1e"
ROOT = Path(__file__).resolve().parents[2]
METADATA_URLS = [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",  # AWS, GCP, Azure
    "http://169.254.170.2/v2/credentials",  # ECS task credentials
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://metadata.goog/computeMetadata/v1/",
    "http://[fd00:ec2::254]/latest/meta-data/",  # AWS over IPv6
    "http://[fe80::1]/",
    "http://[::ffff:169.254.169.254]/",  # IPv4-mapped
    "http://100.100.100.200/latest/meta-data/",  # Alibaba Cloud
    "http://0.0.0.0:8080/",
]


def message(to: str) -> OutgoingMessage:
    return OutgoingMessage(delivery_id=601, channel="webhook", to=to, text="hi")


def channel(**options) -> SignedWebhookChannel:
    return SignedWebhookChannel("webhook", SECRET=SECRET, TIMEOUT=5, **options)


@pytest.fixture
def dns(monkeypatch):
    """Answers for host names, as a resolver would give them."""
    answers: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in answers:
            return [
                (
                    socket.AF_INET6 if ":" in a else socket.AF_INET,
                    socket.SOCK_STREAM,
                    6,
                    "",
                    (a, port),
                )
                for a in answers[host]
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr("channels.webhook.socket.getaddrinfo", getaddrinfo)
    return answers


def test_a_named_internal_host_is_reached_over_http(webhook_peer):
    url = webhook_peer.add_endpoint("signed", secret=SECRET)  # http://127.0.0.1:<port>/...
    with channel(INTERNAL_HOSTS="127.0.0.1") as allowed:  # as the variable gives it
        result = allowed.send(message(url))
    [got] = webhook_peer.accepted  # the receiver verified the signature
    assert result.message_id == "601" == got.delivery
    # Without the variable the same URL is refused, and the error says what to set.
    with channel() as default, pytest.raises(InvalidRecipient) as caught:
        default.send(message(url))
    assert caught.value.code == "url_refused"
    assert INTERNAL_HOSTS_ENV in caught.value.message
    with channel() as default, pytest.raises(InvalidRecipient) as caught:
        default.send(message(url.replace("http://", "https://")))
    assert "not a public address" in caught.value.message
    assert INTERNAL_HOSTS_ENV in caught.value.message
    assert len(webhook_peer.requests) == 1


def test_internal_names_may_resolve_to_private_addresses_but_never_to_metadata(dns):
    policy = SignedWebhookUrlPolicy(internal_hosts=("billing.internal",))
    dns["billing.internal"] = ["10.20.30.40"]
    assert policy.check("http://billing.internal/hooks/x", "webhook") == (
        "http://billing.internal/hooks/x"
    )
    assert policy.check("https://billing.internal:8443/x", "webhook")
    # Only the name itself: no subdomains, no other internal host.
    dns["evil.billing.internal"] = dns["other.internal"] = ["10.20.30.41"]
    for url in ("https://evil.billing.internal/x", "https://other.internal/x"):
        with pytest.raises(InvalidRecipient, match=f"named in {INTERNAL_HOSTS_ENV}"):
            policy.check(url, "webhook")
    with pytest.raises(InvalidRecipient, match="http only to the hosts named in"):
        policy.check("http://other.internal/x", "webhook")
    # A named host whose DNS now points at a metadata service is refused.
    for address in ("169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254"):
        dns["billing.internal"] = ["10.20.30.40", address]
        with pytest.raises(InvalidRecipient) as caught:
            policy.check("http://billing.internal/hooks/x", "webhook")
        assert "link-local or cloud metadata" in caught.value.message
        assert f"not even by {INTERNAL_HOSTS_ENV}" in caught.value.message


@pytest.mark.parametrize("url", METADATA_URLS)
def test_link_local_and_metadata_addresses_are_refused_whatever_the_options(webhook_peer, url):
    # Every way options can open the door: the variable, ALLOW_HTTP, ALLOWED_HOSTS.
    host = url.split("/")[2].rsplit(":", 1)[0] if "[" not in url else url.split("]")[0][8:]
    wide_open = channel(INTERNAL_HOSTS=["127.0.0.1"], ALLOW_HTTP=True, ALLOWED_HOSTS=[host])
    with wide_open, pytest.raises(InvalidRecipient) as caught:
        wide_open.send(message(url))
    assert caught.value.code == "url_refused"
    assert "link-local or cloud metadata address" in caught.value.message
    assert INTERNAL_HOSTS_ENV in caught.value.message


@pytest.mark.parametrize(
    "hosts",
    [
        "billing.internal,169.254.169.254",
        "metadata.google.internal",
        ["fd00:ec2::254"],
        ["fe80::1"],
        "http://billing.internal",
        "billing.internal:8080",
    ],
)
def test_naming_a_forbidden_or_malformed_internal_host_fails_at_start_up(settings, hosts):
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {
            **settings.NOTIFY["CHANNELS"],
            "webhook": {
                "BACKEND": "channels.webhook.SignedWebhookChannel",
                "OPTIONS": {"SECRET": SECRET, "INTERNAL_HOSTS": hosts},
            },
        },
    }
    [error] = check_channels()
    assert error.id == "notify.E006"
    assert INTERNAL_HOSTS_ENV in error.msg
    assert "NOTIFY['CHANNELS']['webhook']['OPTIONS']['INTERNAL_HOSTS']" in error.msg
    with pytest.raises(ChannelConfigurationError):  # and a worker would not open it
        channel(INTERNAL_HOSTS=hosts).open()


def test_the_variable_feeds_the_webhook_channel(tmp_path):
    script = textwrap.dedent(
        """
        import json, django
        django.setup()
        from django.conf import settings
        from channels.base import InvalidRecipient
        from notify.registry import build_channel
        policy = build_channel("webhook").url_policy
        out = {"options": settings.NOTIFY["CHANNELS"]["webhook"]}
        for url in ("http://127.0.0.1:9/hooks/x", "http://169.254.169.254/latest/meta-data/"):
            try:
                out[url] = policy.check(url, "webhook")
            except InvalidRecipient as exc:
                out[url] = str(exc)
        print(json.dumps(out))
        """
    )
    env = {
        "PATH": os.environ.get("PATH", ""),
        "NOTIFY_VAR_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "notify.project.settings",
        "NOTIFY_WEBHOOK_SECRET": "from-env",
        INTERNAL_HOSTS_ENV: "billing.internal, 127.0.0.1",
    }
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["options"] == {
        "BACKEND": "channels.webhook.SignedWebhookChannel",
        "OPTIONS": {"SECRET": "from-env", "INTERNAL_HOSTS": ["billing.internal", "127.0.0.1"]},
    }
    assert out["http://127.0.0.1:9/hooks/x"] == "http://127.0.0.1:9/hooks/x"
    refused = out["http://169.254.169.254/latest/meta-data/"]
    assert "link-local or cloud metadata address" in refused
    assert INTERNAL_HOSTS_ENV in refused
