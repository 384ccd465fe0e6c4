"""Factories for test data, written through the same services the shop uses."""

from __future__ import annotations

import itertools
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

import pyotp
from sqlmodel import select

from conveyor.db import Database
from fulfilment.inventory import receive_stock
from models.catalog import CatalogueVersion, Category, Product, Variant
from models.inventory import Location, StockItem, Warehouse
from models.orders import Order

_counter = itertools.count(1)


@dataclass(frozen=True)
class MadeProduct:
    product_id: int
    slug: str
    variant_ids: list[int]
    skus: list[str]


def _location(db: Database, warehouse_code: str = "TST", bin_code: str = "A-01-1") -> int:
    with db.unit_of_work() as uow:
        warehouse = uow.session.exec(select(Warehouse).where(Warehouse.code == warehouse_code)
                                     ).first()
        if warehouse is None:
            warehouse = Warehouse(code=warehouse_code, name=f"{warehouse_code} warehouse")
            uow.session.add(warehouse)
            uow.flush()
        location = uow.session.exec(select(Location).where(
            Location.warehouse_id == warehouse.id, Location.code == bin_code)).first()
        if location is None:
            assert warehouse.id is not None
            location = Location(warehouse_id=warehouse.id, code=bin_code, pick_sequence=10)
            uow.session.add(location)
            uow.flush()
        assert location.id is not None
        return location.id


def bump_catalogue(db: Database) -> None:
    with db.unit_of_work() as uow:
        row = uow.session.get(CatalogueVersion, 1) or CatalogueVersion(id=1)
        row.version = max(row.version + 1, time.time_ns() // 1000)
        uow.session.add(row)


def make_product(
    db: Database, *, name: str | None = None, category: str = "Testing",
    variants: list[tuple[str, int, int]] | None = None, description: str = "A test product.",
    sale: tuple[int, datetime | None, datetime | None] | None = None, active: bool = True,
) -> MadeProduct:
    """A product with variants given as (name, price in cents, units in stock)."""
    n = next(_counter)
    name = name or f"Test Product {n}"
    variants = variants or [("Standard", 1000, 10)]
    location_id = _location(db)
    with db.unit_of_work() as uow:
        session = uow.session
        slug = "-".join(category.lower().split())
        found = session.exec(select(Category).where(Category.slug == slug)).first()
        if found is None:
            found = Category(slug=slug, name=category, description=f"All about {category}.")
            session.add(found)
            session.flush()
        assert found.id is not None
        product = Product(slug=f"{'-'.join(name.lower().split())}-{n}", name=name,
                          description=description, category_id=found.id, active=active)
        session.add(product)
        session.flush()
        assert product.id is not None
        ids, skus = [], []
        for index, (variant_name, price, stock) in enumerate(variants):
            variant = Variant(product_id=product.id, sku=f"T{n:04d}-{index + 1}",
                              name=variant_name, price_cents=price, position=index)
            if sale is not None:
                variant.sale_price_cents, variant.sale_starts_at, variant.sale_ends_at = sale
            session.add(variant)
            session.flush()
            assert variant.id is not None
            session.add(StockItem(variant_id=variant.id))
            session.flush()
            if stock:
                receive_stock(uow=uow, variant_id=variant.id, location_id=location_id,
                              quantity=stock, actor="test", reason="test stock")
            ids.append(variant.id)
            skus.append(variant.sku)
        result = MadeProduct(product.id, product.slug, ids, skus)
    bump_catalogue(db)
    return result


def stock_of(db: Database, variant_id: int) -> StockItem:
    with db.read_session() as session:
        item = session.get(StockItem, variant_id)
        assert item is not None
        return item


def make_pending_order(db: Database, *, email: str = "shopper@example.com",
                       total_cents: int = 1000) -> uuid.UUID:
    """A bare order waiting for payment, for tests of the services around orders."""
    n = next(_counter)
    with db.unit_of_work() as uow:
        order = Order(number=f"CV-T{n:07d}", status_token=secrets.token_urlsafe(24),
                      email=email, email_domain=email.rsplit("@", 1)[-1].lower(),
                      full_name="Test Shopper", phone="+49301234567",
                      address="Teststrasse 1", city="Berlin", postal_code="10117", country="DE",
                      shipping_method="standard", shipping_method_name="Standard delivery",
                      subtotal_cents=total_cents, shipping_cents=0, tax_rate_bps=0,
                      tax_cents=0, total_cents=total_cents)
        uow.session.add(order)
        uow.flush()
        return order.id


@dataclass(frozen=True)
class MadeStaff:
    email: str
    password: str
    roles: list[str]
    totp_secret: str | None

    def totp_code(self) -> str:
        assert self.totp_secret is not None
        return pyotp.TOTP(self.totp_secret).now()


def make_staff(db: Database, *roles: str, email: str | None = None,
               password: str = "correct horse battery", enrolled: bool = True) -> MadeStaff:
    """A staff user; admins get a confirmed TOTP secret unless `enrolled` is False."""
    from admin import identity
    from conveyor import audit

    email = email or f"staff{next(_counter)}@conveyor.test"
    with db.unit_of_work() as uow:
        user = identity.create_staff(uow=uow, email=email, roles=list(roles), password=password,
                                     actor=audit.Actor(email="test"))
        if user.needs_second_factor and enrolled:
            user.totp_secret = pyotp.random_base32()
            user.totp_confirmed = True
        secret = user.totp_secret
    return MadeStaff(email, password, list(roles), secret)
