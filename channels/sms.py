"""SMS through Twilio's Programmable Messaging API, with the official SDK.

Options (``NOTIFY["CHANNELS"][alias]["OPTIONS"]``):

``ACCOUNT_SID``, ``AUTH_TOKEN``
    The account's credentials (required).
``FROM`` or ``MESSAGING_SERVICE_SID``
    The sender: a Twilio number in E.164, or a Messaging Service (one is required).
``STATUS_CALLBACK``
    Absolute URL of our ``/webhooks/twilio/status``; Twilio posts each status
    change of a message there. Empty: no status reports.
``BASE_URL``
    The API's base URL (default ``https://api.twilio.com``); tests point it at a
    local peer.
``MAX_SEGMENTS``
    Texts that would cost more parts than this are refused (default 10).
``TIMEOUT``
    Seconds to wait for Twilio's answer (default 10).

One ``twilio.rest.Client`` is made per ``open`` and reused for the batch: its
``TwilioHttpClient`` keeps a ``requests`` session, so the sends of a batch share
one pooled connection; ``close`` releases it.

Twilio's answers become the channel error family through the code tables on
:class:`TwilioSmsChannel`: refused numbers are :class:`InvalidRecipient`, a
recipient who replied STOP is :class:`Suppressed` (the dispatcher then adds the
number to the suppression list), rate limits, 5xx answers, lost connections and
time-outs are :class:`TransientError` (with ``retry_after`` from Twilio's
``Retry-After``), and refused credentials or a sender the account does not own
are a :class:`ChannelConfigurationError` that must reach an operator.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import requests
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from .base import (
    Channel,
    ChannelConfigurationError,
    InvalidRecipient,
    OutgoingMessage,
    PermanentError,
    ProviderRateLimited,
    SendResult,
    Suppressed,
    TransientError,
)
from .breaker import BREAKER_OPTIONS, CircuitBreaker, guarded
from .segments import count_segments

log = logging.getLogger("channels.sms")
E164 = re.compile(r"^\+[1-9]\d{1,14}$")
DEFAULT_BASE_URL = "https://api.twilio.com"


class RecordingHttpClient(TwilioHttpClient):
    """``TwilioHttpClient`` that keeps the last answer, so that the headers of an
    error (``Retry-After``) can be read: ``TwilioRestException`` drops them.

    The SDK logs ten INFO lines per request; one DEBUG line each way is enough.
    """

    last_response = None

    def __init__(self, timeout: float):
        super().__init__(timeout=timeout, logger=log)

    def log_request(self, kwargs: dict[str, Any]) -> None:
        log.debug("%s %s", kwargs["method"], kwargs["url"])

    def log_response(self, status_code: int, response: Any) -> None:
        log.debug("answered %s", status_code)

    def request(self, *args: Any, **kwargs: Any):
        self.last_response = None
        self.last_response = super().request(*args, **kwargs)
        return self.last_response

    def close(self) -> None:
        if self.session is not None:
            self.session.close()


class TwilioSmsChannel(Channel):
    """Sends ``message.text`` as one SMS to ``message.to`` (an E.164 number)."""

    address_kind = "phone"
    message_format = "sms"
    provider_name = "twilio"
    label: ClassVar[str] = "Twilio SMS"  # how errors name the channel
    address_prefix: ClassVar[str] = ""  # "whatsapp:" on the WhatsApp channel
    accepted_options = (
        frozenset(
            {
                "ACCOUNT_SID",
                "AUTH_TOKEN",
                "FROM",
                "MESSAGING_SERVICE_SID",
                "STATUS_CALLBACK",
                "BASE_URL",
                "MAX_SEGMENTS",
                "TIMEOUT",
                "EDGE",
                "REGION",
            }
        )
        | BREAKER_OPTIONS
    )

    # Twilio's message statuses -> notify.outbox.status_reports report types (string values of
    # the constants there: channels do not import the pipeline).
    STATUS_MAP: ClassVar[dict[str, str]] = {
        "accepted": "queued",
        "scheduled": "queued",
        "queued": "queued",
        "sending": "sent",
        "sent": "sent",
        "delivered": "delivered",
        "read": "delivered",
        "undelivered": "bounced",
        "failed": "failed",
        "canceled": "failed",
    }
    # Twilio error codes (https://www.twilio.com/docs/api/errors), by what they mean for us.
    INVALID_RECIPIENT_CODES: ClassVar[dict[int, str]] = {
        21211: "invalid 'To' phone number",
        21214: "'To' phone number cannot be reached",
        21217: "phone number does not appear to be valid",
        21401: "invalid phone number",
        21407: "this phone number type does not support SMS",
        21421: "phone number is invalid",
        21612: "'To' number is not currently reachable via SMS",
        21614: "'To' number is not a valid mobile number",
    }
    SUPPRESSED_CODES: ClassVar[dict[int, str]] = {
        21610: "the recipient replied STOP (unsubscribed)",
    }
    TRANSIENT_CODES: ClassVar[dict[int, str]] = {
        20429: "too many requests",
        21611: "the sender's queue is full",
        30001: "queue overflow",
    }
    CONFIGURATION_CODES: ClassVar[dict[int, str]] = {
        20003: "authentication failed: check ACCOUNT_SID and AUTH_TOKEN",
        20404: "the account was not found: check ACCOUNT_SID",
        21212: "invalid 'From' number: check FROM",
        21606: "'From' is not an SMS-capable number of this account: check FROM",
        21659: "'From' is not a Twilio number: check FROM",
        21660: "'From' does not belong to this account: check FROM",
    }

    def __init__(self, alias: str, **options: Any):
        super().__init__(alias, **options)
        self.account_sid = options.get("ACCOUNT_SID") or ""
        self.auth_token = options.get("AUTH_TOKEN") or ""
        self.from_number = options.get("FROM") or ""
        self.messaging_service_sid = options.get("MESSAGING_SERVICE_SID") or ""
        self.status_callback = options.get("STATUS_CALLBACK") or ""
        self.base_url = (options.get("BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.max_segments = int(options.get("MAX_SEGMENTS", 10))
        self.timeout = float(options.get("TIMEOUT", 10.0))
        self.client: Client | None = None
        self.http: RecordingHttpClient | None = None
        # One breaker for the account's API (channels.breaker): a Twilio that is
        # down gets MINIMUM_CALLS requests, then one trial per COOL_DOWN.
        self.breaker: CircuitBreaker | None = CircuitBreaker.from_options(
            f"{alias}:api", options, f"{self.label} channel '{alias}'"
        )

    # -- contract -------------------------------------------------------------------

    def open(self) -> None:
        if self.client is not None:
            return
        self.check_options()
        self.http = RecordingHttpClient(timeout=self.timeout)
        client = Client(
            username=self.account_sid,
            password=self.auth_token,
            account_sid=self.account_sid,
            http_client=self.http,
        )
        # Explicit, never from the process environment (the SDK reads
        # TWILIO_EDGE / TWILIO_REGION there and would rewrite BASE_URL's host).
        client.edge = self.options.get("EDGE")
        client.region = self.options.get("REGION")
        client.api.base_url = self.base_url
        self.client = client

    def close(self) -> None:
        http, self.http, self.client = self.http, None, None
        if http is not None:
            try:
                http.close()
            except Exception:  # noqa: S110 - closing must not hide the outcome
                pass

    def send(self, message: OutgoingMessage) -> SendResult:
        to = message.to.strip()
        if not E164.match(to):
            raise InvalidRecipient(
                f"not an E.164 phone number: {message.to!r}",
                code="invalid_number",
                provider=self.provider_name,
            )
        body = message.text
        if not body.strip():
            raise PermanentError(
                "the SMS text is empty", code="empty_body", provider=self.provider_name
            )
        segments = count_segments(body)
        if segments.count > self.max_segments:
            raise PermanentError(
                f"message would be {segments.count} segments, over the cap of {self.max_segments}",
                code="too_many_segments",
                provider=self.provider_name,
                response=segments.as_record(),
            )
        sms = self.create_message(to=to, body=body)
        return SendResult(
            provider=self.provider_name,
            message_id=sms.sid or "",
            response={
                "sid": sms.sid,
                "status": sms.status,
                "to": sms.to,
                "from": sms.from_,
                "messaging_service_sid": sms.messaging_service_sid,
                "num_segments": sms.num_segments,
                **segments.as_record(),
            },
        )

    def create_message(self, **params: Any) -> Any:
        """``messages.create`` from our sender, with Twilio's answer classified."""
        if self.client is None:
            self.open()
        assert self.client is not None
        if self.from_number:
            params["from_"] = self.address_prefix + self.from_number
        if self.messaging_service_sid:
            params["messaging_service_sid"] = self.messaging_service_sid
        if self.status_callback:
            params["status_callback"] = self.status_callback
        return guarded(self.breaker, lambda: self._create(params), self.provider_name)

    def _create(self, params: dict[str, Any]) -> Any:
        """One request to Twilio (behind the account's circuit breaker)."""
        assert self.client is not None
        try:
            return self.client.messages.create(**params)
        except (TwilioRestException, TwilioServiceException) as exc:
            raise self.classify(exc) from exc
        except requests.Timeout as exc:
            raise TransientError(
                f"Twilio did not answer within {self.timeout:g} s: {exc}",
                code="timeout",
                provider=self.provider_name,
            ) from exc
        except requests.RequestException as exc:
            raise TransientError(
                f"cannot reach Twilio at {self.base_url}: {exc}",
                code="connection",
                provider=self.provider_name,
            ) from exc

    # -- helpers --------------------------------------------------------------------

    def check_configuration(self) -> None:
        self.check_options()

    def check_options(self) -> None:
        """Raise a configuration error that says exactly what to set."""
        where = f"NOTIFY['CHANNELS']['{self.alias}']['OPTIONS']"
        missing = [name for name in ("ACCOUNT_SID", "AUTH_TOKEN") if not self.options.get(name)]
        if missing:
            raise ChannelConfigurationError(
                f"{self.label} channel '{self.alias}': set {' and '.join(missing)} in {where} "
                "(TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN in the environment)."
            )
        if not self.from_number and not self.messaging_service_sid:
            raise ChannelConfigurationError(
                f"{self.label} channel '{self.alias}': set FROM (an E.164 number) or "
                f"MESSAGING_SERVICE_SID in {where} (TWILIO_FROM in the environment)."
            )
        if self.from_number and not E164.match(self.from_number):
            raise ChannelConfigurationError(
                f"{self.label} channel '{self.alias}': {where}['FROM'] = {self.from_number!r} "
                "is not an E.164 number (e.g. +14155550100)."
            )

    def classify(
        self, exc: TwilioRestException | TwilioServiceException
    ) -> TransientError | PermanentError:
        """Map Twilio's error answer to the channel error family (or raise a
        configuration error, which no retry loop may swallow)."""
        status = int(exc.status or 0)
        code = _int(exc.code)
        text = (
            getattr(exc, "msg", None) or getattr(exc, "detail", None) or getattr(exc, "title", "")
        )
        detail = f"HTTP {status}: {text}"
        response = {
            "status": status,
            "code": code,
            "message": text,
            "more_info": f"https://www.twilio.com/docs/errors/{code}" if code else "",
        }
        kwargs = {"code": str(code or status), "provider": self.provider_name, "response": response}
        if code in self.CONFIGURATION_CODES or status == 401:
            reason = self.CONFIGURATION_CODES.get(code, "Twilio refused the credentials")
            raise ChannelConfigurationError(
                f"{self.label} channel '{self.alias}': {reason} "
                f"(NOTIFY['CHANNELS']['{self.alias}']['OPTIONS']). Twilio said: {detail}"
            ) from exc
        if code in self.SUPPRESSED_CODES:
            return Suppressed(detail, **kwargs)
        if code in self.INVALID_RECIPIENT_CODES:
            return InvalidRecipient(detail, **kwargs)
        if status == 429 or code == 20429:
            return ProviderRateLimited(detail, retry_after=self._retry_after(), **kwargs)
        if code in self.TRANSIENT_CODES or status >= 500:
            return TransientError(detail, retry_after=self._retry_after(), **kwargs)
        return PermanentError(detail, **kwargs)

    def _retry_after(self) -> float | None:
        """Seconds from the last answer's ``Retry-After`` (seconds or an HTTP date)."""
        response = self.http.last_response if self.http is not None else None
        headers = getattr(response, "headers", None) or {}
        value = headers.get("Retry-After")
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
