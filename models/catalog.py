"""The catalogue: categories, products and their sellable variants, and the price rule."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Text
from sqlmodel import Field, SQLModel

from models.base import utc_column, utcnow


class Category(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(max_length=80, unique=True)
    name: str = Field(max_length=120)
    description: str = Field(default="", sa_type=Text)
    position: int = 0


class Product(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(max_length=120, unique=True)
    name: str = Field(max_length=200)
    description: str = Field(default="", sa_type=Text)
    category_id: int = Field(foreign_key="category.id", index=True)
    image_path: str = Field(default="", max_length=200, description="Relative to the media dir.")
    active: bool = True
    created_at: datetime = utc_column(default_factory=utcnow)


class Variant(SQLModel, table=True):
    __table_args__ = (
        CheckConstraint("price_cents >= 0", name="price_not_negative"),
        CheckConstraint(
            "sale_price_cents IS NULL"
            " OR (sale_price_cents >= 0 AND sale_price_cents < price_cents)",
            name="sale_below_price",
        ),
        CheckConstraint(
            "sale_starts_at IS NULL OR sale_ends_at IS NULL OR sale_starts_at < sale_ends_at",
            name="sale_window_ordered",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    product_id: int = Field(foreign_key="product.id", index=True)
    sku: str = Field(max_length=64, unique=True)
    barcode: str | None = Field(default=None, max_length=32, unique=True,
                                description="EAN/UPC printed on the item, for scanners.")
    name: str = Field(max_length=120, description="What tells it apart, e.g. 'Size M / Blue'.")
    price_cents: int
    sale_price_cents: int | None = None
    sale_starts_at: datetime | None = utc_column(default=None, nullable=True)
    sale_ends_at: datetime | None = utc_column(default=None, nullable=True)
    currency: str = Field(default="EUR", max_length=3)
    position: int = 0
    active: bool = True


def sale_is_on(variant: Variant, at: datetime) -> bool:
    """A sale runs from its start (inclusive) to its end (exclusive), to the second."""
    if variant.sale_price_cents is None:
        return False
    if variant.sale_starts_at is not None and at < variant.sale_starts_at:
        return False
    return not (variant.sale_ends_at is not None and at >= variant.sale_ends_at)


def effective_price_cents(variant: Variant, at: datetime) -> int:
    if sale_is_on(variant, at) and variant.sale_price_cents is not None:
        return variant.sale_price_cents
    return variant.price_cents


def next_price_change(variant: Variant, after: datetime) -> datetime | None:
    """The next moment the variant's price changes by its sale window, or None."""
    if variant.sale_price_cents is None:
        return None
    moments = [m for m in (variant.sale_starts_at, variant.sale_ends_at) if m and m > after]
    return min(moments, default=None)


class CatalogueVersion(SQLModel, table=True):
    """One row whose number goes up with every catalogue change, in the same transaction.

    Storefront processes keep the catalogue in memory and rebuild it when this moves.
    """

    __tablename__ = "catalogue_version"

    id: int = Field(default=1, primary_key=True)
    version: int = Field(default=0, sa_type=BigInteger)
    changed_at: datetime = utc_column(default_factory=utcnow)
