"""Opaque cursors for keyset pagination: the last row's sort value and a tie-breaking key,
as URL-safe base64 of a small JSON object. A cursor that does not decode, or that was made
for another sort, is refused with InvalidCursor (422), never a 500."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import date, datetime
from typing import Any

from conveyor.errors import DomainError


class InvalidCursor(DomainError):
    code = "invalid_cursor"


def invalid(reason: object) -> InvalidCursor:
    return InvalidCursor("This cursor is not valid for this list; start again without it.",
                         details={"reason": str(reason)})


def pack(raw: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(raw).encode()).decode().rstrip("=")


def unpack(cursor: str) -> dict[str, Any]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise invalid(exc) from None
    if not isinstance(raw, dict):
        raise invalid("not a cursor")
    return raw


def utc_time(value: object) -> datetime:
    """A cursor's time, which must carry its UTC offset."""
    moment = datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        raise ValueError("a time without a UTC offset")
    return moment


def encode_cursor(value: datetime | date | int, key: object) -> str:
    return pack({"v": value.isoformat() if isinstance(value, datetime | date) else value,
                 "k": str(key)})


def decode_cursor(cursor: str) -> tuple[Any, str]:
    """(value, key) of a cursor made by `encode_cursor`."""
    raw = unpack(cursor)
    try:
        return raw["v"], str(raw["k"])
    except KeyError as exc:
        raise invalid(exc) from None


def time_cursor(cursor: str) -> tuple[datetime, str]:
    """(time, key) of a cursor made by `encode_cursor(datetime, key)`."""
    value, key = decode_cursor(cursor)
    try:
        return utc_time(value), key
    except (ValueError, TypeError) as exc:
        raise invalid(exc) from None


def time_uuid_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """(time, row id) of a cursor made by `encode_cursor(datetime, uuid)`."""
    moment, key = time_cursor(cursor)
    return moment, uuid_key(key)


def uuid_key(key: str) -> uuid.UUID:
    try:
        return uuid.UUID(key)
    except ValueError as exc:
        raise invalid(exc) from None


def int_cursor(cursor: str) -> int:
    """A row id kept as a cursor's value."""
    value, _ = decode_cursor(cursor)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 2_147_483_647:
        raise invalid("not a row id")
    return value
