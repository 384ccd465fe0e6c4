"""Stock: warehouses, bins, per-variant and per-bin counters, reservations, and the ledger.

Counters are kept in two places on purpose: `StockItem` (one row per variant) carries the totals
that a checkout must lock and check, so a single row lock and CHECK constraints keep
`allocated + reserved <= on_hand`; `BinStock` says where the units are. Every change to either
is also a row in `StockMovement`, the append-only ledger, and each counter equals its ledger sum.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from models.base import utc_column, utcnow


class Warehouse(SQLModel, table=True):
    __tablename__ = "warehouse"

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=20, unique=True)
    name: str = Field(max_length=120)


class LocationKind(StrEnum):
    BIN = "bin"
    PACKING = "packing"  # where picked units wait to be packed and shipped; one per warehouse


class Location(SQLModel, table=True):
    """A bin: where units sit in a warehouse; `pick_sequence` orders the walk."""

    __tablename__ = "location"
    __table_args__ = (UniqueConstraint("warehouse_id", "code"),)

    id: int | None = Field(default=None, primary_key=True)
    warehouse_id: int = Field(foreign_key="warehouse.id", index=True)
    code: str = Field(max_length=40)
    zone: str = Field(default="", max_length=20)
    aisle: str = Field(default="", max_length=20)
    shelf: str = Field(default="", max_length=20)
    pick_sequence: int = 0
    kind: str = Field(default=LocationKind.BIN, max_length=16)


class StockItem(SQLModel, table=True):
    __tablename__ = "stock_item"
    __table_args__ = (
        CheckConstraint("on_hand >= 0", name="on_hand_not_negative"),
        CheckConstraint("allocated >= 0", name="allocated_not_negative"),
        CheckConstraint("reserved >= 0", name="reserved_not_negative"),
        CheckConstraint("allocated + reserved <= on_hand", name="committed_within_on_hand"),
    )

    variant_id: int = Field(foreign_key="variant.id", primary_key=True)
    on_hand: int = 0
    allocated: int = 0
    reserved: int = 0
    reorder_point: int = Field(default=0, ge=0)
    reorder_quantity: int = Field(default=0, ge=0)
    unit_cost_cents: int = Field(default=0, ge=0, description="Weighted average cost.")

    @property
    def available(self) -> int:
        return self.on_hand - self.allocated - self.reserved


class BinStock(SQLModel, table=True):
    __tablename__ = "bin_stock"
    __table_args__ = (
        UniqueConstraint("location_id", "variant_id"),
        CheckConstraint("on_hand >= 0", name="on_hand_not_negative"),
        CheckConstraint("allocated >= 0 AND allocated <= on_hand", name="allocated_within"),
    )

    id: int | None = Field(default=None, primary_key=True)
    location_id: int = Field(foreign_key="location.id")
    variant_id: int = Field(foreign_key="variant.id", index=True)
    on_hand: int = 0
    allocated: int = 0


class MovementKind(StrEnum):
    RECEIPT = "receipt"
    RESERVE = "reserve"
    RELEASE = "release"
    ALLOCATE = "allocate"
    DEALLOCATE = "deallocate"
    PICK = "pick"
    SHIP = "ship"
    RETURN = "return"
    ADJUSTMENT = "adjustment"
    COUNT_CORRECTION = "count_correction"
    TRANSFER = "transfer"


class StockMovement(SQLModel, table=True):
    """One change to stock counters. Rows are only ever inserted (PostgreSQL enforces it)."""

    __tablename__ = "stock_movement"

    id: int | None = Field(default=None, primary_key=True)
    variant_id: int = Field(foreign_key="variant.id", index=True)
    location_id: int | None = Field(default=None, foreign_key="location.id")
    kind: str = Field(max_length=32)
    on_hand_delta: int = 0
    allocated_delta: int = 0
    reserved_delta: int = 0
    reason: str = Field(default="", max_length=200)
    actor: str = Field(default="system", max_length=120)
    document_type: str = Field(default="", max_length=40)
    document_id: str = Field(default="", max_length=64)
    created_at: datetime = utc_column(default_factory=utcnow)


class ReservationStatus(StrEnum):
    LIVE = "live"
    RELEASED = "released"
    CONVERTED = "converted"


class Reservation(SQLModel, table=True):
    """Units promised to an unpaid order until `expires_at`."""

    __tablename__ = "reservation"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        Index("ix_reservation_live_expiry", "status", "expires_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    order_id: uuid.UUID = Field(foreign_key="orders.id", index=True)
    variant_id: int = Field(foreign_key="variant.id")
    quantity: int
    status: str = Field(default=ReservationStatus.LIVE, max_length=16)
    expires_at: datetime = utc_column()
    created_at: datetime = utc_column(default_factory=utcnow)
    released_at: datetime | None = utc_column(default=None, nullable=True)


class AllocationStatus(StrEnum):
    ALLOCATED = "allocated"  # set aside in a bin, to be picked
    PICKED = "picked"  # taken to the warehouse's packing location, to be shipped
    SHIPPED = "shipped"
    RELEASED = "released"


class Allocation(SQLModel, table=True):
    """Units of an order's line set aside in one bin, for a picker to take."""

    __tablename__ = "allocation"
    __table_args__ = (CheckConstraint("quantity > 0", name="quantity_positive"),)

    id: int | None = Field(default=None, primary_key=True)
    order_id: uuid.UUID = Field(foreign_key="orders.id", index=True)
    variant_id: int = Field(foreign_key="variant.id")
    location_id: int = Field(foreign_key="location.id")
    quantity: int
    status: str = Field(default=AllocationStatus.ALLOCATED, max_length=16)
    pick_list_id: int | None = Field(default=None, foreign_key="pick_list.id", index=True)
    created_at: datetime = utc_column(default_factory=utcnow)
