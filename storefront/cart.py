"""The cart: which variants and how many, kept server-side under an id in the session.

Quantities are capped by what can be sold right now and by a per-line maximum; prices are
never stored or taken from a form, but computed from the catalogue whenever a cart is shown.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from conveyor.db import UnitOfWork
from conveyor.errors import DomainError
from fulfilment.inventory import available_quantities
from models.base import utcnow
from models.cart import Cart, CartLine
from models.catalog import Product, Variant
from storefront.catalogue import CatalogueSnapshot, Price, ProductEntry


class UnknownVariant(DomainError):
    code = "unknown_variant"


class OutOfStock(DomainError):
    code = "out_of_stock"


@dataclass(frozen=True)
class CartChange:
    quantity: int  # the line's quantity afterwards
    requested: int
    capped_by_stock: bool

    @property
    def capped(self) -> bool:
        return self.quantity < self.requested


@dataclass(frozen=True)
class CartItem:
    variant: Variant
    entry: ProductEntry
    quantity: int
    price: Price
    available: int

    @property
    def line_total_cents(self) -> int:
        return self.price.cents * self.quantity

    @property
    def exceeds_stock(self) -> bool:
        return self.quantity > self.available


@dataclass(frozen=True)
class CartView:
    items: list[CartItem]
    missing: int  # lines whose variant is no longer sold

    @property
    def subtotal_cents(self) -> int:
        return sum(item.line_total_cents for item in self.items)

    @property
    def count(self) -> int:
        return sum(item.quantity for item in self.items)

    @property
    def is_empty(self) -> bool:
        return not self.items

    @property
    def has_shortage(self) -> bool:
        return any(item.exceeds_stock for item in self.items)


def create_cart(*, uow: UnitOfWork) -> uuid.UUID:
    cart = Cart()
    uow.session.add(cart)
    uow.flush()
    return cart.id


def _lock_cart(session: Session, cart_id: uuid.UUID) -> Cart:
    cart = session.get(Cart, cart_id, with_for_update=True)
    if cart is None:
        raise UnknownVariant("this cart no longer exists")
    return cart


def _sellable_variant(session: Session, variant_id: int) -> Variant:
    variant = session.get(Variant, variant_id)
    product = session.get(Product, variant.product_id) if variant else None
    if variant is None or not variant.active or product is None or not product.active:
        raise UnknownVariant("This product is not sold any more.")
    return variant


def set_quantity(
    *, uow: UnitOfWork, cart_id: uuid.UUID, variant_id: int, quantity: int, max_quantity: int,
    add: bool = False,
) -> CartChange:
    """Set (or with `add`, increase) a line's quantity, capped by stock and `max_quantity`.

    A resulting quantity of 0 removes the line. Raises UnknownVariant for a variant that is not
    sold, OutOfStock when none can be had. Locks the cart row, so two tabs cannot race.
    """
    session = uow.session
    cart = _lock_cart(session, cart_id)
    _sellable_variant(session, variant_id)
    line = session.exec(
        select(CartLine).where(CartLine.cart_id == cart_id, CartLine.variant_id == variant_id)
    ).first()
    requested = quantity + (line.quantity if (add and line) else 0)
    available = available_quantities(session, [variant_id])[variant_id]
    final = max(0, min(requested, available, max_quantity))
    if final == 0 and requested > 0:
        raise OutOfStock("Sorry, this is out of stock.")
    if final == 0:
        if line is not None:
            session.delete(line)
    elif line is None:
        session.add(CartLine(cart_id=cart_id, variant_id=variant_id, quantity=final))
    else:
        line.quantity = final
    cart.updated_at = utcnow()
    session.flush()
    return CartChange(final, requested, capped_by_stock=final < min(requested, max_quantity))


def remove_line(*, uow: UnitOfWork, cart_id: uuid.UUID, variant_id: int) -> None:
    session = uow.session
    _lock_cart(session, cart_id)
    line = session.exec(
        select(CartLine).where(CartLine.cart_id == cart_id, CartLine.variant_id == variant_id)
    ).first()
    if line is not None:
        session.delete(line)


def view_cart(
    session: Session, snapshot: CatalogueSnapshot, cart_id: uuid.UUID | None, at: datetime,
) -> CartView:
    """The cart with today's prices and live stock (two queries)."""
    if cart_id is None:
        return CartView([], 0)
    lines = list(session.exec(
        select(CartLine).where(CartLine.cart_id == cart_id).order_by(col(CartLine.id))
    ))
    stock = available_quantities(session, [line.variant_id for line in lines])
    items, missing = [], 0
    for line in lines:
        found = snapshot.variants.get(line.variant_id)
        if found is None:
            missing += 1
            continue
        variant, entry = found
        items.append(CartItem(variant, entry, line.quantity, entry.price_of(variant, at),
                              stock.get(line.variant_id, 0)))
    return CartView(items, missing)
