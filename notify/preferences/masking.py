"""Personal data in ops screens: masked unless the viewer may see it.

The rule preview, dry-run records and stored events show people's addresses,
payloads and rendered messages. Ops (the "ops" group, ``rules.ops``) write
rules and templates and need the shape of that data, not the data: they see
``a•••@example.com`` and ``+1•••••••71``, and links that would act for the
recipient (one-click unsubscribe, email verification) with their signed token
replaced, so a screen never hands out a working link. The permission
``notify.view_personal_data`` (superusers have every permission) unmasks.

Masking is by pattern (emails, phone numbers, the signed links): a payload
field holding a name or a street address is shown as it is, so keep personal
fields out of payloads, or under keys that name them (``MASKED_KEYS``).
"""

from __future__ import annotations

import re
from typing import Any

PERMISSION = "notify.view_personal_data"
DOT = "•"

EMAIL = re.compile(r"(?<![\w.+-])([\w.+-])[\w.+-]*@((?:[\w-]+\.)+[\w-]+)", re.UNICODE)
PHONE = re.compile(r"(?<![\w+])\+(\d)[\d\s().-]{6,}(\d{2})(?!\d)")
# The paths of links that act for the recipient without a sign-in: the signed
# part is replaced (the link then opens the "damaged link" page, changing nothing).
SIGNED_LINKS = re.compile(r"(/(?:unsubscribe|verify-email)/)[^/\s\"'<>]+(/?)")
# Payload keys whose value is personal whatever it looks like.
MASKED_KEYS = frozenset(
    {"email", "phone", "address", "name", "first_name", "last_name", "full_name", "ip"}
)


def can_see_personal_data(user: Any) -> bool:
    return bool(user is not None and user.has_perm(PERMISSION))


def mask_email(address: str) -> str:
    local, at, domain = address.partition("@")
    return f"{local[:1]}{DOT * 3}@{domain}" if at else mask_string(address)


def mask_phone(number: str) -> str:
    digits = re.sub(r"\D", "", number)
    return f"+{digits[:1]}{DOT * 7}{digits[-2:]}" if len(digits) >= 4 else DOT * 3


def mask_string(value: str) -> str:
    return f"{value[:1]}{DOT * 3}" if value else ""


def mask_address(address: str) -> str:
    """A contact address of any kind: email, phone, or another (webhook URLs,
    member ids: all but the first character)."""
    if not address:
        return address
    if "@" in address and not address.startswith(("http://", "https://")):
        return mask_email(address)
    if address.startswith("+"):
        return mask_phone(address)
    return mask_string(address)


def mask_text(text: str) -> str:
    """Emails and phone numbers masked, signed links disabled, in free text
    (rendered subjects, bodies, HTML)."""
    if not text:
        return text
    text = EMAIL.sub(lambda m: f"{m.group(1)}{DOT * 3}@{m.group(2)}", text)
    text = PHONE.sub(lambda m: f"+{m.group(1)}{DOT * 7}{m.group(2)}", text)
    return SIGNED_LINKS.sub(lambda m: f"{m.group(1)}{DOT * 3}{m.group(2)}", text)


def mask_data(value: Any, key: str = "") -> Any:
    """A JSON value (a payload, a stored record) with personal data masked."""
    if isinstance(value, dict):
        return {k: mask_data(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_data(v, key) for v in value]
    if isinstance(value, str):
        if key.lower() in MASKED_KEYS:
            return mask_address(value)
        return mask_text(value)
    return value
