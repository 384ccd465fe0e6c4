"""Shapes the templates read: product cards and variant choices with live stock and prices."""

from __future__ import annotations

from dataclasses import dataclass

from models.catalog import Variant
from storefront.catalogue import Price, PriceList, ProductEntry


def availability_label(available: int, low_threshold: int) -> str:
    if available <= 0:
        return "Out of stock"
    if available <= low_threshold:
        return f"Only {available} left"
    return "In stock"


@dataclass(frozen=True)
class ProductCard:
    entry: ProductEntry
    price: Price
    price_is_from: bool
    available: int
    availability: str

    @property
    def url(self) -> str:
        return f"/p/{self.entry.product.slug}"


@dataclass(frozen=True)
class VariantChoice:
    variant: Variant
    price: Price
    available: int
    availability: str

    @property
    def in_stock(self) -> bool:
        return self.available > 0


def product_cards(
    entries: list[ProductEntry], stock: dict[int, int], prices: PriceList, low_threshold: int,
) -> list[ProductCard]:
    cards = []
    for entry in entries:
        product_id = entry.product.id or 0
        available = sum(stock.get(vid, 0) for vid in entry.variant_ids)
        cards.append(ProductCard(entry, prices.lowest[product_id], product_id in prices.ranged,
                                 available, availability_label(available, low_threshold)))
    return cards


def variant_choices(
    entry: ProductEntry, stock: dict[int, int], prices: PriceList, low_threshold: int,
) -> list[VariantChoice]:
    choices = []
    for variant, variant_id in zip(entry.variants, entry.variant_ids, strict=True):
        available = stock.get(variant_id, 0)
        choices.append(VariantChoice(variant, prices.variants[variant_id], available,
                                     availability_label(available, low_threshold)))
    return choices
