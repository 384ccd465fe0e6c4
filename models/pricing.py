"""How an order's total is made: lines, shipping, then VAT on both for the destination."""

from __future__ import annotations

from dataclasses import dataclass

from models.shipping import ShippingMethod
from models.tax import vat_basis_points, vat_on


@dataclass(frozen=True)
class Totals:
    subtotal_cents: int
    shipping_cents: int
    tax_rate_bps: int
    tax_cents: int
    total_cents: int


def order_totals(subtotal_cents: int, method: ShippingMethod, country: str) -> Totals:
    shipping = method.price_for(subtotal_cents)
    taxable = subtotal_cents + shipping
    tax = vat_on(taxable, country)
    return Totals(subtotal_cents, shipping, vat_basis_points(country), tax, taxable + tax)
