"""SQLModel tables and the pure rules that belong to them. Imports no other Conveyor package."""

from models.audit import AuditEntry, AuditHead
from models.cart import Cart, CartLine
from models.catalog import CatalogueVersion, Category, Product, Variant
from models.inventory import (
    Allocation,
    BinStock,
    Location,
    Reservation,
    StockItem,
    StockMovement,
    Warehouse,
)
from models.messaging import Email, OutboxMessage, StripeEvent
from models.orders import Order, OrderEvent, OrderLine, OrderStatus
from models.payments import Payment, PaymentStatus
from models.screening import RuleSet, Screening
from models.staff import LoginAttempt, StaffToken, StaffUser

__all__ = [
    "Allocation",
    "AuditEntry",
    "AuditHead",
    "BinStock",
    "Cart",
    "CartLine",
    "CatalogueVersion",
    "Category",
    "Email",
    "Location",
    "LoginAttempt",
    "Order",
    "OrderEvent",
    "OrderLine",
    "OrderStatus",
    "OutboxMessage",
    "Payment",
    "PaymentStatus",
    "Product",
    "Reservation",
    "RuleSet",
    "Screening",
    "StaffToken",
    "StaffUser",
    "StockItem",
    "StockMovement",
    "StripeEvent",
    "Variant",
    "Warehouse",
]
