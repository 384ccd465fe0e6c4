"""Random sequences of every stock operation on PostgreSQL, with the invariants checked after
each step: counters never negative, allocated + reserved within on hand (the tables' CHECKs),
bins adding up to their variant, and every counter equal to its ledger sum."""

from __future__ import annotations

import uuid
from datetime import timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlmodel import col, select

from conveyor.db import Database
from conveyor.errors import DomainError
from fulfilment.inventory import (
    LineRequest,
    adjust_bin,
    allocate_order_stock,
    pick_allocations,
    receive_stock,
    release_allocations,
    release_reservations,
    reserve_lines,
    ship_picked,
    transfer_units,
    verify_ledger,
)
from models.base import utcnow
from models.inventory import (
    Allocation,
    AllocationStatus,
    BinStock,
    Location,
    MovementKind,
    Warehouse,
)
from tests.conftest import truncate_all
from tests.factories import make_pending_order, make_product

VARIANTS = 3
ACTOR = "property-test"


def test_stock_invariants_hold_under_random_operations(session_db: Database):
    db = session_db
    done: dict[str, int] = {}  # successful operations of each kind, over all examples

    class StockMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            truncate_all(db)
            self.variants = make_product(
                db, variants=[(f"V{i}", 1000, 0) for i in range(VARIANTS)]).variant_ids
            self.bins: list[int] = []
            with db.unit_of_work() as uow:
                for code in ("W1", "W2"):
                    warehouse = Warehouse(code=code, name=code)
                    uow.session.add(warehouse)
                    uow.flush()
                    assert warehouse.id is not None
                    for n in range(2):
                        location = Location(warehouse_id=warehouse.id, code=f"{code}-{n}",
                                            pick_sequence=n * 10 + 10)
                        uow.session.add(location)
                        uow.flush()
                        assert location.id is not None
                        self.bins.append(location.id)
            for variant in self.variants:  # some stock to start with, in the first bin
                with db.unit_of_work() as uow:
                    receive_stock(uow=uow, variant_id=variant, location_id=self.bins[0],
                                  quantity=8, actor=ACTOR)
            self.orders: list[uuid.UUID] = []
            self.steps: dict[str, int] = {}

        def _attempt(self, action, name: str = "") -> bool:
            """Run one operation in its own transaction; a refusal must change nothing."""
            try:
                with db.unit_of_work() as uow:
                    action(uow)
            except DomainError:
                return False
            if name:
                self.steps[name] = self.steps.get(name, 0) + 1
                done.setdefault(name, 0)
                done[name] += 1
            return True

        def _allocations(self, order_id: uuid.UUID, status: AllocationStatus) -> list[Allocation]:
            with db.read_session() as session:
                return list(session.exec(select(Allocation).where(
                    Allocation.order_id == order_id, Allocation.status == status)
                    .order_by(col(Allocation.id))))

        def _order(self, data: st.DataObject,
                   having: AllocationStatus | None = None) -> uuid.UUID | None:
            """One of the orders, or one with allocations in the state `having`."""
            candidates = self.orders
            if having is not None:
                with db.read_session() as session:
                    candidates = sorted(set(session.exec(select(Allocation.order_id).where(
                        Allocation.status == having))), key=str)
            if not candidates:
                return None
            return data.draw(st.sampled_from(candidates))

        @rule(variant=st.integers(0, VARIANTS - 1), where=st.integers(0, 3),
              quantity=st.integers(1, 6))
        def receive(self, variant: int, where: int, quantity: int) -> None:
            self._attempt(lambda uow: receive_stock(
                uow=uow, variant_id=self.variants[variant], location_id=self.bins[where],
                quantity=quantity, actor=ACTOR), "receive")

        @rule(lines=st.lists(st.tuples(st.integers(0, VARIANTS - 1), st.integers(1, 4)),
                             min_size=1, max_size=3))
        def checkout(self, lines: list[tuple[int, int]]) -> None:
            order_id = make_pending_order(db)
            self.orders.append(order_id)
            self._attempt(lambda uow: reserve_lines(
                uow=uow, order_id=order_id, until=utcnow() + timedelta(minutes=15),
                lines=[LineRequest(self.variants[v], q) for v, q in lines]), "reserve")

        @rule(data=st.data())
        def expire(self, data: st.DataObject) -> None:
            if (order_id := self._order(data)) is not None:
                self._attempt(lambda uow: release_reservations(uow=uow, order_id=order_id,
                                                               reason="expired", actor=ACTOR),
                              "expire")

        @rule(data=st.data())
        def allocate(self, data: st.DataObject) -> None:
            if (order_id := self._order(data)) is not None:
                self._attempt(lambda uow: allocate_order_stock(uow=uow, order_id=order_id),
                              "allocate")

        @rule(data=st.data(), share=st.integers(1, 4), ship_now=st.booleans())
        def pick(self, data: st.DataObject, share: int, ship_now: bool) -> None:
            if (order_id := self._order(data, AllocationStatus.ALLOCATED)) is None:
                return
            for allocation in self._allocations(order_id, AllocationStatus.ALLOCATED):
                assert allocation.id is not None
                quantity = max(1, allocation.quantity * share // 4)
                self._attempt(lambda uow, a=allocation, q=quantity: pick_allocations(
                    uow=uow, allocation_ids=[a.id], quantity=q, actor=ACTOR), "pick")
            if ship_now:  # packers often ship straight away
                self._ship(order_id)

        @rule(data=st.data())
        def ship(self, data: st.DataObject) -> None:
            if (order_id := self._order(data, AllocationStatus.PICKED)) is not None:
                self._ship(order_id)

        def _ship(self, order_id: uuid.UUID) -> None:
            for allocation in self._allocations(order_id, AllocationStatus.PICKED):
                self._attempt(lambda uow, a=allocation: ship_picked(
                    uow=uow, order_id=order_id, variant_id=a.variant_id, quantity=a.quantity,
                    actor=ACTOR), "ship")

        @rule(data=st.data())
        def cancel(self, data: st.DataObject) -> None:
            if (order_id := self._order(data)) is None:
                return

            def both(uow) -> None:
                release_reservations(uow=uow, order_id=order_id, reason="cancel", actor=ACTOR)
                release_allocations(uow=uow, order_id=order_id, reason="cancel", actor=ACTOR)

            self._attempt(both, "cancel")

        @rule(variant=st.integers(0, VARIANTS - 1), where=st.integers(0, 3),
              delta=st.integers(-4, 4).filter(bool))
        def adjust(self, variant: int, where: int, delta: int) -> None:
            self._attempt(lambda uow: adjust_bin(
                uow=uow, variant_id=self.variants[variant], location_id=self.bins[where],
                delta=delta, kind=MovementKind.ADJUSTMENT, reason="test", actor=ACTOR),
                "adjust")

        @rule(variant=st.integers(0, VARIANTS - 1), where=st.integers(0, 3),
              counted=st.integers(0, 8))
        def count(self, variant: int, where: int, counted: int) -> None:
            with db.read_session() as session:
                row = session.exec(select(BinStock).where(
                    BinStock.variant_id == self.variants[variant],
                    BinStock.location_id == self.bins[where])).first()
            book = row.on_hand if row else 0
            self._attempt(lambda uow: adjust_bin(
                uow=uow, variant_id=self.variants[variant], location_id=self.bins[where],
                delta=counted - book, kind=MovementKind.COUNT_CORRECTION, reason="count",
                actor=ACTOR), "count")

        @rule(variant=st.integers(0, VARIANTS - 1), src=st.integers(0, 3),
              dst=st.integers(0, 3), quantity=st.integers(1, 3))
        def transfer(self, variant: int, src: int, dst: int, quantity: int) -> None:
            self._attempt(lambda uow: transfer_units(
                uow=uow, variant_id=self.variants[variant], from_location_id=self.bins[src],
                to_location_id=self.bins[dst], quantity=quantity, actor=ACTOR), "transfer")

        @invariant()
        def ledger_and_counters_agree(self) -> None:
            with db.read_session() as session:
                assert verify_ledger(session) == []

    run_state_machine_as_test(StockMachine, settings=settings(
        max_examples=30, stateful_step_count=40, deadline=None, derandomize=True,
        suppress_health_check=list(HealthCheck)))
    # The walk really went everywhere: every operation succeeded at least once.
    assert set(done) == {"receive", "reserve", "expire", "allocate", "pick", "ship", "cancel",
                         "adjust", "count", "transfer"}, repr(done)
