"""What the shop sells, as the storefront reads it.

The catalogue (categories, products, variants, sale windows) is read into memory as a
`CatalogueSnapshot` and rebuilt when `catalogue_version` moves; the version is checked at most
once per `catalogue_check_seconds`. Orders that never change (by name, newest first) are sorted
once per snapshot. Prices follow the sale windows: the snapshot works out a `PriceList` for the
stretch of time between two window edges (a sale starting or ending) and a new one as soon as a
request falls past the next edge, so sales start and end on time without a rebuild. Stock is
not part of the snapshot: `stock_for` reads the live counters of the variants a page shows, in
one query, and `storefront/live_stock.py` keeps what it read only for as long as PostgreSQL
says it has not changed.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

from sqlalchemy import Integer, any_, bindparam
from sqlalchemy.dialects import postgresql
from sqlmodel import Session, col, func, or_, select

from conveyor.db import LIKE_ESCAPE, Database, like_pattern
from models.catalog import (
    CatalogueVersion,
    Category,
    Product,
    Variant,
    effective_price_cents,
    sale_is_on,
)
from models.inventory import StockItem

PAGE_SIZE = 12
SORTS = {  # listing orders: key in the URL, label in the form
    "name": "Name",
    "price": "Price, low to high",
    "price-desc": "Price, high to low",
    "new": "Newest",
}


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

    @cached_property
    def variant_ids(self) -> tuple[int, ...]:
        return tuple(v.id for v in self.variants if v.id is not None)

    def price_of(self, variant: Variant, at: datetime) -> Price:
        return Price(effective_price_cents(variant, at), variant.price_cents,
                     variant.sale_ends_at if sale_is_on(variant, at) else None)

    def lowest_price(self, at: datetime) -> Price:
        return min((self.price_of(v, at) for v in self.variants), key=lambda p: p.cents)

    def has_price_range(self, at: datetime) -> bool:
        return len({effective_price_cents(v, at) for v in self.variants}) > 1


@dataclass(frozen=True)
class PriceList:
    """Every price of a snapshot at one moment, and what depends on prices, worked out in one
    pass. It holds for as long as no sale window starts or ends."""

    variants: dict[int, Price]  # by variant id
    lowest: dict[int, Price]  # by product id: its cheapest variant (the first of equals)
    ranged: frozenset[int]  # ids of products whose variants differ in price
    on_sale: tuple[ProductEntry, ...]  # by name
    by_price: dict[int, tuple[ProductEntry, ...]]  # by category id, cheapest first
    by_price_desc: dict[int, tuple[ProductEntry, ...]]

    @classmethod
    def work_out(cls, entries: Collection[ProductEntry],
                 by_category: dict[int, tuple[ProductEntry, ...]], at: datetime) -> PriceList:
        variants: dict[int, Price] = {}
        lowest: dict[int, Price] = {}
        ranged: set[int] = set()
        for entry in entries:
            assert entry.product.id is not None
            prices = [entry.price_of(v, at) for v in entry.variants]
            variants.update(zip(entry.variant_ids, prices, strict=True))
            lowest[entry.product.id] = min(prices, key=lambda p: p.cents)
            if len({p.cents for p in prices}) > 1:
                ranged.add(entry.product.id)

        def cents(entry: ProductEntry) -> int:
            return lowest[entry.product.id or 0].cents

        return cls(
            variants=variants,
            lowest=lowest,
            ranged=frozenset(ranged),
            on_sale=tuple(sorted((e for e in entries if lowest[e.product.id or 0].on_sale),
                                 key=lambda e: e.product.name)),
            by_price={k: tuple(sorted(v, key=cents)) for k, v in by_category.items()},
            by_price_desc={k: tuple(sorted(v, key=lambda e: -cents(e)))
                           for k, v in by_category.items()},
        )


@dataclass(frozen=True)
class CatalogueSnapshot:
    version: int
    categories: tuple[Category, ...]
    products: dict[str, ProductEntry]  # by slug
    by_id: dict[int, ProductEntry]
    by_category: dict[int, tuple[ProductEntry, ...]]  # by category id, in the database's order
    variants: dict[int, tuple[Variant, ProductEntry]]
    # The price list of the stretch asked for last, by stretch number (see `prices`).
    _prices: dict[int, PriceList] = field(init=False, default_factory=dict, repr=False,
                                          compare=False)

    @cached_property
    def newest_first(self) -> tuple[ProductEntry, ...]:
        return tuple(sorted(self.by_id.values(), reverse=True,
                            key=lambda e: (e.product.created_at, e.product.id or 0)))

    @cached_property
    def by_name(self) -> dict[int, tuple[ProductEntry, ...]]:
        """By category id: the products sorted by name, whatever its case."""
        return {k: tuple(sorted(v, key=lambda e: e.product.name.lower()))
                for k, v in self.by_category.items()}

    @cached_property
    def by_newest(self) -> dict[int, tuple[ProductEntry, ...]]:
        """By category id: the products, newest first."""
        return {k: tuple(sorted(v, key=lambda e: -e.product.created_at.timestamp()))
                for k, v in self.by_category.items()}

    @cached_property
    def price_changes(self) -> tuple[datetime, ...]:
        """Every moment a sale starts or ends, in order: prices only change there."""
        return tuple(sorted({
            moment for variant, _ in self.variants.values() if variant.sale_price_cents is not None
            for moment in (variant.sale_starts_at, variant.sale_ends_at) if moment is not None
        }))

    def category(self, slug: str) -> Category | None:
        return next((c for c in self.categories if c.slug == slug), None)

    def prices(self, at: datetime) -> PriceList:
        """The prices at `at`, worked out once per stretch of time between two price changes
        (stretch n starts at the n-th change). Threads may race to work out the same list;
        whichever wins, a stretch only ever maps to its own prices."""
        stretch = bisect.bisect_right(self.price_changes, at)
        prices = self._prices.get(stretch)
        if prices is None:
            prices = PriceList.work_out(self.by_id.values(), self.by_category, at)
            self._prices.clear()
            self._prices[stretch] = prices
        return prices

    def newest(self, count: int) -> list[ProductEntry]:
        return list(self.newest_first[:count])

    def listing(self, category_id: int, sort: str,
                prices: PriceList) -> tuple[ProductEntry, ...]:
        """A category's products in one of the SORTS orders (by name for an unknown one), the
        price orders from this snapshot's `prices`."""
        if sort == "price":
            return prices.by_price.get(category_id, ())
        if sort == "price-desc":
            return prices.by_price_desc.get(category_id, ())
        if sort == "new":
            return self.by_newest.get(category_id, ())
        return self.by_name.get(category_id, ())


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

    def peek(self) -> CatalogueSnapshot | None:
        """The snapshot, if no version check is due; None means call `get` (which may read the
        database, so off the event loop). Never blocks."""
        snapshot = self._snapshot
        if snapshot is not None and time.monotonic() - self._checked_at < self.check_seconds:
            return snapshot
        return None

    def get(self) -> CatalogueSnapshot:
        snapshot = self.peek()
        if snapshot is not None:
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
        pattern = like_pattern(word)
        sku_match = (
            select(Variant.id)
            .where(Variant.product_id == Product.id)
            .where(col(Variant.sku).ilike(pattern, escape=LIKE_ESCAPE))
            .exists()
        )
        statement = statement.where(or_(
            col(Product.name).ilike(pattern, escape=LIKE_ESCAPE),
            col(Product.description).ilike(pattern, escape=LIKE_ESCAPE),
            col(Category.name).ilike(pattern, escape=LIKE_ESCAPE),
            sku_match,
        ))
    whole_phrase = func.lower(col(Product.name)).like(like_pattern(query.lower()),
                                                      escape=LIKE_ESCAPE)
    ranked = statement.order_by(whole_phrase.desc(), col(Product.name)).limit(limit)
    return [pid for pid in session.exec(ranked) if pid is not None]


_STOCK = select(
    col(StockItem.variant_id),
    col(StockItem.on_hand) - col(StockItem.allocated) - col(StockItem.reserved),  # .available
)
# PostgreSQL takes the ids as one array: one SQL text whatever their number, which the driver
# prepares once per connection. Elsewhere, an IN list of as many parameters as ids.
STOCK_QUERY_POSTGRESQL = _STOCK.where(
    col(StockItem.variant_id) == any_(bindparam("ids", type_=postgresql.ARRAY(Integer)))
)
STOCK_QUERY = _STOCK.where(col(StockItem.variant_id).in_(bindparam("ids", expanding=True)))


def stock_for(db: Database, variant_ids: Iterable[int]) -> dict[int, int]:
    """Live sellable quantities for these variants (0 without a stock row), in one query.

    Rows, not ORM objects, and on PostgreSQL no transaction: one SELECT is consistent on its
    own, and BEGIN and ROLLBACK would be two more round trips to the database on every page.
    """
    ids = list(dict.fromkeys(variant_ids))
    stock = dict.fromkeys(ids, 0)
    if not ids:
        return stock
    with db.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="AUTOCOMMIT")
            query = STOCK_QUERY_POSTGRESQL
        else:
            conn.execution_options(read_only=True)  # SQLite: a deferred BEGIN, no write lock
            query = STOCK_QUERY
        for variant_id, available in conn.execute(query, {"ids": ids}):
            stock[variant_id] = max(available, 0)
    return stock
