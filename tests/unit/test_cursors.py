"""Keyset cursors: whatever comes back from a client is either a cursor we made or refused."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from admin import cursors

MOMENT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
ROW = "0b7f6c7e-3f2a-4d7e-9a51-3c1f9e2d4a10"  # fixed: xdist workers must collect the same ids


def test_a_cursor_gives_back_what_it_was_made_of():
    row = uuid.UUID(ROW)
    assert cursors.time_uuid_cursor(cursors.encode_cursor(MOMENT, row)) == (MOMENT, row)
    assert cursors.int_cursor(cursors.encode_cursor(41, "run")) == 41


@pytest.mark.parametrize("cursor", [
    "not base64 at all!", cursors.pack({"v": 1}), "WzEsMl0",  # "[1,2]": JSON, not an object
    cursors.pack({"v": "2026-11-30T12:00:00", "k": ROW}),  # no UTC offset
    cursors.pack({"v": MOMENT.isoformat(), "k": "not-a-uuid"}),
], ids=["garbage", "no key", "a list", "naive time", "not a uuid"])
def test_anything_else_is_refused_as_an_invalid_cursor(cursor):
    with pytest.raises(cursors.InvalidCursor):
        cursors.time_uuid_cursor(cursor)


@pytest.mark.parametrize("value", [True, -1, 2**31, "7"])
def test_a_row_id_cursor_holds_a_row_id(value):
    with pytest.raises(cursors.InvalidCursor):
        cursors.int_cursor(cursors.pack({"v": value, "k": "run"}))
