"""A local HTTP server speaking enough of Twilio's REST API for the real SDK,
and signed webhook requests for our Twilio views.

The API side (``TwilioPeer``, on the shared :class:`tests.peers.http.HttpPeer`):

* ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` with HTTP Basic
  auth (``AccountSid:AuthToken``; anything else gets Twilio's ``401`` with code
  20003) and the form fields ``To``, ``From`` or ``MessagingServiceSid``,
  ``Body`` and ``StatusCallback``. A good request gets ``201`` and Twilio's JSON
  message resource (``sid`` = ``SM`` + 32 hex digits, ``status`` ``queued``,
  ``num_segments``...). Missing or malformed fields get the error Twilio gives
  (21604, 21602, 21211, 21212...).

WhatsApp on the same endpoint: ``To`` and ``From`` as ``whatsapp:+…`` (a
mixed pair gets 21910); ``ContentSid`` + ``ContentVariables`` (a JSON object)
send an approved template registered with ``add_content(text)`` (another
sid gets 50526, variables that are not a JSON object of non-empty strings
21656, variables without a sid 21654); ``close_session(number)`` makes
free-form WhatsApp messages to that number fail with 63016 (outside the
24-hour window) while templates still go through.

Misbehaviour, as Twilio does it: ``refuse(number, code)`` answers one number
with a Twilio JSON error (``{"code", "message", "more_info", "status"}``),
``unsubscribe(number)`` is 21610 (the recipient replied STOP),
``rate_limit_next(n, retry_after)`` is ``429``/20429 with ``Retry-After``,
``server_error_next(n)`` a ``500``, plus the base peer's ``hang_next`` (answer
later than the client waits) and ``stop``/``start``.

The webhook side: ``status_params`` / ``inbound_params`` build the form bodies
Twilio posts (shaped after saved real callbacks), ``sign`` computes
``X-Twilio-Signature`` with the SDK's ``RequestValidator``, and
``TwilioWebhooks`` posts them to our views through Django's test client.

Fixtures: ``twilio_peer`` (a running peer), ``twilio_sms`` (the ``sms`` channel
pointed at the peer through ``TwilioSmsChannel``; returns the peer) and
``twilio_webhooks`` (a ``TwilioWebhooks`` for the configured account).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import pytest
from twilio.request_validator import RequestValidator

from channels.segments import count_segments
from tests.peers.http import HttpPeer, Reply, Request, running

ACCOUNT_SID = "AC" + "0f" * 16
AUTH_TOKEN = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
FROM_NUMBER = "+15005550006"
MESSAGES_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Messages\.json$")
E164 = re.compile(r"^\+[1-9]\d{1,14}$")
WHATSAPP = "whatsapp:"
CONTENT_SID = re.compile(r"^HX[0-9a-f]{32}$")
OUTSIDE_WINDOW = (
    "Failed to send freeform message because you are outside the allowed window. "
    "If you are using WhatsApp, please use a Message Template."
)


def twilio_error(code: int, message: str, status: int = 400) -> dict[str, Any]:
    """Twilio's JSON error body."""
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


@dataclass(frozen=True)
class TwilioMessage:
    """A message the peer accepted."""

    sid: str
    to: str
    from_: str
    messaging_service_sid: str
    body: str
    status_callback: str
    num_segments: int
    request: Request | None = field(default=None, repr=False)
    content_sid: str = ""
    content_variables: dict[str, str] = field(default_factory=dict)

    @property
    def whatsapp(self) -> bool:
        return self.to.startswith(WHATSAPP)


class TwilioPeer(HttpPeer):
    def __init__(self, account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN, **kwargs):
        super().__init__(**kwargs)
        self.account_sid = account_sid
        self.auth_token = auth_token
        self._refusals: dict[str, tuple[int, int, str]] = {}
        self._contents: dict[str, str] = {}  # approved content templates: sid -> text
        self._closed_sessions: set[str] = set()  # WhatsApp numbers outside the 24 h window
        self._messages: list[TwilioMessage] = []
        self._data_lock = threading.Lock()
        # Called with each accepted message before the API answers: Twilio's
        # first status callbacks can reach us before the send is recorded.
        self.on_accept: Callable[[TwilioMessage], None] | None = None
        self._accept_before_revoking: int | None = None

    # -- set-up -------------------------------------------------------------------

    def refuse(self, number: str, code: int = 21211, message: str = "", status: int = 400):
        """Answer every message to ``number`` with Twilio error ``code``."""
        message = message or f"The 'To' number {number} is not a valid phone number."
        with self._data_lock:
            self._refusals[number] = (status, code, message)

    def revoke_after(self, count: int) -> None:
        """Accept ``count`` more messages, then answer every request ``401``
        (20003), as when the auth token is rotated mid-batch."""
        with self._data_lock:
            self._accept_before_revoking = len(self._messages) + count

    def unsubscribe(self, number: str) -> None:
        """``number`` replied STOP: Twilio refuses it with 21610."""
        self.refuse(number, 21610, "Attempt to send to unsubscribed recipient")

    def add_content(self, text: str) -> str:
        """Approve a content template (``{{1}}``-style variables); return its ``HX…`` sid."""
        sid = "HX" + secrets.token_hex(16)
        with self._data_lock:
            self._contents[sid] = text
        return sid

    def close_session(self, number: str) -> None:
        """``number`` last wrote more than 24 h ago: free-form WhatsApp gets 63016."""
        with self._data_lock:
            self._closed_sessions.add(number.removeprefix(WHATSAPP))

    def resubscribe(self, number: str) -> None:
        with self._data_lock:
            self._refusals.pop(number, None)

    def rate_limit_next(self, count: int = 1, retry_after: float | str = 2) -> None:
        """Answer the next ``count`` requests ``429`` (code 20429) with ``Retry-After``."""
        self.fail_next(
            count,
            429,
            twilio_error(20429, "Too Many Requests", 429),
            headers={"Retry-After": str(retry_after)},
        )

    def server_error_next(self, count: int = 1) -> None:
        self.fail_next(count, 500, twilio_error(20500, "Internal Server Error", 500))

    def channel_options(self, **overrides: Any) -> dict[str, Any]:
        """``OPTIONS`` for ``channels.sms.TwilioSmsChannel`` talking to this peer."""
        return {
            "ACCOUNT_SID": self.account_sid,
            "AUTH_TOKEN": self.auth_token,
            "FROM": FROM_NUMBER,
            "STATUS_CALLBACK": "http://testserver/webhooks/twilio/status",
            "BASE_URL": self.base_url,
            "TIMEOUT": 5,
            **overrides,
        }

    def channel_config(self, **overrides: Any) -> dict[str, Any]:
        """A ``NOTIFY["CHANNELS"]`` entry for this peer."""
        return {
            "BACKEND": "channels.sms.TwilioSmsChannel",
            "OPTIONS": self.channel_options(**overrides),
        }

    # -- what the peer accepted ---------------------------------------------------------

    @property
    def messages(self) -> list[TwilioMessage]:
        with self._data_lock:
            return list(self._messages)

    def messages_to(self, number: str) -> list[TwilioMessage]:
        return [m for m in self.messages if m.to == number]

    # -- the API ------------------------------------------------------------------------

    def answer(self, request: Request) -> Reply:
        match = MESSAGES_PATH.match(request.path)
        if match is None or request.method != "POST":
            return Reply(404, twilio_error(20404, "The requested resource was not found", 404))
        with self._data_lock:
            revoked = (
                self._accept_before_revoking is not None
                and len(self._messages) >= self._accept_before_revoking
            )
        if revoked or match["account"] != self.account_sid or not self._authorised(request):
            return Reply(401, twilio_error(20003, "Authenticate", 401))
        form = request.form()
        to = form.get("To", "")
        sender = form.get("From", "")
        service = form.get("MessagingServiceSid", "")
        body = form.get("Body", "")
        content_sid = form.get("ContentSid", "")
        if not to:
            return Reply(400, twilio_error(21604, "A 'To' phone number is required."))
        if not sender and not service:
            return Reply(400, twilio_error(21603, "A 'From' phone number is required."))
        whatsapp = to.startswith(WHATSAPP)
        number = to.removeprefix(WHATSAPP)
        if sender and whatsapp != sender.startswith(WHATSAPP):
            return Reply(
                400,
                twilio_error(
                    21910,
                    "Invalid From and To pair. From and To should be of the same channel",
                ),
            )
        if sender and not E164.match(sender.removeprefix(WHATSAPP)):
            return Reply(400, twilio_error(21212, f"The 'From' number {sender} is not valid."))
        if content_sid or "ContentVariables" in form:
            rendered = self._render_content(content_sid, form.get("ContentVariables"))
            if isinstance(rendered, Reply):
                return rendered
            body = rendered
        elif not body:
            return Reply(400, twilio_error(21602, "Message body is required."))
        if not E164.match(number):
            return Reply(
                400, twilio_error(21211, f"The 'To' number {to} is not a valid phone number.")
            )
        with self._data_lock:
            refusal = self._refusals.get(number)
            outside = whatsapp and not content_sid and number in self._closed_sessions
        if refusal is not None:
            status, code, message = refusal
            return Reply(status, twilio_error(code, message, status))
        if outside:
            return Reply(400, twilio_error(63016, OUTSIDE_WINDOW))
        sid = "SM" + secrets.token_hex(16)
        segments = count_segments(body).count
        message = TwilioMessage(
            sid=sid,
            to=to,
            from_=sender,
            messaging_service_sid=service,
            body=body,
            status_callback=form.get("StatusCallback", ""),
            num_segments=segments,
            request=request,
            content_sid=content_sid,
            content_variables=json.loads(form.get("ContentVariables") or "{}"),
        )
        with self._data_lock:
            self._messages.append(message)
        if self.on_accept is not None:
            self.on_accept(message)
        return Reply(201, self.resource(message))

    def _render_content(self, sid: str, variables: str | None) -> str | Reply:
        """The approved template ``sid`` with ``variables`` (a JSON object), or Twilio's refusal."""
        if not sid:
            return Reply(
                400,
                twilio_error(
                    21654, "A ContentSid must be specified if ContentVariables are provided."
                ),
            )
        with self._data_lock:
            template = self._contents.get(sid)
        if template is None:  # malformed or not this account's
            return Reply(400, twilio_error(50526, "Invalid content SID"))
        try:
            values = json.loads(variables) if variables is not None else {}
        except ValueError:
            values = None
        if not isinstance(values, dict) or not all(
            isinstance(v, str) and v.strip() for v in values.values()
        ):
            return Reply(400, twilio_error(21656, "The ContentVariables Parameter is invalid"))
        return re.sub(
            r"\{\{\s*(\w+)\s*\}\}", lambda m: values.get(m.group(1), m.group(0)), template
        )

    def resource(self, message: TwilioMessage) -> dict[str, Any]:
        """Twilio's JSON message resource, as ``Messages.json`` answers a create."""
        now = format_datetime(datetime.now(UTC))
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{message.sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": message.body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": message.from_ or None,
            "messaging_service_sid": message.messaging_service_sid or None,
            "num_media": "0",
            "num_segments": str(message.num_segments),
            "price": None,
            "price_unit": "USD",
            "sid": message.sid,
            "status": "queued" if message.from_ else "accepted",
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": message.to,
            "uri": f"{uri}.json",
        }

    def _authorised(self, request: Request) -> bool:
        scheme, _, encoded = request.header("Authorization").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return False
        return user == self.account_sid and password == self.auth_token


# -- webhooks: what Twilio posts to us ----------------------------------------------------


def status_params(
    sid: str,
    status: str,
    *,
    to: str = "+14155552671",
    from_: str = FROM_NUMBER,
    error_code: str | int | None = None,
    account_sid: str = ACCOUNT_SID,
) -> dict[str, str]:
    """A message status callback's form fields, shaped after a real one."""
    params = {
        "SmsSid": sid,
        "SmsStatus": status,
        "MessageStatus": status,
        "To": to,
        "MessageSid": sid,
        "AccountSid": account_sid,
        "From": from_,
        "ApiVersion": "2010-04-01",
    }
    if error_code is not None:
        params["ErrorCode"] = str(error_code)
    return params


def inbound_params(
    from_: str,
    body: str,
    *,
    to: str = FROM_NUMBER,
    account_sid: str = ACCOUNT_SID,
    **extra: str,
) -> dict[str, str]:
    """An incoming SMS's form fields, shaped after a real one."""
    sid = "SM" + secrets.token_hex(16)
    return {
        "ToCountry": "US",
        "ToState": "CA",
        "SmsMessageSid": sid,
        "NumMedia": "0",
        "ToCity": "",
        "FromZip": "",
        "SmsSid": sid,
        "FromState": "",
        "SmsStatus": "received",
        "FromCity": "",
        "Body": body,
        "FromCountry": "US",
        "To": to,
        "MessagingServiceSid": "",
        "ToZip": "",
        "NumSegments": "1",
        "MessageSid": sid,
        "AccountSid": account_sid,
        "From": from_,
        "ApiVersion": "2010-04-01",
        **extra,
    }


def sign(url: str, params: dict[str, str], auth_token: str = AUTH_TOKEN) -> str:
    """``X-Twilio-Signature`` for a POST of ``params`` to ``url``, as Twilio computes it."""
    return RequestValidator(auth_token).compute_signature(url, params)


class TwilioWebhooks:
    """Posts Twilio's webhook requests to our views through Django's test client.

    Signed for ``http://testserver`` + the path unless ``public_url`` says
    where Twilio called (a proxy in front of us).
    """

    STATUS_PATH = "/webhooks/twilio/status"
    INBOUND_PATH = "/webhooks/twilio/inbound"

    def __init__(self, client, auth_token: str = AUTH_TOKEN):
        self.client = client
        self.auth_token = auth_token

    def post(
        self,
        path: str,
        params: dict[str, str],
        *,
        signature: str | None = None,
        public_url: str | None = None,
        signed: bool = True,
    ):
        headers = {}
        if signed:
            url = public_url or f"http://testserver{path}"
            headers["X-Twilio-Signature"] = signature or sign(url, params, self.auth_token)
        return self.client.post(path, params, headers=headers)

    def status(self, sid: str, status: str, **kwargs: Any):
        post_kwargs = {
            k: kwargs.pop(k) for k in ("signature", "public_url", "signed") if k in kwargs
        }
        return self.post(self.STATUS_PATH, status_params(sid, status, **kwargs), **post_kwargs)

    def inbound(self, from_: str, body: str, **kwargs: Any):
        post_kwargs = {
            k: kwargs.pop(k) for k in ("signature", "public_url", "signed") if k in kwargs
        }
        return self.post(self.INBOUND_PATH, inbound_params(from_, body, **kwargs), **post_kwargs)


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def twilio_peer() -> Iterator[TwilioPeer]:
    """A running Twilio API peer on a free port; stopped after the test."""
    yield from running(TwilioPeer)


@pytest.fixture
def twilio_sms(settings, twilio_peer: TwilioPeer) -> TwilioPeer:
    """The ``sms`` channel sends through ``TwilioSmsChannel`` to the peer."""
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {**settings.NOTIFY["CHANNELS"], "sms": twilio_peer.channel_config()},
    }
    return twilio_peer


@pytest.fixture
def twilio_webhooks(client, twilio_sms: TwilioPeer) -> TwilioWebhooks:
    """Signed Twilio webhook posts to our views (the account is configured)."""
    return TwilioWebhooks(client, twilio_sms.auth_token)
