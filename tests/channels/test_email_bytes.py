"""The cheap email path (``channels.mimebytes``) writes the message Django writes.

Each case of a corpus (ASCII, accented Latin, CJK, emoji, long subjects that
need folding, long URLs, HTML with non-ASCII, long lines) is sent twice to
the aiosmtpd peer: through ``EmailChannel`` on Django's SMTP backend (the
bytes path) and as Django's own ``EmailMultiAlternatives`` through the same
mailer. Both raw messages, as the peer received them, are parsed with
``email.policy.default`` and compared: header values, content types,
charsets, transfer encodings and decoded bodies. The same holds for every
shipped email template rendered into the layout in four locales, and every
subject reads back exactly as written, on both paths, where the
interpreter's own folding would move a space (``channels.headers``). ESP
mailers (anymail) keep receiving an ``EmailMultiAlternatives``, which every
installed ESP backend turns into its API request to a local HTTP server.
"""

from __future__ import annotations

import email.policy
import importlib
import json
import pkgutil
import random
from collections.abc import Iterator
from email import message_from_bytes
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import unquote_plus

import anymail.backends
import pytest
from anymail.backends.base_requests import AnymailRequestsBackend
from django.core import mail
from django.core.mail import EmailMultiAlternatives, mailers
from django.core.mail.backends.smtp import EmailBackend as SmtpBackend

from channels import email as email_channel
from channels import mimebytes
from channels.base import OutgoingMessage, PermanentError
from channels.email import EmailChannel, NotifyEmailMessage, sends_bytes
from channels.headers import HeaderInjection
from channels.mimebytes import build_message, header_line, refuse_injected_header_bytes
from notify.delivery.rendering import sample_context, template_store
from tests.peers.http import HttpPeer

MAILER = "bytes-smtp"
LONG_URL = "https://shop.example.com/unsubscribe/" + "eyJ1IjoxLCJjIjoib3JkZXJzIn0" * 5 + "/"

CORPUS = {
    "ascii": ("Your order A1 has shipped", "Hi Alice,\nIt is on its way.\n", "<p>Hi Alice</p>"),
    "latin": (
        "Votre commande é à ç a été expédiée",
        "Bonjour Zoé,\nVotre commande arrive bientôt.\n",
        "<p>Bonjour <b>Zoé</b>, voilà</p>",
    ),
    "cjk": (
        "ご注文の商品を発送しました",
        "山田様\nご注文ありがとうございます。\n",
        "<p>山田様</p>",
    ),
    "emoji": ("Shipped 🎉📦 on its way 🚚", "Party 🎉\n", "<p>📦 ✓</p>"),
    "long_subject": (
        "A very long subject line that certainly needs folding because it goes on "
        "and on well past seventy-eight characters, café included, and more words",
        "Body\n",
        "<p>Body</p>",
    ),
    "long_ascii_subject": ("word " * 30 + "end", "Body\n", ""),
    "long_urls": (
        "Links",
        f"Unsubscribe: {LONG_URL}\nManage: {LONG_URL}settings\n",
        f'<a href="{LONG_URL}">Unsubscribe · désabonner</a>',
    ),
    "long_html_lines": ("HTML", "short\n", "<p>" + "Grüße und Küsse " * 40 + "</p>\n" * 12),
    "text_only": ("Plain only", "Just text, no HTML.\n", ""),
    "binaryish": ("Mostly non-ASCII", "日本語のテキスト" * 30 + "\n", "<p>" + "中文" * 80 + "</p>"),
    "dots_and_from": ("Dots", ".\n..leading dots\nFrom here\n", "<p>.</p>\n.\n"),
}


@pytest.fixture
def smtp(settings, smtp_peer):
    settings.MAILERS = {**settings.MAILERS, MAILER: smtp_peer.mailer(timeout=5)}
    return smtp_peer


def _headers() -> dict[str, str]:
    return {
        "List-Unsubscribe": f"<{LONG_URL}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def _send_both(
    smtp, subject: str, text: str, html: str
) -> tuple[EmailMessage, EmailMessage, bytes]:
    channel = EmailChannel("email", MAILER=MAILER)
    with channel:
        assert sends_bytes(channel.connection)
        result = channel.send(
            OutgoingMessage(
                delivery_id=7,
                channel="email",
                to="bob@example.com",
                subject=subject,
                text=text,
                html=html,
                headers=_headers(),
            )
        )
    fast = smtp.messages[-1]
    assert fast.message_id == result.message_id
    django = EmailMultiAlternatives(
        subject=subject,
        body=text,
        to=["bob@example.com"],
        headers={"Message-ID": result.message_id, **_headers(), "X-Notify-Delivery": "7"},
    )
    if html:
        django.attach_alternative(html, "text/html")
    backend = mailers[MAILER]
    assert backend.send_messages([django]) == 1
    slow = smtp.messages[-1]
    return fast.message, slow.message, fast.raw


def _parts(message: EmailMessage) -> list[tuple[str, str | None, str, str]]:
    return [
        (
            part.get_content_type(),
            part.get_content_charset(),
            str(part.get("Content-Transfer-Encoding", "")),
            part.get_content().replace("\r\n", "\n") if not part.is_multipart() else "",
        )
        for part in message.walk()
    ]


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_the_bytes_path_writes_the_message_django_writes(smtp, monkeypatch, case):
    def refuse(*args, **kwargs):
        raise AssertionError("the SMTP fast path built a Django message")

    subject, text, html = CORPUS[case]
    monkeypatch.setattr(NotifyEmailMessage, "message", refuse)
    fast, slow, raw = _send_both(smtp, subject, text, html)
    monkeypatch.undo()

    assert sorted(fast.keys()) == sorted(slow.keys())
    for name in fast:
        if name not in ("Date", "Content-Type"):
            assert str(fast[name]) == str(slow[name]), name
    assert fast["Date"].datetime is not None
    assert str(fast["Subject"]) == subject
    assert _parts(fast) == _parts(slow)

    head = raw.partition(b"\r\n\r\n")[0]
    assert head.isascii()
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert f"\r\nList-Unsubscribe: <{LONG_URL}>\r\n".encode() in head  # one line, as is
    for line in head.split(b"\r\n"):
        assert line[:1] in (b" ", b"\t") or b":" in line  # a header or a fold, nothing else


def test_emails_without_html_and_multipart_have_the_same_top_level_layout(smtp):
    fast, slow, _ = _send_both(smtp, *CORPUS["text_only"])
    assert fast.get_content_type() == slow.get_content_type() == "text/plain"
    fast, slow, _ = _send_both(smtp, *CORPUS["latin"])
    assert fast.get_content_type() == slow.get_content_type() == "multipart/alternative"


# -- the corpus of shipped templates, in several locales --------------------------------

# A recipient and a payload per locale, in the scripts each locale writes in;
# the payload carries what every shipped email template reads.
LOCALES = {
    "": ("Alice", "Your order A-1001", "Looks good to me"),
    "fr": ("Zoé", "Votre commande C-2002 — expédiée", "Ça me va, merci à vous"),
    "de": ("Jürgen", "Straßenbahn-Fahrplan für Köln", "Grüße aus Düsseldorf"),
    "ja": ("山田", "ご注文の商品を発送しました", "ありがとうございます 🎉"),
}


def _payload(title: str, comment: str) -> dict:
    entries = [{"title": f"{title} #{n}", "url": f"{LONG_URL}{n}"} for n in range(3)]
    group = {"key": "orders", "name": title, "count": 3, "entries": entries, "more": 0}
    return {
        "order_id": "A-1001",
        "carrier": "UPS",
        "url": LONG_URL,
        "title": title,
        "comment": comment,
        "channel_label": "Email",
        "frequency": "daily",
        "count": 3,
        "date_label": "3 December 2026",
        "summary": f"3 {title}",
        "groups": [{**group, "unsubscribe_url": LONG_URL}],
    }


def _shipped_email_messages() -> list[str]:
    return sorted(
        path.name
        for path in (Path(__file__).resolve().parents[2] / "templates").iterdir()
        if (path / "email.subject").is_file()
    )


@pytest.mark.django_db
@pytest.mark.parametrize("locale", sorted(LOCALES))
@pytest.mark.parametrize("message", _shipped_email_messages())
def test_shipped_templates_write_the_message_django_writes(smtp, monkeypatch, message, locale):
    """Every shipped email template, rendered into the layout (inlined CSS,
    one-click links) in each locale, reaches the peer as Django would write it."""
    name, title, comment = LOCALES[locale]
    context = sample_context(_payload(title, comment))
    context["recipient"] = {**context["recipient"], "first_name": name, "name": name}
    parts = template_store.render(message, "email", context, locale)
    assert parts.subject and parts.text

    monkeypatch.setattr(NotifyEmailMessage, "message", _refuse_django_message)
    fast, slow, _ = _send_both(smtp, parts.subject, parts.text, parts.html or "")
    monkeypatch.undo()

    assert sorted(fast.keys()) == sorted(slow.keys())
    for header in fast:
        if header not in ("Date", "Content-Type", "Subject"):
            assert str(fast[header]) == str(slow[header]), header
    # The subject reads back as rendered; Django's own can lose a space where
    # the interpreter folds it (comment_batch in French: test below).
    assert str(fast["Subject"]) == parts.subject
    assert _parts(fast) == _parts(slow)


WORDS = ["C-2002", "—", "expédiée", "Votre", "commande", "a", "été", "🎉", "ありがとう", "Grüße"]
WORDS += ["and", "2", "others", "commented", "on", "x" * 30, "—expédiée", "(note)", '"q"', "end."]


def test_folded_subjects_read_back_as_written():
    """3,000 seeded mixed-script subjects: each reads back unchanged from the
    bytes path and from Django's path (NotifyEmailMessage). The interpreter's
    own folding (``email.policy.SMTP``) changed the spaces of 116 of them, e.g.
    ``… C-2002 — expédiée`` read back as ``… C-2002  —expédiée``."""
    rng = random.Random(1)
    subjects = [" ".join(rng.choices(WORDS, k=rng.randint(2, 16))) for _ in range(3000)]
    changed = [s for s in subjects if _read_subject(header_line("Subject", s)) != s]
    assert changed == []
    for subject in subjects[::20]:
        django = NotifyEmailMessage(subject, "x", "a@example.com", ["b@example.com"])
        assert _read_subject(django.message().as_bytes()) == subject


def test_a_subject_the_interpreter_folds_wrongly_reads_back_as_written(smtp):
    subject = "Sample Actor and 2 others commented on Votre commande C-2002 — expédiée"
    fast, _, raw = _send_both(smtp, subject, "x\n", "")
    assert str(fast["Subject"]) == subject
    assert b"=?utf-8?" in raw.partition(b"\r\n\r\n")[0]  # encoded words, not raw UTF-8


def _read_subject(raw: bytes) -> str:
    return str(message_from_bytes(raw, policy=email.policy.default)["Subject"])


def _refuse_django_message(*args, **kwargs):
    raise AssertionError("the SMTP fast path built a Django message")


# -- header injection keeps being refused or neutralised on the fast path ---------------


@pytest.mark.parametrize(
    "subject",
    [
        "=?utf-8?q?Hello=0D=0ABcc:_victim@example.com?=",
        "Hello\r\nBcc: victim@example.com",
        "Hello\nX-Injected: yes",
    ],
)
def test_injected_subjects_are_neutralised_on_the_fast_path(smtp, subject):
    channel = EmailChannel("email", MAILER=MAILER)
    with channel:
        channel.send(
            OutgoingMessage(
                delivery_id=8,
                channel="email",
                to="bob@example.com",
                subject=subject,
                text="t\n",
                html="",
                headers={"X-Rule": "a\r\nBcc: victim@example.com"},
            )
        )
    received = smtp.messages[-1]
    assert "Bcc" not in received.headers and "X-Injected" not in received.headers
    assert received.rcpt_tos == ("bob@example.com",)
    assert "\n" not in received.subject and "Hello" in received.subject
    assert "\n" not in received.headers["X-Rule"]


def test_the_builder_refuses_a_header_that_would_start_a_new_line():
    with pytest.raises(HeaderInjection):
        refuse_injected_header_bytes("Subject", b"Subject: a\r\nBcc: x@example.com\r\n")
    with pytest.raises(HeaderInjection):
        refuse_injected_header_bytes("Subject", b"Subject: a\rBcc: x@example.com\r\n")
    refuse_injected_header_bytes("Subject", b"Subject: a\r\n b folded\r\n")
    # Values with raw line breaks never take the as-is branch of header_line.
    for value in ("a\r\nBcc: x@example.com", "a\nBcc: x@example.com"):
        try:
            line = header_line("X-Test", value)
        except HeaderInjection:
            continue
        refuse_injected_header_bytes("X-Test", line)
        assert b"\r\nBcc" not in line


def test_a_message_the_builder_would_refuse_is_a_permanent_error(smtp, monkeypatch):
    def injected(**kwargs):
        raise HeaderInjection("the X header would inject a header line once encoded")

    monkeypatch.setattr(email_channel, "build_message", injected)
    channel = EmailChannel("email", MAILER=MAILER)
    with channel, pytest.raises(PermanentError) as raised:
        channel.send(
            OutgoingMessage(
                delivery_id=9, channel="email", to="bob@example.com", subject="s", text="t"
            )
        )
    assert raised.value.code == "header_injection"
    assert smtp.messages == []


class _VulnerableHeader:
    """What a vulnerable email package writes: the decoded value, line breaks included."""

    def __init__(self, name: str, value: str):
        self.name, self.value = name, value

    def fold(self, policy) -> str:
        return f"{self.name}: A\r\nX-Injected: 1\r\n"


class _VulnerablePolicy:
    header_factory = _VulnerableHeader


def test_an_injection_found_after_encoding_is_refused_on_the_bytes_path(smtp, monkeypatch):
    monkeypatch.setattr(mimebytes, "POLICY", _VulnerablePolicy())
    mimebytes._policy_header_line.cache_clear()
    channel = EmailChannel("email", MAILER=MAILER)
    try:
        with channel, pytest.raises(PermanentError, match="inject a header") as raised:
            channel.send(
                OutgoingMessage(
                    delivery_id=11, channel="email", to="bob@example.com", subject="Café", text="t"
                )
            )
    finally:
        mimebytes._policy_header_line.cache_clear()
    assert raised.value.code == "header_injection"
    assert smtp.messages == []


def test_unusual_messages_take_django_path(smtp):
    headers = {"Message-ID": "<a@b>"}
    assert (
        build_message(
            from_email="n@example.com",
            to="bøb@exämple.com",
            subject="s",
            text="t",
            html=None,
            headers=headers,
        )
        is None
    )
    assert (
        build_message(
            from_email="n@example.com",
            to="b@example.com",
            subject="s",
            text="t",
            html=None,
            headers={**headers, "Content-Type": "text/plain"},
        )
        is None
    )


# -- ESP mailers keep receiving Django's EmailMultiAlternatives -------------------------


def test_every_anymail_backend_keeps_the_django_email_path():
    backends = []
    for module in pkgutil.iter_modules(anymail.backends.__path__):
        try:
            imported = importlib.import_module(f"anymail.backends.{module.name}")
        except ImportError:  # an ESP whose optional dependency is not installed
            continue
        backend = getattr(imported, "EmailBackend", None)
        if backend is not None:
            backends.append(backend)
    assert len(backends) > 10
    for backend in backends:
        assert not issubclass(backend, SmtpBackend), backend


# What each ESP backend asks for, by the name of its anymail module (fake values).
ESP_CREDENTIALS = {
    "mailersend": {"api_token": "token"},
    "mailjet": {"api_key": "key", "secret_key": "secret"},
    "mailtrap": {"api_token": "token"},
    "postmark": {"server_token": "token"},
    "scaleway": {"project_id": "project", "secret_key": "secret"},
}


def _requests_backends() -> list[str]:
    names = []
    for module in pkgutil.iter_modules(anymail.backends.__path__):
        try:
            imported = importlib.import_module(f"anymail.backends.{module.name}")
        except ImportError:  # an ESP whose optional dependency is not installed
            continue
        backend = getattr(imported, "EmailBackend", None)
        if backend is not None and issubclass(backend, AnymailRequestsBackend):
            names.append(module.name)
    return names


def _strings(value) -> Iterator[str]:
    """Every text in a request's parameters, JSON bodies decoded."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        yield value
        try:
            yield from _strings(json.loads(value))
        except ValueError:
            pass
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


@pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning")
@pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailDeprecationWarning")
@pytest.mark.parametrize("esp", _requests_backends())
def test_every_anymail_backend_accepts_the_message_the_channel_builds(settings, esp):
    """The ``EmailMultiAlternatives`` EmailChannel hands an ESP mailer (caught by
    anymail's test backend) goes through each installed ESP backend's own
    payload building and is POSTed to a local HTTP server: subject, recipient,
    HTML, the delivery reference and the one-click link all reach it."""
    settings.MAILERS = {
        **settings.MAILERS,
        "esp-test": {"BACKEND": "anymail.backends.test.EmailBackend"},
    }
    mail.outbox = []
    channel = EmailChannel("email", MAILER="esp-test")
    outgoing = OutgoingMessage(
        delivery_id=10,
        channel="email",
        to="bob@example.com",
        subject="Café 🎉 Grüße",
        text="Grüße\n",
        html="<p>Grüße</p>",
        headers=_headers(),
    )
    with channel:
        channel.send(outgoing)
    (message,) = mail.outbox
    assert isinstance(message, EmailMultiAlternatives)

    peer = HttpPeer()
    peer.start()
    try:
        module = importlib.import_module(f"anymail.backends.{esp}")
        credentials = ESP_CREDENTIALS.get(esp, {"api_key": "key"})
        backend = module.EmailBackend(**credentials, api_url=f"{peer.base_url}/")
        payload = backend.build_message_payload(message, backend.send_defaults)
        texts = list(_strings(payload.get_request_params(backend.api_url)))
        backend.open()
        try:
            response = backend.post_to_esp(payload, message)
        finally:
            backend.close()
    finally:
        peer.stop()
    assert response.status_code == 200
    (request,) = peer.requests
    assert request.method == "POST"
    body = request.body.decode()
    if request.header("Content-Type").startswith("application/x-www-form-urlencoded"):
        body = unquote_plus(body)
    for expected in (outgoing.delivery_ref, LONG_URL, "bob@example.com"):
        assert expected in body, expected
    assert "Café 🎉 Grüße" in texts and "<p>Grüße</p>" in texts


def test_the_postmark_backend_receives_an_email_multi_alternatives(settings, esp_peer, monkeypatch):
    settings.MAILERS = {**settings.MAILERS, "bytes-postmark": esp_peer.mailer(timeout=2.0)}
    seen = []
    backend_class = type(mailers["bytes-postmark"])
    original = backend_class.send_messages

    def spy(self, messages):
        seen.extend(messages)
        return original(self, messages)

    monkeypatch.setattr(backend_class, "send_messages", spy)
    channel = EmailChannel("email", MAILER="bytes-postmark")
    with channel:
        assert not sends_bytes(channel.connection)
        channel.send(
            OutgoingMessage(
                delivery_id=10,
                channel="email",
                to="bob@example.com",
                subject="Café 🎉",
                text="Grüße\n",
                html="<p>Grüße</p>",
                headers=_headers(),
            )
        )
    assert len(seen) == 1 and isinstance(seen[0], EmailMultiAlternatives)
    assert seen[0].alternatives[0].mimetype == "text/html"
    received = esp_peer.messages[-1]
    assert received.subject == "Café 🎉" and received.html == "<p>Grüße</p>"
