"""Money is an integer count of minor units plus an ISO 4217 currency; never a float.

Decimal appears only when an amount is shown to a person or a rate is applied.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

CURRENCY = "EUR"
_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£"}


def format_money(cents: int, currency: str = CURRENCY) -> str:
    """`1234, "EUR"` -> `€12.34`; negative amounts keep their sign in front."""
    amount = (Decimal(abs(cents)) / 100).quantize(Decimal("0.01"))
    sign = "-" if cents < 0 else ""
    symbol = _SYMBOLS.get(currency.upper())
    if symbol:
        return f"{sign}{symbol}{amount:,}"
    return f"{sign}{amount:,} {currency.upper()}"


def apply_rate(cents: int, basis_points: int) -> int:
    """`cents * basis_points / 10_000`, rounded half up to a whole cent."""
    exact = Decimal(cents) * Decimal(basis_points) / Decimal(10_000)
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))
