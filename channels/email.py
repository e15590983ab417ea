"""Email through Django's email API.

The channel's ``MAILER`` option names an entry of Django's ``MAILERS`` setting
(default ``"default"``), which decides the transport: Django's SMTP backend,
any django-anymail ESP, or the sandbox. One mailer instance (one SMTP session)
is opened per batch and reused for every message in it, through the backend
contract ``open`` / ``send_messages`` / ``close``. A worker keeps the instance
(and so its session) across batches (``notify.delivery.inflight``): a session
idle for more than ``SESSION_CHECK_AFTER`` seconds is checked with a ``NOOP``
before its next message and opened again if the server closed it meanwhile
(an idle time-out, a restart), so a dropped session costs no retry.

When the mailer is Django's own SMTP backend (not a subclass that changes how
it sends), the common message (text + HTML, ASCII addresses) is written as
bytes by ``channels.mimebytes`` and handed to the backend's open ``smtplib``
session with ``sendmail(from, [to], bytes)``: the same message Django would
write, without its per-header parsing and folding (see that module). Every
other mailer (any django-anymail ESP, the sandbox, locmem, a custom backend)
still receives a ``NotifyEmailMessage`` (an ``EmailMultiAlternatives``).

An SMTP mailer without a ``timeout`` of its own (Django's default waits for
ever) gets the channel's ``TIMEOUT`` option, 30 seconds unless set: a stalled
server ends in a time-out (retried), never a batch held for minutes.

Each mailer has a circuit breaker (:mod:`channels.breaker`; options
``FAILURE_RATE``, ``MINIMUM_CALLS``, ``WINDOW``, ``COOL_DOWN``, ``CACHE``): an SMTP server or ESP that
keeps failing (no connection, time-outs, 4xx/5xx temporary answers) gets no
request for the cool-down, then one trial. Inside a failover channel the
failover's own breakers decide instead.
"""

from __future__ import annotations

import email.policy
import functools
import re
import smtplib
import socket
import time
from email.utils import make_msgid, parseaddr
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives, InvalidMailer, MailerDoesNotExist, mailers
from django.core.mail.backends.smtp import EmailBackend as SmtpBackend
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
from .breaker import BREAKER_OPTIONS, CircuitBreaker, guarded
from .headers import (
    FaithfulHeader,
    HeaderInjection,
    faithful_registry,
    neutralise_header_value,
    refuse_injected_headers,
)
from .mimebytes import build_message
from .ratelimit import RATE_LIMIT_OPTIONS, throttle

try:  # anymail is a hard dependency, but keep the channel usable without it.
    from anymail.exceptions import AnymailAPIError, AnymailRecipientsRefused
except ImportError:  # pragma: no cover
    AnymailAPIError = AnymailRecipientsRefused = None


# Sends in flight per batch by default over SMTP or an ESP (notify.delivery.inflight).
EMAIL_CONCURRENCY = 8


class EmailChannel(Channel):
    """Sends text + HTML alternatives; records the Message-ID or the ESP's id."""

    address_kind = "email"
    message_format = "email"
    accepted_options = (
        frozenset({"MAILER", "FROM_EMAIL", "TIMEOUT"}) | RATE_LIMIT_OPTIONS | BREAKER_OPTIONS
    )

    def __init__(self, alias: str, **options: Any):
        super().__init__(alias, **options)
        self.mailer = options.get("MAILER", "default")
        self.from_email = options.get("FROM_EMAIL")  # None: DEFAULT_FROM_EMAIL
        self.connection = None
        self.provider_name = provider_of(self.mailer)
        # Seconds an SMTP server may take to answer, for a mailer that sets none
        # (Django's SMTP backend waits for ever by default: a stalled server
        # would hold the batch and its claim).
        self.timeout = float(options.get("TIMEOUT", DEFAULT_SMTP_TIMEOUT))
        self._envelope_from: tuple[str, str] | None = None  # (From header, prepared)
        self._used_at = 0.0  # time.monotonic() of the session's last command
        self.breaker: CircuitBreaker | None = CircuitBreaker.from_options(
            f"{alias}:{self.mailer}", options, f"email channel '{alias}'"
        )

    def open(self) -> None:
        if self.connection is None:
            try:
                self.connection = mailers[self.mailer]
            except (MailerDoesNotExist, InvalidMailer) as exc:
                raise ChannelConfigurationError(
                    f"email channel '{self.alias}': MAILERS['{self.mailer}'] is not usable: {exc}"
                ) from exc
            default_timeout(self.connection, self.timeout)
        try:
            self.connection.open()
        except Exception as exc:
            self.connection = None
            raise classify_email_error(exc, self.provider_name) from exc

    def default_concurrency(self) -> int:
        """8 sends in flight (8 SMTP sessions, or 8 ESP API calls) when the mailer
        is Django's SMTP backend or a django-anymail ESP; 1 for any other (the
        sandbox, locmem, a custom backend: not known to be safe side by side)."""
        try:
            mailer = mailers[self.mailer]
        except (MailerDoesNotExist, InvalidMailer):
            return 1
        if isinstance(mailer, SmtpBackend) or type(mailer).__module__.startswith("anymail."):
            return EMAIL_CONCURRENCY
        return 1

    def send_timeout(self) -> float | None:
        """Seconds one send may wait on the mailer (its own time-out, else ``TIMEOUT``)."""
        try:
            mailer = mailers[self.mailer]
        except (MailerDoesNotExist, InvalidMailer):
            return self.timeout
        default_timeout(mailer, self.timeout)
        return getattr(mailer, "timeout", self.timeout)

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
        return guarded(self.breaker, lambda: self.post(message), self.provider_name)

    def post(self, message: OutgoingMessage) -> SendResult:
        """Connect if needed and hand the message to the mailer."""
        if self.connection is not None and time.monotonic() - self._used_at > SESSION_CHECK_AFTER:
            self._check_session()
        if self.connection is None:
            self.open()
        self._used_at = time.monotonic()
        message_id = make_msgid(domain=msgid_domain(self.from_email or settings.DEFAULT_FROM_EMAIL))
        # Payload text reaches the subject and rule-set headers: decode any
        # RFC 2047 encoded words and neutralise line breaks before encoding
        # (channels.headers); NotifyEmailMessage checks again after encoding.
        headers = {
            name: neutralise_header_value(name, str(value))
            for name, value in message.headers.items()
        }
        headers = {"Message-ID": message_id, **headers}
        headers.setdefault("X-Notify-Delivery", message.delivery_ref)
        subject = neutralise_header_value("Subject", message.subject)
        if sends_bytes(self.connection):
            raw = self._fast_bytes(message, subject, headers)
            if raw is not None:
                self._send_bytes(message.to, raw)
                return SendResult(provider=self.provider_name, message_id=message_id)
        email = NotifyEmailMessage(
            subject=subject,
            body=message.text,
            from_email=self.from_email,
            to=[message.to],
            headers=headers,
        )
        if message.html:
            email.attach_alternative(message.html, "text/html")
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

    def _check_session(self) -> None:
        """A ``NOOP`` on an SMTP session left idle: closed unless the server
        answers 250 (it dropped the session: the next message opens another)."""
        session = getattr(self.connection, "connection", None)
        if not isinstance(self.connection, SmtpBackend) or session is None:
            return
        try:
            alive = session.noop()[0] == 250
        except (smtplib.SMTPException, OSError):
            alive = False
        if not alive:
            self.close()

    def _fast_bytes(
        self, message: OutgoingMessage, subject: str, headers: dict[str, str]
    ) -> bytes | None:
        """The message as bytes (``channels.mimebytes``), or None: Django's path."""
        try:
            return build_message(
                from_email=self.from_email or settings.DEFAULT_FROM_EMAIL,
                to=message.to,
                subject=subject,
                text=message.text,
                html=message.html,
                headers=headers,
                use_localtime=settings.EMAIL_USE_LOCALTIME,
            )
        except HeaderInjection as exc:
            raise classify_email_error(exc, self.provider_name) from exc
        except Exception:  # whatever the bytes builder cannot write, Django's path decides
            return None

    def _send_bytes(self, to: str, raw: bytes) -> None:
        """``sendmail`` on the backend's open session, as its ``send_messages`` would."""
        backend = self.connection
        from_header = self.from_email or settings.DEFAULT_FROM_EMAIL
        if self._envelope_from is None or self._envelope_from[0] != from_header:
            self._envelope_from = (from_header, backend.prep_address(from_header))
        try:
            with backend._lock:
                if backend.connection is None:
                    backend.open()
                sendmail(backend.connection, self._envelope_from[1], to, raw)
        except Exception as exc:
            if session_is_broken(exc):
                self.close()
            raise classify_email_error(exc, self.provider_name) from exc


def sendmail(session: smtplib.SMTP, sender: str, to: str, raw: bytes) -> None:
    """``session.sendmail(sender, [to], raw)``, in two round trips instead of
    four when the server offers PIPELINING (RFC 2920; every common MTA does).

    ``MAIL``, ``RCPT`` and ``DATA`` go out in one write and their three answers
    are read back; the content follows the ``354``. Each refusal raises what
    ``smtplib`` raises for it (``SMTPSenderRefused``, ``SMTPRecipientsRefused``,
    ``SMTPDataError``), after the same ``RSET`` (or close, on a 421), so
    ``classify_email_error`` maps both paths alike. A ``354`` that came although
    an earlier command was refused is answered with an empty message's end
    (``.``), as RFC 2920 asks, and that transaction is reset."""
    session.ehlo_or_helo_if_needed()
    if not (session.does_esmtp and session.has_extn("pipelining")) or not (
        sender.isascii() and to.isascii()
    ):
        session.sendmail(sender, [to], raw)
        return
    size = f" size={len(raw)}" if session.has_extn("size") else ""
    session.send(
        f"mail from:{smtplib.quoteaddr(sender)}{size}\r\n"
        f"rcpt to:{smtplib.quoteaddr(to)}\r\ndata\r\n"
    )
    mail, rcpt, data = session.getreply(), session.getreply(), session.getreply()
    failed = mail[0] != 250 or rcpt[0] not in (250, 251)
    if failed and data[0] == 354:
        session.send(b".\r\n")
        session.getreply()
    if mail[0] != 250:
        _refused(session, mail[0])
        raise smtplib.SMTPSenderRefused(mail[0], mail[1], sender)
    if rcpt[0] not in (250, 251):
        _refused(session, rcpt[0])
        raise smtplib.SMTPRecipientsRefused({to: rcpt})
    if data[0] != 354:
        _refused(session, data[0])
        raise smtplib.SMTPDataError(*data)
    content = DOT_AT_LINE_START.sub(b"..", raw)
    if not content.endswith(b"\r\n"):
        content += b"\r\n"
    session.send(content + b".\r\n")
    code, answer = session.getreply()
    if code != 250:
        _refused(session, code)
        raise smtplib.SMTPDataError(code, answer)


# smtplib's own dot-stuffing (RFC 5321, 4.5.2): a line starting with "." gets another.
DOT_AT_LINE_START = re.compile(rb"(?m)^\.")


def _refused(session: smtplib.SMTP, code: int) -> None:
    """What ``smtplib.sendmail`` does after a refusal: close on 421, else ``RSET``."""
    if code == 421:
        session.close()
        return
    try:
        session.rset()
    except smtplib.SMTPServerDisconnected:  # the next command tells the caller
        pass


DEFAULT_SMTP_TIMEOUT = 30.0
# Seconds an SMTP session may sit idle before its next message checks it (NOOP).
SESSION_CHECK_AFTER = 1.0


@functools.lru_cache(maxsize=64)
def msgid_domain(from_email: str) -> str | None:
    """The domain of the sender's address, for its Message-IDs (parsed once per
    sender: ``parseaddr`` was a visible share of each send)."""
    return parseaddr(from_email)[1].rpartition("@")[2] or None


def default_timeout(backend: Any, seconds: float) -> None:
    """Give an SMTP backend with no time-out (``timeout`` None) ``seconds``."""
    if isinstance(backend, SmtpBackend) and backend.timeout is None:
        backend.timeout = seconds


def sends_bytes(backend: Any) -> bool:
    """True for Django's SMTP backend as shipped (or a subclass that changes
    neither how it sends nor how it prepares addresses), not failing silently."""
    cls = type(backend)
    return (
        isinstance(backend, SmtpBackend)
        and cls.send_messages is SmtpBackend.send_messages
        and cls._send is SmtpBackend._send
        and cls.prep_address is SmtpBackend.prep_address
        and not backend.fail_silently
    )


class ListHeader(FaithfulHeader):
    """``List-Unsubscribe`` (RFC 2369, RFC 8058) written the way the RFCs do:
    ``<https://…>, <mailto:…>``, never as RFC 2047 encoded words.

    The default policy folds a long unstructured value by encoding it
    (``=?utf-8?q?=3Chttps=3A…``), which no mailbox provider parses as a URL, so
    Gmail and Yahoo offer no one-click unsubscribe. This header folds only
    between ``<…>`` items; a single item longer than the line stays whole (RFC
    5322's hard limit is 998 characters; our links are far shorter). A value
    that is not plain ASCII ``<…>`` items is left to the default folding.
    """

    ITEMS = re.compile(r"\s*(<[\x21-\x3d\x3f-\x7e]+>)\s*(?:,|$)")

    def fold(self, *, policy):
        value = str(self)
        items = self.ITEMS.findall(value)
        if not items or ", ".join(items) != value.strip():
            return super().fold(policy=policy)
        return f"{self.name}: " + ("," + policy.linesep + " ").join(items) + policy.linesep


LIST_HEADERS = ("list-unsubscribe", "list-help", "list-subscribe", "list-archive")


def list_header_policy(policy: email.policy.EmailPolicy) -> email.policy.EmailPolicy:
    registry = faithful_registry()
    for name in LIST_HEADERS:
        registry.map_to_type(name, ListHeader)
    return policy.clone(header_factory=registry)


class NotifyEmailMessage(EmailMultiAlternatives):
    """Django's message, with RFC 2369 list headers that stay parseable, refused
    if a header would start a new header line once serialised (defence in depth
    against header injection, whatever the interpreter's email package does)."""

    def message(self, *, policy=email.policy.default):
        msg = super().message(policy=list_header_policy(policy))
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
    if isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError):
        # smtplib reports a reply that never came as "Connection unexpectedly
        # closed: timed out" (SMTPServerDisconnected from the socket's time-out).
        return TransientError(
            f"no answer from the mail server within the time-out: {exc}",
            code="timeout",
            provider=provider,
        )
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
