"""How an order's total is made: lines, less any discount code, shipping, then VAT on both for
the destination.

The free-shipping threshold compares the subtotal AFTER the discount: what the shopper really
pays for the goods must reach it, so a code cannot tip a cart over the line it did not reach.
"""

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
    discount_cents: int = 0


def order_totals(subtotal_cents: int, method: ShippingMethod, country: str,
                 discount_cents: int = 0) -> Totals:
    """Totals with VAT on (subtotal - discount + shipping); the discount is net of VAT."""
    if not 0 <= discount_cents <= subtotal_cents:
        raise ValueError("a discount lies between nothing and the whole subtotal")
    goods = subtotal_cents - discount_cents
    shipping = method.price_for(goods)
    taxable = goods + shipping
    tax = vat_on(taxable, country)
    return Totals(subtotal_cents, shipping, vat_basis_points(country), tax, taxable + tax,
                  discount_cents)
