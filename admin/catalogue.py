"""Catalogue writes for admins: categories, products, variants, prices and sale windows.

Every write bumps `catalogue_version` in the same transaction, so storefronts rebuild their
in-memory catalogue within CATALOGUE_CHECK_SECONDS, and writes an audit entry with the values
before and after. Deactivating hides a product from the storefront; orders keep their own
snapshot of names and prices, so nothing about past orders changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, func, select

from conveyor import audit
from conveyor.db import LIKE_ESCAPE, UnitOfWork, like_pattern
from conveyor.errors import Conflict, DomainError, NotFound
from fulfilment.inventory import create_stock_item
from models.base import utcnow
from models.catalog import CatalogueVersion, Category, Product, Variant


class InvalidCatalogue(DomainError):
    code = "invalid_input"


def bump_catalogue_version(session: Session) -> None:
    row = session.get(CatalogueVersion, 1, with_for_update=True)
    if row is None:
        row = CatalogueVersion(id=1)
        session.add(row)
    row.version += 1
    row.changed_at = utcnow()


def slugify(text: str, *, max_length: int) -> str:
    slug = "-".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())[:max_length].strip("-")
    if not slug:
        raise InvalidCatalogue("Give a slug: the name has no letters or digits to make one.",
                               details={"fields": [{"loc": ["slug"], "message": "required",
                                                    "type": "missing"}]})
    return slug


def _category(session: Session, category_id: int) -> Category:
    category = session.get(Category, category_id)
    if category is None:
        raise InvalidCatalogue("No such category.", details={"category_id": category_id})
    return category


def get_product(session: Session, product_id: int, *, lock: bool = False) -> Product:
    product = session.get(Product, product_id, with_for_update=lock)
    if product is None:
        raise NotFound("No such product.")
    return product


def _unique(session: Session, model: Any, column: Any, value: str, what: str,
            exclude_id: int | None = None) -> None:
    query = select(model.id).where(column == value)
    if exclude_id is not None:
        query = query.where(model.id != exclude_id)
    if session.exec(query).first() is not None:
        raise Conflict(f"A {what} '{value}' exists already.", details={what: value})


def create_category(*, uow: UnitOfWork, actor: audit.Actor, name: str, slug: str | None,
                    description: str, position: int) -> Category:
    session = uow.session
    slug = slug or slugify(name, max_length=80)
    _unique(session, Category, Category.slug, slug, "slug")
    category = Category(slug=slug, name=name, description=description, position=position)
    session.add(category)
    session.flush()
    bump_catalogue_version(session)
    audit.record(session, actor, "catalogue.category_create", target_type="category",
                 target_id=str(category.id), after=category.model_dump())
    return category


@dataclass(frozen=True)
class VariantFields:
    sku: str
    name: str
    price_cents: int
    sale_price_cents: int | None = None
    sale_starts_at: datetime | None = None
    sale_ends_at: datetime | None = None


def check_sale(price: int, sale_price: int | None, starts: datetime | None,
               ends: datetime | None, *, loc: tuple[str, ...] = ()) -> None:
    """The same rules as the table's CHECK constraints, as readable messages; `loc` says
    where in the request the variant is (e.g. ("variants", "1"))."""
    if sale_price is not None and sale_price >= price:
        raise InvalidCatalogue("A sale price must be below the price.",
                               details={"fields": [{"loc": [*loc, "sale_price_cents"],
                                                    "message": "must be below price_cents",
                                                    "type": "value_error"}]})
    if starts is not None and ends is not None and starts >= ends:
        raise InvalidCatalogue("A sale must end after it starts.",
                               details={"fields": [{"loc": [*loc, "sale_ends_at"],
                                                    "message": "must be after sale_starts_at",
                                                    "type": "value_error"}]})


def _add_variant(session: Session, product: Product, fields: VariantFields,
                 position: int, loc: tuple[str, ...] = ()) -> Variant:
    check_sale(fields.price_cents, fields.sale_price_cents, fields.sale_starts_at,
               fields.sale_ends_at, loc=loc)
    _unique(session, Variant, Variant.sku, fields.sku, "sku")
    assert product.id is not None
    variant = Variant(product_id=product.id, position=position, **fields.__dict__)
    session.add(variant)
    session.flush()
    assert variant.id is not None
    create_stock_item(session, variant.id)
    return variant


def create_product(*, uow: UnitOfWork, actor: audit.Actor, name: str, slug: str | None,
                   category_id: int, description: str, image_path: str,
                   variants: list[VariantFields]) -> tuple[Product, list[Variant]]:
    session = uow.session
    _category(session, category_id)
    slug = slug or slugify(name, max_length=120)
    _unique(session, Product, Product.slug, slug, "slug")
    skus = [v.sku for v in variants]
    if len(set(skus)) != len(skus):
        raise InvalidCatalogue("Each variant needs its own SKU.")
    product = Product(slug=slug, name=name, category_id=category_id, description=description,
                      image_path=image_path)
    session.add(product)
    session.flush()
    made = [_add_variant(session, product, fields, i, loc=("variants", str(i)))
            for i, fields in enumerate(variants)]
    bump_catalogue_version(session)
    audit.record(session, actor, "catalogue.product_create", target_type="product",
                 target_id=str(product.id),
                 after={**product.model_dump(), "variants": [v.model_dump() for v in made]})
    return product, made


def update_product(*, uow: UnitOfWork, actor: audit.Actor, product_id: int,
                   changes: dict[str, Any]) -> Product:
    session = uow.session
    product = get_product(session, product_id, lock=True)
    before = product.model_dump()
    if "category_id" in changes:
        _category(session, changes["category_id"])
    if "slug" in changes:
        _unique(session, Product, Product.slug, changes["slug"], "slug", exclude_id=product_id)
    for name, value in changes.items():
        setattr(product, name, value)
    bump_catalogue_version(session)
    audit.record(session, actor, "catalogue.product_update", target_type="product",
                 target_id=str(product_id), before={k: before[k] for k in changes},
                 after={k: getattr(product, k) for k in changes})
    return product


def add_variant(*, uow: UnitOfWork, actor: audit.Actor, product_id: int,
                fields: VariantFields) -> Variant:
    session = uow.session
    product = get_product(session, product_id, lock=True)
    position = session.exec(select(func.count()).select_from(Variant).where(
        Variant.product_id == product_id)).one()
    variant = _add_variant(session, product, fields, int(position))
    bump_catalogue_version(session)
    audit.record(session, actor, "catalogue.variant_create", target_type="variant",
                 target_id=str(variant.id), after=variant.model_dump())
    return variant


def update_variant(*, uow: UnitOfWork, actor: audit.Actor, variant_id: int,
                   changes: dict[str, Any]) -> Variant:
    """Change a variant's name, price, sale window or activity; the SKU stays."""
    session = uow.session
    variant = session.get(Variant, variant_id, with_for_update=True)
    if variant is None:
        raise NotFound("No such variant.")
    before = variant.model_dump()
    merged = {**before, **changes}
    check_sale(merged["price_cents"], merged["sale_price_cents"], merged["sale_starts_at"],
               merged["sale_ends_at"])
    for name, value in changes.items():
        setattr(variant, name, value)
    bump_catalogue_version(session)
    audit.record(session, actor, "catalogue.variant_update", target_type="variant",
                 target_id=str(variant_id), before={k: before[k] for k in changes},
                 after={k: getattr(variant, k) for k in changes})
    return variant


def list_categories(session: Session) -> list[Category]:
    return list(session.exec(select(Category).order_by(col(Category.position),
                                                       col(Category.id))))


def list_products(session: Session, *, category_id: int | None, active: bool | None,
                  query: str | None, offset: int, limit: int) -> tuple[list[Product], int]:
    statement = select(Product)
    if category_id is not None:
        statement = statement.where(Product.category_id == category_id)
    if active is not None:
        statement = statement.where(col(Product.active).is_(active))
    if query:
        statement = statement.where(col(Product.name).ilike(like_pattern(query),
                                                            escape=LIKE_ESCAPE))
    total = session.exec(select(func.count()).select_from(statement.subquery())).one()
    rows = session.exec(statement.order_by(col(Product.id)).offset(offset).limit(limit))
    return list(rows), int(total)


def variants_of(session: Session, product_ids: list[int]) -> dict[int, list[Variant]]:
    found: dict[int, list[Variant]] = {pid: [] for pid in product_ids}
    for variant in session.exec(select(Variant).where(col(Variant.product_id).in_(product_ids))
                                .order_by(col(Variant.position), col(Variant.id))):
        found[variant.product_id].append(variant)
    return found
