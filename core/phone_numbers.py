"""Phone numbers: parsed, checked and normalised to E.164 with Google's ``phonenumbers`` library.

Every number that enters the API goes through :func:`normalize`: spaces, dashes and brackets are
accepted (``+1 (415) 555-0123``), a national number needs a region (``default_region="US"``), and the
stored form is always E.164 (``+14155550123``). A number is accepted when its length fits its country's
numbering plan (``phonenumbers.is_possible_number``); :func:`describe` also says whether the number is
assigned in that plan (``is_valid_number``), its region and its time zones, which campaigns use for
calling hours.
"""

from __future__ import annotations

from dataclasses import dataclass

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat
from phonenumbers import timezone as pn_timezone

UNKNOWN_ZONE = "Etc/Unknown"
_REASONS = {
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
    phonenumbers.ValidationResult.TOO_SHORT: "too short",
    phonenumbers.ValidationResult.TOO_LONG: "too long",
    phonenumbers.ValidationResult.INVALID_LENGTH: "wrong length for its country",
}


class InvalidPhoneNumber(ValueError):
    """The text is not a phone number; the message says why and is safe to return."""


@dataclass(frozen=True, slots=True)
class NumberInfo:
    e164: str
    region: str | None  # ISO 3166 code, None when the plan does not say (e.g. +1 555…)
    valid: bool  # assigned in the numbering plan, not just of a possible length
    time_zones: tuple[str, ...]  # IANA names; empty when unknown


def _parse(raw: str, default_region: str | None) -> phonenumbers.PhoneNumber:
    text = (raw or "").strip()
    if not text:
        raise InvalidPhoneNumber("empty phone number")
    if len(text) > 40:
        raise InvalidPhoneNumber("phone number is too long")
    try:
        number = phonenumbers.parse(text, (default_region or "").upper() or None)
    except NumberParseException as exc:
        if exc.error_type == NumberParseException.INVALID_COUNTRY_CODE and text.startswith("+"):
            raise InvalidPhoneNumber(f"{text!r} has an unknown country code") from None
        if exc.error_type == NumberParseException.INVALID_COUNTRY_CODE:
            raise InvalidPhoneNumber(
                f"{text!r} is not an international number: start it with + and the country code, "
                "e.g. +14155550123"
            ) from None
        raise InvalidPhoneNumber(f"{text!r} is not a phone number") from None
    reason = phonenumbers.is_possible_number_with_reason(number)
    if reason not in (
        phonenumbers.ValidationResult.IS_POSSIBLE,
        phonenumbers.ValidationResult.IS_POSSIBLE_LOCAL_ONLY,
    ):
        raise InvalidPhoneNumber(f"{text!r} is not a phone number ({_REASONS.get(reason, 'invalid')})")
    return number


def normalize(raw: str, default_region: str | None = None) -> str:
    """The number in E.164, or :class:`InvalidPhoneNumber` saying what is wrong."""
    return phonenumbers.format_number(_parse(raw, default_region), PhoneNumberFormat.E164)


def describe(raw: str, default_region: str | None = None) -> NumberInfo:
    number = _parse(raw, default_region)
    zones = tuple(z for z in pn_timezone.time_zones_for_number(number) if z != UNKNOWN_ZONE)
    return NumberInfo(
        e164=phonenumbers.format_number(number, PhoneNumberFormat.E164),
        region=phonenumbers.region_code_for_number(number),
        valid=phonenumbers.is_valid_number(number),
        time_zones=zones,
    )


def is_phone_number(raw: str) -> bool:
    try:
        _parse(raw, None)
    except InvalidPhoneNumber:
        return False
    return True
