"""The warehouse's documents: purchase orders and their receipts, stock adjustments, cycle
counts, pick lists (waves), parcels. Stock itself moves only through `fulfilment.inventory`;
these tables say why, who and when."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, UniqueConstraint
from sqlmodel import Field, SQLModel

from models.base import utc_column, utcnow

# -- Receiving ---------------------------------------------------------------------------------


class PurchaseOrderStatus(StrEnum):
    OPEN = "open"
    PARTIALLY_RECEIVED = "partially_received"
    RECEIVED = "received"
    CANCELLED = "cancelled"


class PurchaseOrder(SQLModel, table=True):
    __tablename__ = "purchase_order"

    id: int | None = Field(default=None, primary_key=True)
    number: str = Field(max_length=20, unique=True)
    supplier: str = Field(max_length=200)
    warehouse_id: int = Field(foreign_key="warehouse.id")
    status: str = Field(default=PurchaseOrderStatus.OPEN, max_length=20, index=True)
    expected_at: datetime | None = utc_column(default=None, nullable=True)
    note: str = Field(default="", max_length=1000)
    created_by: str = Field(max_length=254)
    created_at: datetime = utc_column(default_factory=utcnow)


class PurchaseOrderLine(SQLModel, table=True):
    __tablename__ = "purchase_order_line"
    __table_args__ = (
        UniqueConstraint("purchase_order_id", "variant_id"),
        CheckConstraint("quantity_expected > 0", name="expected_positive"),
        CheckConstraint("unit_cost_cents >= 0", name="cost_not_negative"),
        CheckConstraint("quantity_received >= 0 AND quantity_damaged >= 0",
                        name="received_not_negative"),
    )

    id: int | None = Field(default=None, primary_key=True)
    purchase_order_id: int = Field(foreign_key="purchase_order.id", index=True)
    variant_id: int = Field(foreign_key="variant.id")
    quantity_expected: int
    unit_cost_cents: int
    quantity_received: int = 0  # good units put into bins
    quantity_damaged: int = 0  # arrived unusable: not put into stock


class Receipt(SQLModel, table=True):
    """One delivery counted in: which lines, how many good and damaged units, into which bins."""

    __tablename__ = "receipt"

    id: int | None = Field(default=None, primary_key=True)
    purchase_order_id: int = Field(foreign_key="purchase_order.id", index=True)
    received_by: str = Field(max_length=254)
    received_at: datetime = utc_column(default_factory=utcnow)
    note: str = Field(default="", max_length=1000)


class ReceiptLine(SQLModel, table=True):
    __tablename__ = "receipt_line"
    __table_args__ = (
        CheckConstraint("quantity_good >= 0 AND quantity_damaged >= 0 "
                        "AND quantity_good + quantity_damaged > 0", name="something_arrived"),
    )

    id: int | None = Field(default=None, primary_key=True)
    receipt_id: int = Field(foreign_key="receipt.id", index=True)
    purchase_order_line_id: int = Field(foreign_key="purchase_order_line.id")
    location_id: int = Field(foreign_key="location.id")
    quantity_good: int
    quantity_damaged: int = 0


# -- Adjustments and counts --------------------------------------------------------------------


class AdjustmentReason(StrEnum):
    DAMAGED = "damaged"
    LOST = "lost"
    FOUND = "found"
    CORRECTION = "correction"


class AdjustmentStatus(StrEnum):
    PENDING = "pending_approval"  # above the value limit: a second person must approve
    APPLIED = "applied"
    REJECTED = "rejected"


class StockAdjustment(SQLModel, table=True):
    __tablename__ = "stock_adjustment"
    __table_args__ = (CheckConstraint("quantity_delta <> 0", name="changes_something"),)

    id: int | None = Field(default=None, primary_key=True)
    variant_id: int = Field(foreign_key="variant.id", index=True)
    location_id: int = Field(foreign_key="location.id")
    quantity_delta: int
    reason: str = Field(max_length=20)
    note: str = Field(default="", max_length=1000)
    value_cents: int = Field(description="|delta| x unit cost, for the approval limit.")
    status: str = Field(max_length=20, index=True)
    requested_by: str = Field(max_length=254)
    requested_at: datetime = utc_column(default_factory=utcnow)
    decided_by: str = Field(default="", max_length=254)
    decided_at: datetime | None = utc_column(default=None, nullable=True)
    cycle_count_id: int | None = Field(default=None, foreign_key="cycle_count.id")


class CycleCountStatus(StrEnum):
    OPEN = "open"  # counters record quantities (blind)
    POSTED = "posted"  # variances turned into adjustments
    CANCELLED = "cancelled"


class CycleCount(SQLModel, table=True):
    __tablename__ = "cycle_count"

    id: int | None = Field(default=None, primary_key=True)
    warehouse_id: int = Field(foreign_key="warehouse.id")
    status: str = Field(default=CycleCountStatus.OPEN, max_length=20, index=True)
    created_by: str = Field(max_length=254)
    created_at: datetime = utc_column(default_factory=utcnow)
    posted_by: str = Field(default="", max_length=254)
    posted_at: datetime | None = utc_column(default=None, nullable=True)


class CycleCountLine(SQLModel, table=True):
    """One bin and SKU to count. The expected quantity is read when the count is posted, never
    shown to the counter."""

    __tablename__ = "cycle_count_line"
    __table_args__ = (UniqueConstraint("cycle_count_id", "location_id", "variant_id"),)

    id: int | None = Field(default=None, primary_key=True)
    cycle_count_id: int = Field(foreign_key="cycle_count.id", index=True)
    location_id: int = Field(foreign_key="location.id")
    variant_id: int = Field(foreign_key="variant.id")
    counted: int | None = Field(default=None, ge=0)
    counted_by: str = Field(default="", max_length=254)
    counted_at: datetime | None = utc_column(default=None, nullable=True)
    expected: int | None = Field(default=None, description="Book quantity when posted.")


# -- Picking, packing, shipping ----------------------------------------------------------------


class PickListStatus(StrEnum):
    OPEN = "open"  # built, waiting for a picker
    CLAIMED = "claimed"  # a picker is walking it
    DONE = "done"
    CANCELLED = "cancelled"


class PickList(SQLModel, table=True):
    """A wave: allocations of several orders in one warehouse, walked in pick-sequence order."""

    __tablename__ = "pick_list"

    id: int | None = Field(default=None, primary_key=True)
    warehouse_id: int = Field(foreign_key="warehouse.id", index=True)
    status: str = Field(default=PickListStatus.OPEN, max_length=16, index=True)
    created_by: str = Field(max_length=254)
    created_at: datetime = utc_column(default_factory=utcnow)
    claimed_by: str = Field(default="", max_length=254)
    claimed_at: datetime | None = utc_column(default=None, nullable=True)
    completed_at: datetime | None = utc_column(default=None, nullable=True)


class PickListLine(SQLModel, table=True):
    """What to take from one bin: every allocation of the wave for one SKU there, merged."""

    __tablename__ = "pick_list_line"
    __table_args__ = (
        UniqueConstraint("pick_list_id", "location_id", "variant_id"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("picked + short <= quantity", name="within_quantity"),
    )

    id: int | None = Field(default=None, primary_key=True)
    pick_list_id: int = Field(foreign_key="pick_list.id", index=True)
    location_id: int = Field(foreign_key="location.id")
    variant_id: int = Field(foreign_key="variant.id")
    sequence: int = Field(description="Position in the walk.")
    quantity: int
    picked: int = 0
    short: int = 0


class Parcel(SQLModel, table=True):
    __tablename__ = "parcel"
    __table_args__ = (CheckConstraint("weight_grams > 0", name="weight_positive"),)

    id: int | None = Field(default=None, primary_key=True)
    order_id: uuid.UUID = Field(foreign_key="orders.id", index=True)
    weight_grams: int
    packed_by: str = Field(max_length=254)
    packed_at: datetime = utc_column(default_factory=utcnow)
    carrier: str = Field(default="", max_length=60)
    tracking_number: str = Field(default="", max_length=80)
    tracking_url: str = Field(default="", max_length=500)
    shipped_by: str = Field(default="", max_length=254)
    shipped_at: datetime | None = utc_column(default=None, nullable=True)


class ParcelItem(SQLModel, table=True):
    __tablename__ = "parcel_item"
    __table_args__ = (
        UniqueConstraint("parcel_id", "variant_id"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
    )

    id: int | None = Field(default=None, primary_key=True)
    parcel_id: int = Field(foreign_key="parcel.id", index=True)
    variant_id: int = Field(foreign_key="variant.id")
    quantity: int
