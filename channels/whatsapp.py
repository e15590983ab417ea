"""WhatsApp through Twilio's Messaging API, on the same account as SMS.

:class:`TwilioWhatsAppChannel` is :class:`channels.sms.TwilioSmsChannel` with
``whatsapp:`` addresses: the contact point is the user's phone number (kind
``phone``, E.164), and both ``To`` and ``From`` go to Twilio as
``whatsapp:+…``. It takes the SMS channel's options (``ACCOUNT_SID``,
``AUTH_TOKEN``, ``FROM`` — the WhatsApp sender, with or without ``whatsapp:``
— or ``MESSAGING_SERVICE_SID``, ``STATUS_CALLBACK``, ``BASE_URL``,
``TIMEOUT``) and two of its own:

``CONTENT_SID``
    An approved WhatsApp content template (``HX`` + 32 hex digits). When set,
    every message is sent as that template (``ContentSid`` +
    ``ContentVariables``, no ``Body``), which WhatsApp delivers at any time.
``CONTENT_VARIABLES``
    Which part of the rendered message fills each template variable, e.g.
    ``{"1": "title", "2": "body", "3": "url"}`` (default ``{"1": "text"}``).
    Parts: ``text`` (the whole ``sms`` part), ``title`` (its first line, or the
    subject), ``body`` (the rest), ``subject``, ``url``. WhatsApp refuses an
    empty variable, so an empty part is sent as "-".

The 24-hour rule: WhatsApp lets a business send free-form text only within 24
hours of the user's last message to it; outside that window a message must be
an approved template. Without ``CONTENT_SID`` messages go free-form, and when
Twilio refuses one with error 63016 ("outside the allowed window") the
delivery fails with a :class:`PermanentError` that says so and what to
configure. (Twilio may also report 63016 later, in the status callback.)
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

from twilio.base.exceptions import TwilioRestException, TwilioServiceException

from .base import (
    ChannelConfigurationError,
    InvalidRecipient,
    OutgoingMessage,
    PermanentError,
    SendResult,
    TransientError,
)
from .chat import split_first_line
from .sms import E164, TwilioSmsChannel, _int

WHATSAPP = "whatsapp:"
CONTENT_SID = re.compile(r"^HX[0-9a-f]{32}$")
PARTS = ("text", "title", "body", "subject", "url")
BODY_LIMIT = 1600  # characters of a WhatsApp message through Twilio
OUTSIDE_SESSION = 63016


def message_parts(message: OutgoingMessage) -> dict[str, str]:
    """The parts a template variable can take (see ``CONTENT_VARIABLES``)."""
    text = message.text.strip()
    if message.subject.strip():
        title, body = message.subject.strip(), text
    else:
        title, body = split_first_line(text)
    url = message.extra.get("url")
    return {
        "text": text,
        "title": title,
        "body": body,
        "subject": message.subject.strip(),
        "url": url if isinstance(url, str) else "",
    }


class TwilioWhatsAppChannel(TwilioSmsChannel):
    """Sends ``message.text`` (or the configured template) on WhatsApp to ``message.to``."""

    label = "Twilio WhatsApp"
    accepted_options = TwilioSmsChannel.accepted_options | {"CONTENT_SID", "CONTENT_VARIABLES"}
    address_prefix = WHATSAPP

    # Twilio's WhatsApp codes (twilio.com/docs/api/errors), on top of the SMS tables.
    INVALID_RECIPIENT_CODES: ClassVar[dict[int, str]] = {
        **TwilioSmsChannel.INVALID_RECIPIENT_CODES,
        63003: "the number is not on WhatsApp (Channel could not find To address)",
        63024: "invalid message recipient",
    }
    TRANSIENT_CODES: ClassVar[dict[int, str]] = {
        **TwilioSmsChannel.TRANSIENT_CODES,
        63018: "over the WhatsApp sender's rate limit",
    }
    CONFIGURATION_CODES: ClassVar[dict[int, str]] = {
        **TwilioSmsChannel.CONFIGURATION_CODES,
        63007: "'From' is not a WhatsApp sender of this account: check FROM",
        50526: "CONTENT_SID is not a content SID (HX + 32 hex digits): check CONTENT_SID",
    }

    def __init__(self, alias: str, **options: Any):
        super().__init__(alias, **options)
        self.from_number = self.from_number.strip().removeprefix(WHATSAPP)
        self.content_sid = (options.get("CONTENT_SID") or "").strip()
        self.content_variables: dict[str, str] = options.get("CONTENT_VARIABLES") or {"1": "text"}

    def check_options(self) -> None:
        super().check_options()
        where = f"NOTIFY['CHANNELS']['{self.alias}']['OPTIONS']"
        if self.content_sid and not CONTENT_SID.match(self.content_sid):
            raise ChannelConfigurationError(
                f"{self.label} channel '{self.alias}': {where}['CONTENT_SID'] = "
                f"{self.content_sid!r} is not a content template SID (HX + 32 hex digits)."
            )
        variables = self.content_variables
        if not isinstance(variables, dict) or not all(
            isinstance(part, str) and part in PARTS for part in variables.values()
        ):
            raise ChannelConfigurationError(
                f"{self.label} channel '{self.alias}': {where}['CONTENT_VARIABLES'] must map "
                f"template variables to parts of the message ({', '.join(PARTS)}), "
                f"e.g. {{'1': 'title', '2': 'url'}}; got {variables!r}."
            )

    def send(self, message: OutgoingMessage) -> SendResult:
        number = message.to.strip().removeprefix(WHATSAPP)
        if not E164.match(number):
            raise InvalidRecipient(
                f"not an E.164 phone number: {message.to!r}",
                code="invalid_number",
                provider=self.provider_name,
            )
        if self.content_sid:
            parts = message_parts(message)
            variables = {key: parts[part] or "-" for key, part in self.content_variables.items()}
            content = {
                "content_sid": self.content_sid,
                "content_variables": json.dumps(variables, ensure_ascii=False),
            }
        else:
            body = message.text.strip()
            if not body:
                raise PermanentError(
                    "the WhatsApp text is empty", code="empty_body", provider=self.provider_name
                )
            if len(body) > BODY_LIMIT:
                raise PermanentError(
                    f"the WhatsApp text is {len(body)} characters, over Twilio's {BODY_LIMIT}",
                    code="too_long",
                    provider=self.provider_name,
                )
            content = {"body": body}
        sent = self.create_message(to=WHATSAPP + number, **content)
        return SendResult(
            provider=self.provider_name,
            message_id=sent.sid or "",
            response={
                "sid": sent.sid,
                "status": sent.status,
                "to": sent.to,
                "from": sent.from_,
                "messaging_service_sid": sent.messaging_service_sid,
                "content_sid": self.content_sid,
            },
        )

    def classify(
        self, exc: TwilioRestException | TwilioServiceException
    ) -> TransientError | PermanentError:
        if _int(exc.code) != OUTSIDE_SESSION:
            return super().classify(exc)
        said = getattr(exc, "msg", None) or getattr(exc, "detail", None) or ""
        return PermanentError(
            "outside WhatsApp's 24-hour window: free-form messages can only be sent within "
            "24 h of the user's last message to us. To reach users at any time, configure an "
            f"approved content template SID in NOTIFY['CHANNELS']['{self.alias}']['OPTIONS']"
            f"['CONTENT_SID'] (and CONTENT_VARIABLES). Twilio said: {said}",
            code=str(OUTSIDE_SESSION),
            provider=self.provider_name,
            response={
                "status": int(exc.status or 0),
                "code": OUTSIDE_SESSION,
                "message": said,
                "more_info": f"https://www.twilio.com/docs/errors/{OUTSIDE_SESSION}",
            },
        )
