"""``List-Unsubscribe`` as mailbox providers parse it (RFC 2369, RFC 8058):
``<https://…>`` (and ``<mailto:…>`` when configured) in plain ASCII, never an
RFC 2047 encoded word, checked on the raw bytes an SMTP server receives and on
the JSON sent to an ESP (Postmark through anymail)."""

from __future__ import annotations

import re
from urllib.parse import unquote

import pytest

from notify import trigger
from notify.preferences.one_click import UnsubscribeScope, read_token
from notify.runtime.worker import run_until_idle

ONE_CLICK = "List-Unsubscribe=One-Click"
# A long site URL: the header is longer than a 78-character line, which the
# default email policy "folds" by encoding it.
LONG_SITE = "https://notifications.example.com/a/rather/long/path/prefix/for/this/deployment"
LIST_ITEM = rb"<(?:https://|mailto:)[\x21-\x3d\x3f-\x7e]+>"


@pytest.fixture
def alice(make_user):
    return make_user("alice", first_name="Alice")


@pytest.fixture
def site(settings):
    settings.NOTIFY = {**settings.NOTIFY, "SITE_URL": LONG_SITE}


def raw_header(raw: bytes, name: bytes) -> bytes:
    """The header as sent, unfolded (RFC 5322: CRLF + whitespace is folding)."""
    head = raw.split(b"\r\n\r\n", 1)[0] if b"\r\n\r\n" in raw else raw.split(b"\n\n", 1)[0]
    unfolded = re.sub(rb"\r?\n(?=[ \t])", b"", head)
    [line] = [ln for ln in unfolded.splitlines() if ln.lower().startswith(name.lower() + b":")]
    return line.split(b":", 1)[1].strip()


def test_smtp_peer_receives_plain_angle_bracket_urls(site, smtp_mailer, alice, make_rule):
    make_rule()
    trigger("order.shipped", {"order_id": "A1"}, recipients=[alice])
    run_until_idle()
    [message] = smtp_mailer.messages_to(alice.email)

    value = raw_header(message.raw, b"List-Unsubscribe")
    assert b"=?" not in value, value
    [item] = re.findall(LIST_ITEM, value)
    assert value == item
    url = item[1:-1].decode()
    assert url.startswith(f"{LONG_SITE}/unsubscribe/")
    assert read_token(url.rstrip("/").rpartition("/")[2]) == UnsubscribeScope(
        alice.pk, "orders", "email"
    )
    assert raw_header(message.raw, b"List-Unsubscribe-Post") == ONE_CLICK.encode()
    # No line of the header block breaks the 998-character limit (RFC 5322).
    assert all(len(line) <= 998 for line in message.raw.splitlines())


def test_mailto_when_configured_folds_only_between_items(
    settings, site, smtp_mailer, alice, make_rule
):
    settings.NOTIFY = {**settings.NOTIFY, "UNSUBSCRIBE_MAILTO": "unsubscribe@notify.example"}
    make_rule()
    trigger("order.shipped", {"order_id": "A2"}, recipients=[alice])
    run_until_idle()
    [message] = smtp_mailer.messages_to(alice.email)

    head = message.raw.split(b"\r\n\r\n", 1)[0]
    # Folded, if at all, only after the comma between items: never inside <…>.
    for match in re.finditer(rb"<[^>]*>", head):
        assert b"\n" not in match.group(0)
    value = raw_header(message.raw, b"List-Unsubscribe")
    assert b"=?" not in value
    https, mailto = re.findall(LIST_ITEM, value)
    assert value == https + b", " + mailto
    assert https.startswith(f"<{LONG_SITE}/unsubscribe/".encode())
    assert mailto.startswith(b"<mailto:unsubscribe@notify.example?subject=unsubscribe-")
    token = unquote(mailto[:-1].decode().partition("subject=unsubscribe-")[2])
    assert read_token(token) == UnsubscribeScope(alice.pk, "orders", "email")
    # What a mail client parses back is the same two items.
    assert message.headers["List-Unsubscribe"] == value.decode()


def test_esp_payload_carries_the_header_as_written(settings, site, esp_mailer, alice, make_rule):
    settings.NOTIFY = {
        **settings.NOTIFY,
        "UNSUBSCRIBE_MAILTO": "unsubscribe@notify.example",
        "CHANNELS": {
            **settings.NOTIFY["CHANNELS"],
            "email": {"BACKEND": "channels.email.EmailChannel", "OPTIONS": {"MAILER": "postmark"}},
        },
    }
    make_rule(channels=["email"])
    trigger("order.shipped", {"order_id": "A3"}, recipients=[alice])
    run_until_idle()
    [request] = [r for r in esp_mailer.requests if r.status == 200]
    headers = {h["Name"]: h["Value"] for h in request.data["Headers"]}
    value = headers["List-Unsubscribe"]
    assert "=?" not in value and "\n" not in value
    https, mailto = re.findall(LIST_ITEM.decode(), value)
    assert value == f"{https}, {mailto}"
    assert https.startswith(f"<{LONG_SITE}/unsubscribe/")
    assert headers["List-Unsubscribe-Post"] == ONE_CLICK
