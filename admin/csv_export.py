"""CSV downloads: streamed a page at a time (memory stays flat whatever the number of rows),
with cells a spreadsheet program would run as a formula neutralised (CSV injection)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

# Reads the page after `cursor` (None: the first); returns its rows and the next cursor.
PageReader = Callable[[str | None], tuple[Iterable[Sequence[Any]], str | None]]


def csv_cell(value: Any) -> Any:
    """Times in ISO 8601, booleans as true/false, no formula (a quote goes before it)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value[:1] in FORMULA_STARTS:
        return "'" + value
    return value


def stream_csv(header: Sequence[str], read_page: PageReader) -> Iterator[str]:
    """The header, then every page's rows, one chunk of text per page."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(header)
    yield flush()
    cursor: str | None = None
    while True:
        rows, cursor = read_page(cursor)
        for row in rows:
            writer.writerow([csv_cell(value) for value in row])
        yield flush()
        if cursor is None:
            return
