"""Email through Django's email API.

The channel's ``MAILER`` option names an entry of Django's ``MAILERS`` setting
(default ``"default"``), which decides the transport: Django's SMTP backend,
any django-anymail ESP, or the sandbox. One mailer instance (one SMTP session)
is opened per batch and reused for every message in it, through the backend
contract ``open`` / ``send_messages`` / ``close``.
"""

from __future__ import annotations

import re
import smtplib
import socket
from email.utils import make_msgid, parseaddr
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives, InvalidMailer, MailerDoesNotExist, mailers
from django.core.validators import validate_email

from .base import (
    Channel,
    ChannelConfigurationError,
    ChannelError,
    InvalidRecipient,
    OutgoingMessage,
    PermanentError,
    RefusedRecipient,
    SendResult,
    TransientError,
)
from .headers import HeaderInjection, neutralise_header_value, refuse_injected_headers
from .ratelimit import RATE_LIMIT_OPTIONS, throttle

try:  # anymail is a hard dependency, but keep the channel usable without it.
    from anymail.exceptions import AnymailAPIError, AnymailRecipientsRefused
except ImportError:  # pragma: no cover
    AnymailAPIError = AnymailRecipientsRefused = None


class EmailChannel(Channel):
    """Sends text + HTML alternatives; records the Message-ID or the ESP's id."""

    address_kind = "email"
    message_format = "email"
    accepted_options = frozenset({"MAILER", "FROM_EMAIL"}) | RATE_LIMIT_OPTIONS

    def __init__(self, alias: str, **options: Any):
        super().__init__(alias, **options)
        self.mailer = options.get("MAILER", "default")
        self.from_email = options.get("FROM_EMAIL")  # None: DEFAULT_FROM_EMAIL
        self.connection = None
        self.provider_name = provider_of(self.mailer)

    def open(self) -> None:
        if self.connection is None:
            try:
                self.connection = mailers[self.mailer]
            except (MailerDoesNotExist, InvalidMailer) as exc:
                raise ChannelConfigurationError(
                    f"email channel '{self.alias}': MAILERS['{self.mailer}'] is not usable: {exc}"
                ) from exc
        try:
            self.connection.open()
        except Exception as exc:
            self.connection = None
            raise classify_email_error(exc, self.provider_name) from exc

    def close(self) -> None:
        if self.connection is not None:
            try:
                self.connection.close()
            except Exception:  # noqa: S110 - a failed QUIT must not hide the outcome
                pass
            self.connection = None

    def send(self, message: OutgoingMessage) -> SendResult:
        try:
            validate_email(message.to)
        except ValidationError as exc:
            raise InvalidRecipient(
                f"not a valid email address: {message.to!r}", provider=self.provider_name
            ) from exc
        throttle(self)  # the RATE_LIMIT option, shared by every worker (channels.ratelimit)
        if self.connection is None:
            self.open()
        sender = parseaddr(self.from_email or settings.DEFAULT_FROM_EMAIL)[1]
        domain = sender.rpartition("@")[2] or None
        message_id = make_msgid(domain=domain)
        # Payload text reaches the subject and rule-set headers: decode any
        # RFC 2047 encoded words and neutralise line breaks before encoding
        # (channels.headers); CheckedEmail checks again after encoding.
        headers = {
            name: neutralise_header_value(name, str(value))
            for name, value in message.headers.items()
        }
        email = CheckedEmail(
            subject=neutralise_header_value("Subject", message.subject),
            body=message.text,
            from_email=self.from_email,
            to=[message.to],
            headers={"Message-ID": message_id, **headers},
        )
        if message.html:
            email.attach_alternative(message.html, "text/html")
        email.extra_headers.setdefault("X-Notify-Delivery", str(message.delivery_id))
        try:
            sent = self.connection.send_messages([email])
        except Exception as exc:
            if session_is_broken(exc):
                self.close()
            raise classify_email_error(exc, self.provider_name) from exc
        if not sent:
            raise TransientError("the email backend accepted nothing", provider=self.provider_name)
        status = getattr(email, "anymail_status", None)
        esp_id = getattr(status, "message_id", None) if status is not None else None
        return SendResult(provider=self.provider_name, message_id=str(esp_id or message_id))


class CheckedEmail(EmailMultiAlternatives):
    """An email whose MIME message, as the SMTP backend serialises it, is
    refused if a header would start a new header line (defence in depth
    against header injection, whatever the interpreter's email package does)."""

    def message(self, **kwargs: Any):
        msg = super().message(**kwargs)
        refuse_injected_headers(msg)
        return msg


def session_is_broken(exc: Exception) -> bool:
    """True when the SMTP session cannot carry the next message. smtplib's
    errors are OSErrors too, so a refusal (4xx/5xx answer) must be told apart
    from a lost connection: a refusal keeps the session."""
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return True
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code == 421  # the server is closing the channel
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return False
    if AnymailAPIError is not None and isinstance(exc, AnymailAPIError):
        # An ESP's HTTP answer, even an error, leaves the pooled connection usable;
        # only a request that got no answer (status_code None) needs a new session.
        return getattr(exc, "status_code", None) is None
    return isinstance(exc, OSError) and not isinstance(exc, smtplib.SMTPException)


def provider_of(mailer: str) -> str:
    """A short provider name from the mailer's backend path: ``smtp``,
    ``postmark``, ``sandbox``..."""
    backend = getattr(settings, "MAILERS", {}).get(mailer, {}).get("BACKEND", "smtp")
    parts = backend.split(".")
    return parts[-2] if len(parts) >= 2 else backend


def classify_email_error(exc: Exception, provider: str) -> Exception:
    """Map an SMTP or ESP exception to the channel error family."""
    if isinstance(exc, ChannelError):
        return exc
    if isinstance(exc, HeaderInjection):
        return PermanentError(str(exc), provider=provider, code="header_injection")
    if AnymailRecipientsRefused is not None and isinstance(exc, AnymailRecipientsRefused):
        return esp_refusal(exc, provider)
    if AnymailAPIError is not None and isinstance(exc, AnymailAPIError):
        status = getattr(exc, "status_code", None)
        if status is not None and (status == 429 or status >= 500):
            retry_after = _retry_after(getattr(exc, "response", None))
            return TransientError(
                str(exc), code=str(status), provider=provider, retry_after=retry_after
            )
        if status is None:  # no answer at all: network trouble
            return TransientError(str(exc), provider=provider)
        return PermanentError(str(exc), code=str(status), provider=provider)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        detail = "; ".join(
            f"{code} {msg.decode(errors='replace') if isinstance(msg, bytes) else msg}"
            for code, msg in exc.recipients.values()
        )
        if codes and all(400 <= code < 500 for code in codes):
            return TransientError(
                f"recipient deferred: {detail}", code=str(codes[0]), provider=provider
            )
        texts = [_text(msg) for _code, msg in exc.recipients.values()]
        if texts and all(address_status(text) for text in texts):
            return RefusedRecipient(
                f"recipient refused for good: {detail}",
                code=str(codes[0]),
                provider=provider,
                reason="hard_bounce",
            )
        return InvalidRecipient(
            f"recipient refused: {detail}", code=str(codes[0] if codes else ""), provider=provider
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        text = (
            exc.smtp_error.decode(errors="replace")
            if isinstance(exc.smtp_error, bytes)
            else str(exc.smtp_error)
        )
        if 400 <= exc.smtp_code < 500:
            return TransientError(
                f"{exc.smtp_code} {text}", code=str(exc.smtp_code), provider=provider
            )
        if exc.smtp_code >= 500 and address_status(text):
            return RefusedRecipient(
                f"{exc.smtp_code} {text}",
                code=str(exc.smtp_code),
                provider=provider,
                reason="hard_bounce",
            )
        return PermanentError(f"{exc.smtp_code} {text}", code=str(exc.smtp_code), provider=provider)
    if isinstance(exc, (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError)):
        return TransientError(f"SMTP connection lost: {exc}", provider=provider)
    if isinstance(exc, (ConnectionError, socket.timeout, TimeoutError, OSError)):
        return TransientError(f"cannot reach the mail server: {exc}", provider=provider)
    if isinstance(exc, smtplib.SMTPException):
        return TransientError(str(exc), provider=provider)
    return PermanentError(f"{type(exc).__name__}: {exc}", provider=provider)


# RFC 3463 / RFC 7505 enhanced status codes that say the address itself is
# unusable, for good: bad mailbox (5.1.1), bad address syntax (5.1.3), mailbox
# moved with no forwarding (5.1.6), the domain accepts no mail (null MX, 5.1.10).
UNUSABLE_ADDRESS = re.compile(r"^\s*(5\.1\.(?:1|3|6|10))(?!\d)")

# Anymail's per-recipient send statuses that refuse the address for good, and
# the suppression reason each stands for: "rejected" is an address the ESP
# will not send to (Postmark 406 "inactive recipient": it hard-bounced or
# complained), "invalid" one it finds malformed (Postmark 300 "Invalid 'To'").
ESP_REFUSALS = {"rejected": "hard_bounce", "invalid": "invalid"}


def address_status(text: str) -> str:
    """The enhanced status code of an SMTP answer that says the address is
    unusable for good (``"5.1.1"``...), else ``""``."""
    match = UNUSABLE_ADDRESS.match(text or "")
    return match.group(1) if match else ""


def esp_refusal(exc: Exception, provider: str) -> ChannelError:
    """Every recipient was refused by the ESP: suppressed when anymail says
    ``rejected`` or ``invalid`` for it."""
    status = getattr(getattr(exc, "email_message", None), "anymail_status", None)
    statuses = {
        info.status for info in (getattr(status, "recipients", None) or {}).values() if info
    }
    reasons = {ESP_REFUSALS.get(s, "") for s in statuses}
    if statuses and "" not in reasons:
        reason = "hard_bounce" if "hard_bounce" in reasons else "invalid"
        return RefusedRecipient(
            f"the ESP refuses the recipient ({', '.join(sorted(statuses))}): {exc}",
            code="recipients_refused",
            provider=provider,
            reason=reason,
        )
    return InvalidRecipient(str(exc), provider=provider, code="recipients_refused")


def _text(message: Any) -> str:
    return message.decode(errors="replace") if isinstance(message, bytes) else str(message)


def _retry_after(response: Any) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
