"""Value added tax on goods shipped to a country: the destination's standard rate.

Prices in the catalogue are net; VAT is added at checkout for the shipping country
(EU one-stop-shop rules for distance sales). Exports outside the EU carry no VAT.
"""

from __future__ import annotations

from models.money import apply_rate

# Standard VAT rates in basis points (1900 = 19%), EU member states, 2025.
EU_VAT_BASIS_POINTS: dict[str, int] = {
    "AT": 2000, "BE": 2100, "BG": 2000, "CY": 1900, "CZ": 2100, "DE": 1900, "DK": 2500,
    "EE": 2400, "ES": 2100, "FI": 2550, "FR": 2000, "GR": 2400, "HR": 2500, "HU": 2700,
    "IE": 2300, "IT": 2200, "LT": 2100, "LU": 1700, "LV": 2100, "MT": 1800, "NL": 2100,
    "PL": 2300, "PT": 2300, "RO": 2100, "SE": 2500, "SI": 2200, "SK": 2300,
}  # fmt: skip


def vat_basis_points(country: str) -> int:
    return EU_VAT_BASIS_POINTS.get(country.upper(), 0)


def vat_on(net_cents: int, country: str) -> int:
    return apply_rate(net_cents, vat_basis_points(country))
