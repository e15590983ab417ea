"""Kinds of contact point and their addresses: which kinds can be added, how an
address is checked and stored, and how it is shown.

An address is stored normalised (a phone number in E.164 through
``notify.models.phone``, an email address with its domain lower-cased), so that a
suppression and a contact point for the same address always match.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

import phonenumbers
from django.contrib.auth.base_user import BaseUserManager
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator, validate_email

from channels.base import ChannelConfigurationError
from notify import conf
from notify.models import ContactPoint
from notify.models.phone import normalise_phone
from notify.preferences.devices import DEVICE_KINDS, describe_device, normalise_device
from notify.registry import describe

Kind = ContactPoint.Kind

SLACK_MEMBER = re.compile(r"^[UW][A-Z0-9]{6,20}$")

LABELS = {
    Kind.EMAIL: "Email address",
    Kind.PHONE: "Mobile number",
    Kind.SLACK: "Slack member ID",
    Kind.SLACK_WEBHOOK: "Slack webhook URL",
    Kind.TEAMS: "Teams webhook URL",
    Kind.DISCORD: "Discord webhook URL",
    Kind.WEBHOOK: "Webhook URL",
    Kind.APPRISE: "Apprise URL",
    Kind.WECOM: "WeCom robot webhook URL",
    Kind.DINGTALK: "DingTalk robot webhook URL",
    Kind.FEISHU: "Feishu/Lark robot webhook URL",
    Kind.FCM: "Mobile device (FCM)",
    Kind.APNS: "Apple device (APNs)",
    Kind.WEBPUSH: "Browser",
}
HINTS = {
    Kind.EMAIL: "We send a link to confirm it.",
    Kind.PHONE: "With the country code, e.g. +44 7911 123456. We text a code to confirm it.",
    Kind.SLACK: "In Slack: your profile, then More, then Copy member ID (e.g. U012AB3CD). "
    "We message a code to confirm it.",
    Kind.SLACK_WEBHOOK: "https://hooks.slack.com/services/… We post a code to confirm it.",
    Kind.TEAMS: "The https:// URL of a Teams workflow webhook. We post a code to confirm it.",
    Kind.DISCORD: "https://discord.com/api/webhooks/… We post a code to confirm it.",
    Kind.WEBHOOK: "An https:// URL that accepts signed JSON. We post a code to confirm it.",
    Kind.APPRISE: "An Apprise URL. We send a code to confirm it.",
    Kind.WECOM: "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=… "
    "We post a code to confirm it.",
    Kind.DINGTALK: "https://oapi.dingtalk.com/robot/send?access_token=…, and #secret=SEC… "
    "at the end if the robot signs. We post a code to confirm it.",
    Kind.FEISHU: "https://open.feishu.cn/open-apis/bot/v2/hook/…, and #secret=… at the end "
    "if the bot signs. We post a code to confirm it.",
}
# Group robots: (host, path prefix) their webhook URLs have (channels.robots).
ROBOT_URLS = {
    Kind.WECOM: ({"qyapi.weixin.qq.com"}, "/cgi-bin/webhook/send"),
    Kind.DINGTALK: ({"oapi.dingtalk.com"}, "/robot/send"),
    Kind.FEISHU: ({"open.feishu.cn", "open.larksuite.com"}, "/open-apis/bot/v2/hook/"),
}


def channel_for(kind: str) -> str | None:
    """The channel alias that sends to this kind of address ("sms" first for phones)."""
    aliases = list(conf.get("CHANNELS"))
    preferred = {Kind.PHONE: "sms", Kind.EMAIL: "email"}.get(kind)
    if preferred in aliases:
        aliases.remove(preferred)
        aliases.insert(0, preferred)
    for alias in aliases:
        try:
            if describe(alias)[0] == kind:
                return alias
        except ChannelConfigurationError:
            continue
    return None


def addable_kinds() -> list[str]:
    """Email always (verified through Django's mailers); other kinds when a
    configured channel sends to them (it also carries their codes). Devices
    register themselves (``notify.preferences.devices``), never by typing."""
    return [Kind.EMAIL] + [
        k for k in Kind.values if k != Kind.EMAIL and k not in DEVICE_KINDS and channel_for(k)
    ]


def display(point: ContactPoint) -> str:
    """The address as people read it: phone numbers grouped (+44 7911 123456),
    a browser by its push service, a device token by its first characters."""
    if point.kind in DEVICE_KINDS:
        return describe_device(point.kind, point.address)
    return readable(point.address) if point.kind == Kind.PHONE else point.address


def readable(address: str) -> str:
    """An E.164 number grouped for reading; anything else as it is."""
    if not (address.startswith("+") and address[1:].isdigit()):
        return address
    try:
        number = phonenumbers.parse(address, None)
    except phonenumbers.NumberParseException:
        return address
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def is_private_host(host: str) -> bool:
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not address.is_global


def normalise_url(kind: str, raw: str) -> str:
    """An https URL to a public host, of the shape the service expects.

    Only the literal host is checked here (no DNS lookup): a name that
    resolves to a private address must be refused where the request is made.
    """
    url = raw.strip()
    if kind == Kind.APPRISE:
        if not re.match(r"^[a-z][a-z0-9+.-]*://\S+$", url, re.IGNORECASE):
            raise ValidationError("must be an Apprise URL such as mailto://… or tgram://…")
        return url
    try:
        URLValidator(schemes=["https"])(url)
    except ValidationError:
        raise ValidationError("must be a full https:// URL") from None
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if is_private_host(host):
        raise ValidationError("must point to a public address, not a local or private one")
    if kind == Kind.SLACK_WEBHOOK and not (
        host == "hooks.slack.com" and parts.path.startswith("/services/")
    ):
        raise ValidationError(
            "must be a Slack incoming webhook URL (https://hooks.slack.com/services/…)"
        )
    if kind == Kind.DISCORD and not (
        host in {"discord.com", "discordapp.com", "ptb.discord.com", "canary.discord.com"}
        and parts.path.startswith("/api/webhooks/")
    ):
        raise ValidationError("must be a Discord webhook URL (https://discord.com/api/webhooks/…)")
    if kind == Kind.TEAMS and not host.endswith(
        (".webhook.office.com", ".logic.azure.com", ".powerplatform.com")
    ):
        raise ValidationError(
            "must be a Teams workflow webhook URL (…webhook.office.com or …logic.azure.com)"
        )
    if kind in ROBOT_URLS:
        hosts, path = ROBOT_URLS[kind]
        if host not in hosts or not parts.path.startswith(path):
            raise ValidationError(f"must be a {LABELS[kind]} (https://{min(hosts)}{path}…)")
    return url


def normalise(kind: str, raw: Any) -> str:
    """The address as stored, or ``ValidationError`` saying what is wrong."""
    if kind in DEVICE_KINDS:
        return normalise_device(kind, raw)
    if not isinstance(raw, str) or not raw.strip():
        raise ValidationError(f"enter the {LABELS.get(kind, 'address').lower()}")
    if len(raw.strip()) > 500:
        raise ValidationError("is too long (500 characters at most)")
    if kind == Kind.EMAIL:
        address = BaseUserManager.normalize_email(raw.strip())
        try:
            validate_email(address)
        except ValidationError:
            raise ValidationError(
                f"'{address[:80]}' is not an email address (like name@example.com)"
            ) from None
        return address
    if kind == Kind.PHONE:
        return normalise_phone(raw)
    if kind == Kind.SLACK:
        member = raw.strip().upper()
        if not SLACK_MEMBER.match(member):
            raise ValidationError("must be a Slack member ID like U012AB3CD (not a name)")
        return member
    return normalise_url(kind, raw)
