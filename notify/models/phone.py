"""Phone numbers: parsed, checked and stored in E.164 (``+14155552671``).

Every phone address enters through :func:`normalise_phone` (contact points,
inbound SMS), so that a number is written one way everywhere and a suppression
added for ``+1 (415) 555-2671`` matches a contact point saved as
``+14155552671``.
"""

from __future__ import annotations

import phonenumbers
from django.core.exceptions import ValidationError
from phonenumbers import NumberParseException, PhoneNumberFormat, ValidationResult

_PARSE_REASONS = {
    NumberParseException.INVALID_COUNTRY_CODE: (
        "no known country code (write it in international form, starting with + and "
        "the country code, e.g. +44 20 7946 0958)"
    ),
    NumberParseException.NOT_A_NUMBER: "it does not look like a phone number",
    NumberParseException.TOO_SHORT_AFTER_IDD: "too short after the international prefix",
    NumberParseException.TOO_SHORT_NSN: "too short",
    NumberParseException.TOO_LONG: "too long",
}
_LENGTH_REASONS = {
    ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
    ValidationResult.TOO_SHORT: "too short",
    ValidationResult.TOO_LONG: "too long",
    ValidationResult.INVALID_LENGTH: "wrong number of digits for its country",
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "a local number: add the area and country code",
}


def normalise_phone(raw: str, region: str | None = None) -> str:
    """Return ``raw`` in E.164, or raise ``ValidationError`` saying why not.

    ``region`` (ISO 3166 code such as ``"GB"``) lets national forms like
    ``020 7946 0958`` through; without it a number must start with ``+`` and
    its country code.
    """
    text = (raw or "").strip()
    if not text:
        raise ValidationError("A phone number is required.", code="required")
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException as exc:
        raise _invalid(text, _PARSE_REASONS.get(exc.error_type, str(exc))) from exc
    if number.extension:
        raise _invalid(text, "an extension cannot receive text messages")
    if not phonenumbers.is_valid_number(number):
        possible = phonenumbers.is_possible_number_with_reason(number)
        reason = _LENGTH_REASONS.get(possible, "no such number is in service in its country")
        raise _invalid(text, reason)
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


def is_e164(value: str) -> bool:
    """True when ``value`` is already a valid number written in E.164."""
    try:
        return normalise_phone(value) == value
    except ValidationError:
        return False


def _invalid(text: str, reason: str) -> ValidationError:
    return ValidationError(
        "'%(value)s' is not a valid phone number: %(reason)s.",
        code="invalid_phone",
        params={"value": text, "reason": reason},
    )
