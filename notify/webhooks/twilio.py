"""Twilio's webhooks: message status callbacks and inbound SMS (STOP / START).

``POST /webhooks/twilio/status``
    Twilio posts each status change of a message we sent (``StatusCallback``):
    ``MessageSid``, ``MessageStatus`` and, when it went wrong, ``ErrorCode``.
    The status is mapped through ``TwilioSmsChannel.STATUS_MAP`` and applied
    with ``notify.outbox.status_reports.apply_status``; an undelivered or failed message with
    error 21610 (the recipient had replied STOP) also suppresses the number.

``POST /webhooks/twilio/inbound``
    Twilio posts every SMS sent to our number. Opt-out keywords (STOP,
    STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, REVOKE, OPTOUT) suppress the
    sender's number; opt-in keywords (START, YES, UNSTOP) lift that
    suppression (an SMS STOP only, never a hard bounce or an ops decision);
    HELP and INFO change nothing. The answer is an empty TwiML ``<Response/>``:
    Twilio itself sends the standard STOP / START / HELP replies.

Both check ``X-Twilio-Signature`` with the SDK's ``RequestValidator`` and the
auth token of the Twilio channel(s) in ``NOTIFY["CHANNELS"]``: a missing or
forged signature is a 403 and changes nothing. With no Twilio channel
configured (no auth token to check against) both are closed: a 403 that says
what to set. Twilio signs the URL it called,
which behind a proxy or load balancer is not what Django sees
(``request.build_absolute_uri`` gives the internal host and scheme). The URL
is therefore rebuilt from ``NOTIFY["SITE_URL"]`` (the public base URL of this
service, as configured in Twilio) plus the request's path and query; the URL
Django sees is accepted too, for deployments without a proxy.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseForbidden
from django.http.multipartparser import MultiPartParserError
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from channels.base import ChannelConfigurationError
from channels.sms import TwilioSmsChannel
from notify import conf
from notify.models import Suppression
from notify.models.phone import normalise_phone
from notify.outbox.status_reports import StatusReport, apply_status
from notify.preferences.suppressions import lift, suppress
from notify.registry import channel_class

log = logging.getLogger("notify.webhooks.twilio")

PROVIDER = "twilio"
SIGNATURE_HEADER = "X-Twilio-Signature"
STOP_CODE = "21610"
CLOSED = (
    "This webhook is closed: no Twilio channel with ACCOUNT_SID and AUTH_TOKEN is configured "
    "in NOTIFY['CHANNELS']. Set TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_FROM."
)  # "Attempt to send to unsubscribed recipient"

# Twilio's default opt-out / opt-in / help keywords (matched whole, any case).
OPT_OUT_KEYWORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
OPT_IN_KEYWORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_KEYWORDS = frozenset({"HELP", "INFO"})

# Twilio's delivery error codes seen in status callbacks, for the record.
DELIVERY_ERRORS = {
    "21610": "the recipient replied STOP (unsubscribed)",
    "21614": "not a mobile number",
    "30003": "unreachable destination handset",
    "30004": "message blocked",
    "30005": "unknown destination handset",
    "30006": "landline or unreachable carrier",
    "30007": "message filtered by the carrier",
    "30008": "unknown error",
}


@csrf_exempt
@require_POST
def status_callback(request: HttpRequest) -> HttpResponse:
    params = _form(request)
    if params is None:
        return HttpResponseBadRequest("Expected a form-encoded body.")
    if not any(_twilio_accounts()):
        return HttpResponseForbidden(CLOSED, content_type="text/plain")
    if not verify_signature(request, params):
        return HttpResponseForbidden("Missing or invalid X-Twilio-Signature.")
    sid = params.get("MessageSid") or params.get("SmsSid") or ""
    status = (params.get("MessageStatus") or params.get("SmsStatus") or "").strip().lower()
    missing = [
        name for name, value in (("MessageSid", sid), ("MessageStatus", status)) if not value
    ]
    if missing:
        return HttpResponseBadRequest(f"Missing field(s): {', '.join(missing)}.")
    error_code = (params.get("ErrorCode") or "").strip()
    # An unknown status (Twilio adds some) is recorded as it came and moves nothing.
    event_type = TwilioSmsChannel.STATUS_MAP.get(status, status)
    stopped = error_code == STOP_CODE and status in ("undelivered", "failed")
    detail = status
    if error_code:
        detail = f"{status}: Twilio error {error_code}"
        if error_code in DELIVERY_ERRORS:
            detail += f" ({DELIVERY_ERRORS[error_code]})"
    apply_status(
        StatusReport(
            provider=PROVIDER,
            event_type=event_type,
            message_id=sid,
            error_code=error_code,
            detail=detail,
            recipient=_phone(params.get("To", "")),
            suppress_reason=Suppression.Reason.SMS_STOP if stopped else "",
            suppress_kind="phone" if stopped else "",
            payload=_payload(params),
        )
    )
    return HttpResponse(status=204)


@csrf_exempt
@require_POST
def inbound_message(request: HttpRequest) -> HttpResponse:
    params = _form(request)
    if params is None:
        return HttpResponseBadRequest("Expected a form-encoded body.")
    if not any(_twilio_accounts()):
        return HttpResponseForbidden(CLOSED, content_type="text/plain")
    if not verify_signature(request, params):
        return HttpResponseForbidden("Missing or invalid X-Twilio-Signature.")
    sender = _phone(params.get("From", ""))
    if not sender or "Body" not in params:
        return HttpResponseBadRequest("Missing field(s): From and Body are required.")
    keyword = " ".join(params["Body"].split()).upper()
    # With Advanced Opt-Out, Twilio names the kind of keyword (custom ones too).
    kind = (params.get("OptOutType") or "").strip().upper()
    if kind == "STOP" or (not kind and keyword in OPT_OUT_KEYWORDS):
        suppress(
            "phone",
            sender,
            Suppression.Reason.SMS_STOP,
            source=PROVIDER,
            detail=f"replied {keyword!r} to {params.get('To', '')}",
        )
        log.info("SMS opt-out from %s (%s)", sender, keyword)
    elif kind == "START" or (not kind and keyword in OPT_IN_KEYWORDS):
        lifted = lift(
            "phone",
            sender,
            reason=f"replied {keyword!r}",
            only_reason=Suppression.Reason.SMS_STOP,
        )
        log.info("SMS opt-in from %s (%s): %d suppression(s) lifted", sender, keyword, lifted)
    # HELP / INFO and any other text: nothing to change.
    return HttpResponse(str(MessagingResponse()), content_type="text/xml")


def verify_signature(request: HttpRequest, params) -> bool:
    """True when ``X-Twilio-Signature`` was made with a configured auth token for
    the URL Twilio called (see the module docstring)."""
    signature = request.headers.get(SIGNATURE_HEADER, "")
    if not signature:
        return False
    tokens = auth_tokens(params.get("AccountSid", ""))
    if not tokens:
        log.warning(
            "Twilio webhook refused: no Twilio channel with ACCOUNT_SID and AUTH_TOKEN "
            "in NOTIFY['CHANNELS'] for account %r",
            params.get("AccountSid", ""),
        )
        return False
    for url in signed_urls(request):
        for token in tokens:
            if RequestValidator(token).validate(url, params, signature):
                return True
    return False


def signed_urls(request: HttpRequest) -> list[str]:
    """The URLs Twilio may have signed: the public one from SITE_URL, then the
    one Django sees."""
    site = (conf.get("SITE_URL") or "").rstrip("/")
    urls = [site + request.get_full_path_info()] if site else []
    seen = request.build_absolute_uri()
    if seen not in urls:
        urls.append(seen)
    return urls


def auth_tokens(account_sid: str) -> list[str]:
    """Auth tokens of the Twilio channels for ``account_sid`` (all of them when
    the request names no account)."""
    tokens = []
    for sid, token in _twilio_accounts():
        if not account_sid or sid == account_sid:
            tokens.append(token)
    return tokens


def _twilio_accounts() -> Iterable[tuple[str, str]]:
    for alias, config in conf.get("CHANNELS").items():
        try:
            cls = channel_class(alias)
        except ChannelConfigurationError:
            continue
        if not (isinstance(cls, type) and issubclass(cls, TwilioSmsChannel)):
            continue
        options = (config or {}).get("OPTIONS") or {}
        if options.get("ACCOUNT_SID") and options.get("AUTH_TOKEN"):
            yield options["ACCOUNT_SID"], options["AUTH_TOKEN"]


def _form(request: HttpRequest):
    """The posted form, or None when the body cannot be read as one."""
    if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return None
    try:
        return request.POST
    except MultiPartParserError:
        return None


def _phone(raw: str) -> str:
    """E.164 when it is a valid number; short codes and sender ids as they came."""
    raw = (raw or "").strip()
    try:
        return normalise_phone(raw)
    except ValidationError:
        return raw


def _payload(params) -> dict[str, str]:
    return {key: params.get(key) for key in params}
