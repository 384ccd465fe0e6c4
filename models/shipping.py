"""Shipping methods offered at checkout, with their prices (net of VAT)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ShippingMethod:
    code: str
    name: str
    price_cents: int
    days: str
    free_from_cents: int | None = None

    def price_for(self, subtotal_cents: int) -> int:
        if self.free_from_cents is not None and subtotal_cents >= self.free_from_cents:
            return 0
        return self.price_cents


SHIPPING_METHODS: tuple[ShippingMethod, ...] = (
    ShippingMethod("standard", "Standard delivery", 490, "3-5 working days", 7500),
    ShippingMethod("express", "Express delivery", 1290, "1-2 working days"),
)
DEFAULT_SHIPPING = SHIPPING_METHODS[0]


def shipping_method(code: str) -> ShippingMethod | None:
    return next((m for m in SHIPPING_METHODS if m.code == code), None)
