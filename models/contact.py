"""Rules for contact details and addresses, shared by checkout and screening.

Each `normalise_*` returns the canonical form or raises `InvalidField` with a message meant
for the shopper.
"""

from __future__ import annotations

import re
import unicodedata

import phonenumbers
import pycountry
from email_validator import EmailNotValidError, validate_email


class InvalidField(ValueError):
    pass


EU_COUNTRIES = (
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU",
    "IE", "IT", "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK",
)
SHIPPING_COUNTRIES: tuple[str, ...] = tuple(sorted([*EU_COUNTRIES, "GB", "CH", "NO", "IS"]))

# Postal code formats where known, matched after upper-casing and folding spaces.
POSTAL_CODE_PATTERNS: dict[str, str] = {
    "AT": r"\d{4}", "BE": r"\d{4}", "BG": r"\d{4}", "CH": r"\d{4}", "CY": r"\d{4}",
    "CZ": r"\d{3} ?\d{2}", "DE": r"\d{5}", "DK": r"\d{4}", "EE": r"\d{5}", "ES": r"\d{5}",
    "FI": r"\d{5}", "FR": r"\d{5}", "GB": r"[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}",
    "GR": r"\d{3} ?\d{2}", "HR": r"\d{5}", "HU": r"\d{4}", "IE": r"[A-Z]\d[\dW] ?[\dA-Z]{4}",
    "IS": r"\d{3}", "IT": r"\d{5}", "LT": r"(LT-)?\d{5}", "LU": r"(L-)?\d{4}",
    "LV": r"(LV-)?\d{4}", "MT": r"[A-Z]{3} ?\d{4}", "NL": r"\d{4} ?[A-Z]{2}", "NO": r"\d{4}",
    "PL": r"\d{2}-\d{3}", "PT": r"\d{4}-\d{3}", "RO": r"\d{6}", "SE": r"\d{3} ?\d{2}",
    "SI": r"\d{4}", "SK": r"\d{3} ?\d{2}",
}  # fmt: skip
POSTAL_CODE_EXAMPLES: dict[str, str] = {
    "DE": "10115", "NL": "1012 AB", "GB": "SW1A 1AA", "PL": "00-950", "PT": "1000-001",
    "IE": "D02 X285", "SE": "114 55", "CZ": "110 00", "MT": "VLT 1117",
}  # fmt: skip
# Where the canonical form has a space before the last N characters.
_SPACE_BEFORE_LAST = {"NL": 2, "GB": 3, "IE": 4, "CZ": 2, "SK": 2, "SE": 2, "GR": 2, "MT": 4}
_FORBIDDEN = re.compile(r"[<>{}\\]")


def country_name(code: str) -> str:
    country = pycountry.countries.get(alpha_2=code.upper())
    return country.name if country else code


def shipping_countries() -> list[tuple[str, str]]:
    """(code, name) pairs for the country select, sorted by name."""
    return sorted(((c, country_name(c)) for c in SHIPPING_COUNTRIES), key=lambda p: p[1])


def normalise_country(raw: str) -> str:
    code = raw.strip().upper()
    if not code:
        raise InvalidField("Choose the country we ship to.")
    if code not in SHIPPING_COUNTRIES:
        raise InvalidField("We do not ship to this country yet.")
    return code


def normalise_text(raw: str, *, what: str, min_len: int = 2, max_len: int = 200) -> str:
    value = " ".join(unicodedata.normalize("NFC", raw).split())
    if not value:
        raise InvalidField(f"Enter your {what}.")
    if any(unicodedata.category(ch).startswith("C") for ch in value):
        raise InvalidField(f"Your {what} contains characters we cannot print on a parcel.")
    if _FORBIDDEN.search(value):
        raise InvalidField(f"Your {what} cannot contain < > {{ }} or \\.")
    if len(value) < min_len:
        raise InvalidField(f"Your {what} looks too short.")
    if len(value) > max_len:
        raise InvalidField(f"Your {what} is too long (at most {max_len} characters).")
    return value


def normalise_email(raw: str) -> str:
    value = raw.strip()
    if not value:
        raise InvalidField("Enter your email address.")
    if len(value) > 254:
        raise InvalidField("This email address is too long.")
    try:
        result = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidField(f"This email address is not valid: {exc}") from None
    return str(result.normalized)


def normalise_phone(raw: str, country: str | None) -> str:
    """The number in E.164 (`+4930123456`); national numbers are read for `country`."""
    value = raw.strip()
    if not value:
        raise InvalidField("Enter a phone number, for the courier.")
    if len(value) > 32:
        raise InvalidField("This phone number is too long.")
    try:
        number = phonenumbers.parse(value, country or None)
    except phonenumbers.NumberParseException:
        raise InvalidField(
            "This does not look like a phone number. Include the country code, e.g. +49."
        ) from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidField("This phone number is not valid. Check the digits and country code.")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_postal_code(raw: str, country: str | None) -> str:
    value = " ".join(raw.upper().split())
    if not value:
        raise InvalidField("Enter your postal code.")
    if len(value) > 12:
        raise InvalidField("This postal code is too long.")
    pattern = POSTAL_CODE_PATTERNS.get(country or "")
    if pattern is None:
        if not re.fullmatch(r"[A-Z0-9 -]{2,12}", value):
            raise InvalidField("Postal codes have letters, digits, spaces or dashes only.")
        return value
    if not re.fullmatch(pattern, value):
        example = POSTAL_CODE_EXAMPLES.get(country or "")
        hint = f" (for example {example})" if example else ""
        raise InvalidField(f"This is not a postal code of {country_name(country or '')}{hint}.")
    if (last := _SPACE_BEFORE_LAST.get(country or "")) is not None:
        compact = value.replace(" ", "")
        value = f"{compact[:-last]} {compact[-last:]}"
    return value
