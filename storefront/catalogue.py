"""What the shop sells, as the storefront reads it.

The catalogue (categories, products, variants, sale windows) is read into memory as a
`CatalogueSnapshot` and rebuilt when `catalogue_version` moves; the version is checked at most
once per `catalogue_cache_seconds`. Prices are worked out from the snapshot at the moment of
each request, so sales start and end on time without a rebuild. Stock is never cached: every
page reads the live counters of the variants it shows, in one query.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session, col, func, or_, select

from conveyor.db import Database
from fulfilment.inventory import available_quantities
from models.catalog import (
    CatalogueVersion,
    Category,
    Product,
    Variant,
    effective_price_cents,
    sale_is_on,
)

PAGE_SIZE = 12


@dataclass(frozen=True)
class Price:
    cents: int
    regular_cents: int
    sale_ends_at: datetime | None

    @property
    def on_sale(self) -> bool:
        return self.cents < self.regular_cents


@dataclass(frozen=True)
class ProductEntry:
    product: Product
    category: Category
    variants: tuple[Variant, ...]

    @property
    def variant_ids(self) -> list[int]:
        return [v.id for v in self.variants if v.id is not None]

    def price_of(self, variant: Variant, at: datetime) -> Price:
        return Price(effective_price_cents(variant, at), variant.price_cents,
                     variant.sale_ends_at if sale_is_on(variant, at) else None)

    def lowest_price(self, at: datetime) -> Price:
        return min((self.price_of(v, at) for v in self.variants), key=lambda p: p.cents)

    def has_price_range(self, at: datetime) -> bool:
        return len({effective_price_cents(v, at) for v in self.variants}) > 1


@dataclass(frozen=True)
class CatalogueSnapshot:
    version: int
    categories: tuple[Category, ...]
    products: dict[str, ProductEntry]  # by slug
    by_id: dict[int, ProductEntry]
    by_category: dict[int, tuple[ProductEntry, ...]]
    variants: dict[int, tuple[Variant, ProductEntry]]

    def category(self, slug: str) -> Category | None:
        return next((c for c in self.categories if c.slug == slug), None)

    def newest(self, count: int) -> list[ProductEntry]:
        entries = sorted(self.by_id.values(), key=lambda e: (e.product.created_at,
                                                             e.product.id or 0), reverse=True)
        return entries[:count]

    def on_sale(self, at: datetime, count: int) -> list[ProductEntry]:
        entries = [e for e in self.by_id.values() if e.lowest_price(at).on_sale]
        return sorted(entries, key=lambda e: e.product.name)[:count]


def load_snapshot(session: Session) -> CatalogueSnapshot:
    """Read the active catalogue in three queries."""
    version_row = session.get(CatalogueVersion, 1)
    categories = tuple(session.exec(
        select(Category).order_by(col(Category.position), col(Category.name))
    ))
    category_by_id = {c.id: c for c in categories}
    products = list(session.exec(
        select(Product).where(col(Product.active).is_(True)).order_by(col(Product.name))
    ))
    variants_by_product: dict[int, list[Variant]] = {}
    for variant in session.exec(
        select(Variant).where(col(Variant.active).is_(True))
        .order_by(col(Variant.product_id), col(Variant.position), col(Variant.id))
    ):
        variants_by_product.setdefault(variant.product_id, []).append(variant)

    by_slug: dict[str, ProductEntry] = {}
    by_id: dict[int, ProductEntry] = {}
    by_category: dict[int, list[ProductEntry]] = {}
    variants: dict[int, tuple[Variant, ProductEntry]] = {}
    for product in products:
        assert product.id is not None
        product_variants = variants_by_product.get(product.id)
        category = category_by_id.get(product.category_id)
        if not product_variants or category is None:
            continue  # nothing to sell, or nowhere to show it
        entry = ProductEntry(product, category, tuple(product_variants))
        by_slug[product.slug] = by_id[product.id] = entry
        by_category.setdefault(product.category_id, []).append(entry)
        for variant in product_variants:
            assert variant.id is not None
            variants[variant.id] = (variant, entry)
    return CatalogueSnapshot(
        version=version_row.version if version_row else 0,
        categories=tuple(c for c in categories if c.id in by_category),
        products=by_slug,
        by_id=by_id,
        by_category={k: tuple(v) for k, v in by_category.items()},
        variants=variants,
    )


class CatalogueCache:
    """The current snapshot for one process, rebuilt when the catalogue version moves."""

    def __init__(self, db: Database, *, check_seconds: float) -> None:
        self.db = db
        self.check_seconds = check_seconds
        self._snapshot: CatalogueSnapshot | None = None
        self._checked_at = 0.0
        self._lock = threading.Lock()

    def get(self) -> CatalogueSnapshot:
        snapshot = self._snapshot
        if snapshot is not None and time.monotonic() - self._checked_at < self.check_seconds:
            return snapshot
        with self._lock:
            if self._snapshot is not None and (
                time.monotonic() - self._checked_at < self.check_seconds
            ):
                return self._snapshot
            with self.db.read_session() as session:
                row = session.get(CatalogueVersion, 1)
                version = row.version if row else 0
                if self._snapshot is None or self._snapshot.version != version:
                    self._snapshot = load_snapshot(session)
            self._checked_at = time.monotonic()
            return self._snapshot

    def invalidate(self) -> None:
        self._checked_at = 0.0
        self._snapshot = None


@dataclass(frozen=True)
class Page:
    entries: list[ProductEntry]
    number: int
    count: int
    total: int = field(default=0)

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number < self.count


def paginate(entries: Sequence[ProductEntry], page: int) -> Page:
    count = max(1, math.ceil(len(entries) / PAGE_SIZE))
    number = min(max(page, 1), count)
    start = (number - 1) * PAGE_SIZE
    return Page(list(entries[start:start + PAGE_SIZE]), number, count, len(entries))


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search_product_ids(session: Session, query: str, *, limit: int = 500) -> list[int]:
    """Active products whose name, description, category or a SKU contains every word."""
    words = [w for w in query.split() if w][:8]
    if not words:
        return []
    statement = (
        select(Product.id)
        .join(Category, col(Category.id) == Product.category_id)
        .where(col(Product.active).is_(True))
    )
    for word in words:
        pattern = _like_pattern(word)
        sku_match = (
            select(Variant.id)
            .where(Variant.product_id == Product.id)
            .where(col(Variant.sku).ilike(pattern, escape="\\"))
            .exists()
        )
        statement = statement.where(or_(
            col(Product.name).ilike(pattern, escape="\\"),
            col(Product.description).ilike(pattern, escape="\\"),
            col(Category.name).ilike(pattern, escape="\\"),
            sku_match,
        ))
    whole_phrase = func.lower(col(Product.name)).like(_like_pattern(query.lower()), escape="\\")
    ranked = statement.order_by(whole_phrase.desc(), col(Product.name)).limit(limit)
    return [pid for pid in session.exec(ranked) if pid is not None]


def stock_for(db: Database, variant_ids: list[int]) -> dict[int, int]:
    """Live sellable quantities for these variants (one query)."""
    with db.read_session() as session:
        return available_quantities(session, variant_ids)
