"""Header values built from payloads, made safe before and checked after encoding.

A rendered subject (or any header a rule sets) is text from a payload, so it
may carry CR/LF directly or hidden in an RFC 2047 encoded word
(``=?utf-8?q?A=0D=0AReply-To:_x?=``). Python's modern email policy decodes
encoded words when a header is set and, before 3.12.5 / 3.13.0, wrote the
decoded CR/LF back out verbatim when folding (CVE-2024-6923): a new header.

Two independent defences, so that neither the interpreter nor one of them
alone is trusted:

* :func:`neutralise_header_value` decodes the value the way the email package
  will and, if the decoded text holds a line break or another control
  character, replaces the value by its decoded text with those characters
  turned into spaces: the message still goes out, with the text shown as text.
* :func:`refuse_injected_headers` looks at each header as it will be written
  (folded by the message's own policy) and refuses the message if a line
  break inside a header is not a fold (a fold is a line break followed by a
  space or a tab). It runs on the message object the SMTP backend serialises.

And one repair: :func:`faithful_fold` keeps a folded text header reading back
as the text it was given (the modern policy's folder can move or drop a space
next to an encoded word; :class:`FaithfulHeader` applies it on Django's path,
``channels.mimebytes`` on the bytes path).
"""

from __future__ import annotations

import email.header
import email.policy
import re
from email.errors import HeaderParseError
from email.headerregistry import HeaderRegistry, UnstructuredHeader
from email.message import Message

# C0 controls except TAB, and DEL: none has a place in a header value.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]+")
_LINE_BREAK_NOT_A_FOLD = re.compile(r"\r(?!\n)|\n(?![ \t])")


class HeaderInjection(ValueError):
    """A header would start a new header line once encoded."""


def decoded_header_value(name: str, value: str) -> str:
    """The value as the email package will read it: encoded words decoded."""
    try:
        return str(email.policy.default.header_factory(name, value))
    except Exception:  # an address header that does not parse: fall back to RFC 2047 alone
        try:
            return str(email.header.make_header(email.header.decode_header(value)))
        except Exception:
            return value


def neutralise_header_value(name: str, value: str) -> str:
    """``value`` unchanged when it is safe; else its decoded text, controls as spaces."""
    if not _CONTROL.search(value) and "=?" not in value:
        return value  # the common case: plain text, nothing to decode
    decoded = decoded_header_value(name, _CONTROL.sub(" ", value))
    if not _CONTROL.search(decoded) and not _CONTROL.search(value):
        return value
    return _CONTROL.sub(" ", decoded).strip()


def refuse_injected_headers(message: Message) -> None:
    """Raise :class:`HeaderInjection` when a header, folded for the wire, holds
    a line break that is not a fold; checks the top-level headers of ``message``."""
    policy = message.policy
    for name, value in message.items():
        try:
            folded = policy.fold(name, value)
        except HeaderParseError as exc:  # the email package saw the embedded header itself
            raise HeaderInjection(
                f"the {name} header would inject a header line once encoded; message refused"
            ) from exc
        body = folded.rstrip("\r\n").replace("\r\n", "\n")
        if _LINE_BREAK_NOT_A_FOLD.search(body):
            raise HeaderInjection(
                f"the {name} header would inject a header line once encoded; message refused"
            )


# -- folding that keeps the text --------------------------------------------------------


def faithful_fold(name: str, value: str, folded: str, policy: email.policy.Policy) -> str:
    """``folded`` (``value`` folded by ``policy``) if it reads back as ``value``,
    else ``value`` written by the legacy ``email.header.Header``.

    The modern policy's folder (CPython 3.12 and 3.13.0) can lose or move the
    space between an ASCII word and a run of encoded words where it folds:
    ``… C-2002 — expédiée`` was read back as ``… C-2002  —expédiée`` by every
    mail client (``tests/channels/test_email_bytes.py``: 116 of 3,000 random
    mixed-script subjects). The legacy class writes the whole value as encoded
    words, which keeps every space; it is used only where the policy's line
    would change the text, so every other header stays byte for byte what
    Django writes."""
    if reads_back(name, folded) == value:
        return folded
    encoded = email.header.Header(
        value, "utf-8", maxlinelen=policy.max_line_length or 78, header_name=name
    ).encode(linesep=policy.linesep)
    legacy = f"{name}: {encoded}{policy.linesep}"
    return legacy if reads_back(name, legacy) == value else folded


def reads_back(name: str, folded: str) -> str:
    """The text a reader gets from one folded header line (``Name: value`` + CRLF)."""
    raw = folded.partition(":")[2].lstrip(" \t").rstrip("\r\n")
    raw = re.sub(r"\r?\n(?=[ \t])", "", raw)  # unfold
    try:
        return str(email.policy.default.header_factory(name, raw))
    except Exception:  # unreadable: never equal to a value, so the other form is tried
        return "\x00"


class FaithfulHeader(UnstructuredHeader):
    """A text header that folds with :func:`faithful_fold`."""

    def fold(self, *, policy):
        return faithful_fold(self.name, str(self), super().fold(policy=policy), policy)


class FaithfulUniqueHeader(FaithfulHeader):
    """``Subject``: a message holds one (``UniqueUnstructuredHeader``'s rule)."""

    max_count = 1


def faithful_registry() -> HeaderRegistry:
    """The standard header registry, with text headers folded faithfully."""
    registry = HeaderRegistry(default_class=FaithfulHeader)
    registry.map_to_type("subject", FaithfulUniqueHeader)
    return registry
