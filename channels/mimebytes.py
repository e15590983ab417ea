"""The cheap email path: the bytes of a text (+ HTML) email, built directly.

Why bytes and not a faster policy or a per-template skeleton (measured on the
bench's ``order_shipped`` email, 2-core machine, load 8-9, cProfile of one
worker loop of 1,000 emails): Django 6.1's ``EmailMultiAlternatives.message()``
plus ``as_bytes()`` under ``email.policy.SMTP`` spent 13.6 s + 12.3 s of 58.7 s
in the standard library's header registry (18,000 ``header_factory`` parses)
and folding (25,000 ``_refold_parse_tree`` calls, 2,000 encoded-word folds of
the subject), and ``refuse_injected_headers`` folded every header once more
(6.4 s). Swapping the policy (``SMTP`` vs ``compat32``) changes neither cost:
both parse and fold every header through the same code. A skeleton keyed by
(template, locale) is not available where the message is sent (the channel
sees only the rendered ``OutgoingMessage``), and what varies per recipient is
most of the message anyway (To, Message-ID, Date, both bodies). So:

* the common message (no attachments, ASCII addresses, headers whose names
  are plain tokens) is written as bytes here: the fixed headers (MIME-Version,
  Content-Type, Date) from strings, every other header through
  :func:`header_line` — the one place a header is encoded, for whoever
  adjusts a header's encoding (``List-Unsubscribe`` stays ``<https://…>`` on
  one line);
* :func:`header_line` writes a short, plain ASCII value as it is, a single
  long ASCII token (a URL) unfolded on one line (RFC 5322 allows 998), and
  leaves anything else (non-ASCII, encoded words, long text to fold, address
  and structured headers) to the standard library's own header classes and
  folding under ``email.policy.SMTP`` — exactly what Django does — cached by
  (name, value), so a subject shared by a template's recipients is folded once:
  that cache is the prepared per-(template, locale) part;
* bodies follow the rules of Django's ``set_content``: 7bit when ASCII with
  lines ≤ 78 octets, 8bit when not ASCII with such lines, else
  quoted-printable or base64, whichever is shorter, encoded by binascii (C)
  rather than ``email.quoprimime`` (pure Python, a character at a time);
* a header is written as is only when it is printable ASCII (no CR, LF or
  other control); every header the standard library folds goes through
  :func:`refuse_injected_header_bytes`, which refuses a line break that is not
  a fold, as ``channels.headers.refuse_injected_headers`` does on Django's
  message (defence in depth after ``neutralise_header_value``).

Anything else returns ``None`` from :func:`build_message` and goes through
Django's ``EmailMultiAlternatives`` as before; ESP (anymail) mailers always do.
Tests: ``tests/channels/test_email_bytes.py`` compares both, parsed, for a
corpus of subjects, bodies and headers.
"""

from __future__ import annotations

import binascii
import email.policy
import random
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.errors import HeaderParseError
from email.utils import format_datetime
from functools import lru_cache

from .headers import HeaderInjection, faithful_registry

# email.policy.SMTP with text headers folded so they read back unchanged, as
# NotifyEmailMessage writes them on Django's path (channels.headers.faithful_fold).
POLICY = email.policy.SMTP.clone(header_factory=faithful_registry())
MAX_LINE = 78  # RFC 5322's SHOULD, and email.policy.SMTP.max_line_length
HARD_MAX_LINE = 998  # RFC 5322's MUST

# ftext (RFC 5322 2.2): printable ASCII but ":".
_HEADER_NAME = re.compile(r"[!-9;-~]+\Z")
# A plain addr-spec as validate_email accepts it, ASCII only: written as is.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+\Z")
# Unstructured text that any header class would write back unchanged.
_PLAIN_VALUE = re.compile(r"[!-~]+(?: [!-~]+)*\Z")
_LINE_BREAK_NOT_A_FOLD = re.compile(rb"\r(?!\n)|(?<!\r)\n|\r\n(?![ \t])")

# Headers the header registry parses as something else than unstructured text.
_STRUCTURED = frozenset(
    {
        "date",
        "resent-date",
        "orig-date",
        "sender",
        "resent-sender",
        "to",
        "resent-to",
        "cc",
        "resent-cc",
        "bcc",
        "resent-bcc",
        "from",
        "resent-from",
        "reply-to",
        "mime-version",
        "content-type",
        "content-disposition",
        "content-transfer-encoding",
        "message-id",
    }
)
# Set by the builder itself, or refused by Django: such a message takes Django's path.
_RESERVED = frozenset(
    {"mime-version", "content-type", "content-transfer-encoding", "date", "from", "to", "bcc"}
)


def header_line(name: str, value: str) -> bytes:
    """One header, encoded and folded for the wire, CRLF-terminated.

    The single place where the fast path encodes a header: a value already
    fit for the wire is written as is (``List-Unsubscribe: <https://…>``
    whatever the URL's length), anything else as ``email.policy.SMTP``
    writes it (the header registry, RFC 2047 encoded words, folding)."""
    if name.lower() in LIST_HEADERS:
        folded = fold_list_items(name, value)  # RFC 2369: <…> items, never encoded words
        if folded is not None:
            return folded
    if value.isascii() and "=?" not in value and _PLAIN_VALUE.match(value):
        size = len(name) + 2 + len(value)
        if size <= MAX_LINE and (name.lower() not in _STRUCTURED or name == "Message-ID"):
            return f"{name}: {value}\r\n".encode("ascii")
        if " " not in value and size <= HARD_MAX_LINE and name.lower() not in _STRUCTURED:
            return f"{name}: {value}\r\n".encode("ascii")  # one long token: never split
    return _policy_header_line(name, value)


LIST_HEADERS = frozenset({"list-unsubscribe", "list-help", "list-subscribe", "list-archive"})
_LIST_ITEMS = re.compile(r"\s*(<[\x21-\x3d\x3f-\x7e]+>)\s*(?:,|$)")


def fold_list_items(name: str, value: str) -> bytes | None:
    """``List-Unsubscribe: <https://…>,\r\n <mailto:…>`` as RFC 2369 writes it
    (folded only between items, as ``channels.email.ListHeader`` does on
    Django's path); None for a value that is not plain ``<…>`` items."""
    items = _LIST_ITEMS.findall(value)
    if not items or ", ".join(items) != value.strip():
        return None
    return (f"{name}: " + ",\r\n ".join(items) + "\r\n").encode("ascii")


@lru_cache(maxsize=2048)
def _policy_header_line(name: str, value: str) -> bytes:
    """The header exactly as Django's message under ``email.policy.SMTP`` writes
    it (``NotifyEmailMessage``'s faithful folding included); refused (:class:`HeaderInjection`) if it would start a new header line."""
    try:
        line = POLICY.header_factory(name, value).fold(policy=POLICY).encode("ascii")
    except HeaderParseError as exc:  # the email package saw the embedded header itself
        raise HeaderInjection(
            f"the {name} header would inject a header line once encoded; message refused"
        ) from exc
    refuse_injected_header_bytes(name, line)
    return line


def refuse_injected_header_bytes(name: str, line: bytes) -> None:
    """Raise :class:`HeaderInjection` when one encoded header (CRLF-terminated)
    holds a line break that is not a fold (CRLF followed by a space or a tab)."""
    if _LINE_BREAK_NOT_A_FOLD.search(line[:-2] if line.endswith(b"\r\n") else line):
        raise HeaderInjection(
            f"the {name} header would inject a header line once encoded; message refused"
        )


def encode_body(text: str, subtype: str) -> tuple[bytes, bytes]:
    """(part headers, body) of one text part, with the transfer encoding the
    standard library's ``set_content`` (Django's path) chooses: 7bit or 8bit
    when every line fits in 78 octets, else quoted-printable or base64,
    whichever is shorter on the first 10 lines. The encoders are binascii's
    (C): the octets may differ from ``email.quoprimime``'s, the decoded text
    does not."""
    data = text.encode("utf-8", "surrogateescape")
    lines = data.splitlines()
    body = b"\r\n".join(lines) + b"\r\n"
    if max((len(line) for line in lines), default=0) <= MAX_LINE:
        cte = b"7bit" if data.isascii() else b"8bit"
    else:
        sniff = b"\r\n".join(lines[:10]) + b"\r\n"
        if len(binascii.b2a_qp(sniff, istext=True)) > len(binascii.b2a_base64(sniff)):
            cte = b"base64"
            body = b"\r\n".join(
                binascii.b2a_base64(body[start : start + 57], newline=False)
                for start in range(0, len(body), 57)
            )
            body += b"\r\n"
        else:
            cte = b"quoted-printable"
            body = binascii.b2a_qp(body, istext=True)
    head = (
        b"Content-Type: text/" + subtype.encode("ascii") + b'; charset="utf-8"\r\n'
        b"Content-Transfer-Encoding: " + cte + b"\r\n"
    )
    return head, body


def _boundary(parts: tuple[bytes, ...]) -> bytes:
    while True:
        token = b"===============%019d==" % random.randrange(10**18, 10**19)
        if not any(token in part for part in parts):
            return token


def build_message(
    *,
    from_email: str,
    to: str,
    subject: str,
    text: str,
    html: str | None,
    headers: Mapping[str, str],
    use_localtime: bool = False,
) -> bytes | None:
    """The message's bytes for ``sendmail``, or ``None`` when it needs Django's path.

    ``headers`` are the extra headers in Django's order (Message-ID first);
    values must already have been through ``neutralise_header_value``."""
    if not _PLAIN_ADDRESS.match(to) or not from_email.isascii():
        return None  # non-ASCII addresses: Django IDNA-encodes domains; keep its path
    for name in headers:
        if not _HEADER_NAME.match(name) or name.lower() in _RESERVED:
            return None
    now = datetime.now().astimezone() if use_localtime else datetime.now(UTC)
    head = [
        header_line("Subject", subject),
        _policy_header_line("From", from_email),
        b"To: " + to.encode("ascii") + b"\r\n",
        b"Date: " + format_datetime(now).encode("ascii") + b"\r\n",
    ]
    head.extend(header_line(name, str(value)) for name, value in headers.items())
    extra = b"".join(head)
    text_head, text_body = encode_body(text, "plain")
    if not html:
        top = text_head + b"MIME-Version: 1.0\r\n" + extra
        return top + b"\r\n" + text_body
    html_head, html_body = encode_body(html, "html")
    boundary = _boundary((text_body, html_body))
    top = (
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative;\r\n boundary="' + boundary + b'"\r\n' + extra
    )
    return b"".join(
        (
            top,
            b"\r\n--",
            boundary,
            b"\r\n",
            text_head,
            b"\r\n",
            text_body,
            b"\r\n--",
            boundary,
            b"\r\n",
            html_head,
            b"MIME-Version: 1.0\r\n\r\n",
            html_body,
            b"\r\n--",
            boundary,
            b"--\r\n",
        )
    )
