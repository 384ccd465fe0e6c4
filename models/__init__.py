"""SQLModel tables and the pure rules that belong to them. Imports no other Conveyor package."""

from models.cart import Cart, CartLine
from models.catalog import CatalogueVersion, Category, Product, Variant
from models.inventory import BinStock, Location, Reservation, StockItem, StockMovement, Warehouse
from models.messaging import Email, OutboxMessage, StripeEvent
from models.orders import Order, OrderEvent, OrderLine, OrderStatus
from models.payments import Payment, PaymentStatus

__all__ = [
    "BinStock",
    "Cart",
    "CartLine",
    "CatalogueVersion",
    "Category",
    "Email",
    "Location",
    "Order",
    "OrderEvent",
    "OrderLine",
    "OrderStatus",
    "OutboxMessage",
    "Payment",
    "PaymentStatus",
    "Product",
    "Reservation",
    "StockItem",
    "StockMovement",
    "StripeEvent",
    "Variant",
    "Warehouse",
]
