"""Picking on PostgreSQL with real orders (checkout, localstripe, screening, capture and
allocation): waves, the claim race, scans, short picks with re-allocation and backorders.

The helpers at the top are shared by the packing, shipping and warehouse-day tests."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlmodel import col, select, update

from conveyor.db import Database
from conveyor.settings import Settings
from conveyor.stripe_gateway import create_gateway
from conveyor.templating import create_environment
from fulfilment import picking
from fulfilment.inventory import receive_stock, verify_ledger
from fulfilment.payments import capture_order_payment
from fulfilment.screening import screen_order
from models.catalog import Variant
from models.inventory import (
    Allocation,
    AllocationStatus,
    BinStock,
    Location,
    MovementKind,
    StockMovement,
    Warehouse,
)
from models.orders import Order, OrderEvent, OrderLine, OrderStatus
from models.screening import DEFAULT_RULES, RuleSet
from models.warehouse import PickList, PickListLine, PickListStatus
from storefront import checkout
from tests import shopping
from tests.factories import make_product, stock_of

ENV = create_environment()
CARDS = ("4242424242424242", "5555555555554444", "4012888888881881", "5105105105105100",
         "4111111111111111", "4000056655665556", "5200828282828210", "6011111111111117")
_shoppers = itertools.count(1)


# -- helpers (also used by test_packing, test_shipping, test_warehouse_day) -----------------------


def lenient_screening(db: Database) -> None:
    """A rule set that approves everything: the warehouse tests buy many similar orders."""
    body = DEFAULT_RULES.model_dump(mode="json")
    for rule in body["signals"].values():
        rule["weight"] = 0
    with db.unit_of_work() as uow:
        uow.session.add(RuleSet(version=2, body=body, note="warehouse tests", created_by="test"))


def warehouse(db: Database, code: str) -> int:
    with db.unit_of_work() as uow:
        found = uow.session.exec(select(Warehouse).where(Warehouse.code == code)).first()
        if found is None:
            found = Warehouse(code=code, name=f"{code} warehouse")
            uow.session.add(found)
            uow.flush()
        assert found.id is not None
        return found.id


def bin_(db: Database, warehouse_code: str, code: str, sequence: int) -> int:
    """A bin (made if missing) with its pick sequence."""
    warehouse_id = warehouse(db, warehouse_code)
    with db.unit_of_work() as uow:
        location = Location(warehouse_id=warehouse_id, code=code, pick_sequence=sequence,
                            aisle=code.split("-")[0])
        uow.session.add(location)
        uow.flush()
        assert location.id is not None
        return location.id


def put(db: Database, variant_id: int, location_id: int, quantity: int) -> None:
    with db.unit_of_work() as uow:
        receive_stock(uow=uow, variant_id=variant_id, location_id=location_id,
                      quantity=quantity, actor="test", reason="test stock")


def variant(db: Database, name: str, *, price: int = 1500, barcode: str | None = None) -> int:
    """A product with one variant and no stock (stock goes into bins with `put`)."""
    made = make_product(db, name=name, variants=[("Std", price, 0)])
    variant_id = made.variant_ids[0]
    if barcode:
        with db.unit_of_work() as uow:
            uow.session.execute(update(Variant).where(col(Variant.id) == variant_id)
                                .values(barcode=barcode))
    return variant_id


def sku_of(db: Database, variant_id: int) -> str:
    with db.read_session() as session:
        found = session.get(Variant, variant_id)
        assert found is not None
        return found.sku


def ready_order(db: Database, settings: Settings, lines: list[tuple[int, int]]) -> Order:
    """A real order: cart, checkout, card authorised at localstripe, screened, captured and
    allocated to bins: ready to pick."""
    n = next(_shoppers)
    cart_id, view = shopping.cart(db, lines)
    placed = shopping.place(db, settings, cart_id, view,
                            details=shopping.details_for(f"shopper{n}@example.com"))
    assert shopping.pay(db, settings, placed.id, CARDS[n % len(CARDS)]).outcome == \
        checkout.Outcome.AUTHORIZED
    with db.unit_of_work() as uow:
        screen_order(uow=uow, order_id=placed.id, env=ENV, settings=settings)
    assert capture_order_payment(db=db, gateway=create_gateway(settings), env=ENV,
                                 settings=settings, order_id=placed.id) == "captured"
    order = reload(db, placed.id)
    assert order.status == OrderStatus.ALLOCATED
    return order


def reload(db: Database, order_id: uuid.UUID) -> Order:
    with db.read_session() as session:
        order = session.get(Order, order_id)
        assert order is not None
        return order


def build(db: Database, max_orders: int = 200, actor: str = "lead@conveyor.test"
          ) -> list[PickList]:
    with db.unit_of_work() as uow:
        return picking.build_wave(uow=uow, actor=actor, max_orders=max_orders).pick_lists


def claim(db: Database, pick_list_id: int, picker: str = "picker@conveyor.test") -> PickList:
    with db.unit_of_work() as uow:
        return picking.claim_pick_list(uow=uow, pick_list_id=pick_list_id, picker=picker)


def scan(db: Database, pick_list_id: int, code: str, quantity: int = 1, *,
         line_id: int | None = None, bin_code: str | None = None,
         picker: str = "picker@conveyor.test") -> picking.ScanResult:
    with db.unit_of_work() as uow:
        return picking.scan_item(uow=uow, pick_list_id=pick_list_id, picker=picker, code=code,
                                 quantity=quantity, line_id=line_id, bin_code=bin_code)


def short(db: Database, pick_list_id: int, line_id: int, found: int, *, left_in_bin: int = 0,
          picker: str = "picker@conveyor.test") -> picking.ShortResult:
    with db.unit_of_work() as uow:
        return picking.report_short(uow=uow, pick_list_id=pick_list_id, line_id=line_id,
                                    picker=picker, found=found, left_in_bin=left_in_bin)


@dataclass(frozen=True)
class WalkLine:
    id: int
    sequence: int
    bin: str
    sku: str
    quantity: int
    picked: int
    short: int
    remaining: int


def walk(db: Database, pick_list_id: int) -> list[WalkLine]:
    with db.read_session() as session:
        wanting = picking.open_units(session, pick_list_id)
        rows = session.exec(
            select(PickListLine, Location, Variant)
            .join(Location, col(Location.id) == PickListLine.location_id)
            .join(Variant, col(Variant.id) == PickListLine.variant_id)
            .where(PickListLine.pick_list_id == pick_list_id)
            .order_by(col(PickListLine.sequence)))
        return [WalkLine(line.id or 0, line.sequence, location.code, v.sku, line.quantity,
                         line.picked, line.short,
                         wanting.get((line.location_id, line.variant_id), 0))
                for line, location, v in rows]


def pick_everything(db: Database, pick_list_id: int, picker: str = "picker@conveyor.test"
                    ) -> None:
    for line in walk(db, pick_list_id):
        if line.remaining:
            scan(db, pick_list_id, line.sku, line.remaining, line_id=line.id, picker=picker)


def allocations_of(db: Database, order_id: uuid.UUID) -> list[Allocation]:
    with db.read_session() as session:
        return list(session.exec(select(Allocation).where(Allocation.order_id == order_id)
                                 .order_by(col(Allocation.id))))


def status_of(db: Database, pick_list_id: int) -> str:
    with db.read_session() as session:
        found = session.get(PickList, pick_list_id)
        assert found is not None
        return found.status


def bin_units(db: Database, location_id: int, variant_id: int) -> tuple[int, int]:
    with db.read_session() as session:
        row = session.exec(select(BinStock).where(BinStock.location_id == location_id,
                                                  BinStock.variant_id == variant_id)).first()
        return (row.on_hand, row.allocated) if row else (0, 0)


def ledger_is_sound(db: Database) -> None:
    with db.read_session() as session:
        assert verify_ledger(session) == []


@pytest.fixture
def floor(db: Database) -> Iterator[Database]:
    """An empty shop whose screening approves everything; the ledger is checked at the end."""
    lenient_screening(db)
    yield db
    ledger_is_sound(db)


# -- building waves -------------------------------------------------------------------------------


def test_a_wave_merges_one_sku_per_bin_and_walks_the_bins_in_pick_sequence(floor, settings):
    db = floor
    far, near, middle = (bin_(db, "WH1", "C-01", 300), bin_(db, "WH1", "A-01", 100),
                         bin_(db, "WH1", "B-01", 200))
    lamp, mug, rug = variant(db, "Lamp"), variant(db, "Mug"), variant(db, "Rug")
    put(db, lamp, far, 10)
    put(db, mug, near, 10)
    put(db, rug, middle, 10)
    first = ready_order(db, settings, [(lamp, 2), (mug, 1)])
    second = ready_order(db, settings, [(lamp, 1), (rug, 3)])

    [pick_list] = build(db)

    lines = walk(db, pick_list.id)
    assert [(li.sequence, li.bin, li.sku, li.quantity) for li in lines] == [
        (1, "A-01", sku_of(db, mug), 1), (2, "B-01", sku_of(db, rug), 3),
        (3, "C-01", sku_of(db, lamp), 3)]
    assert pick_list.status == PickListStatus.OPEN
    for order in (first, second):
        assert {a.pick_list_id for a in allocations_of(db, order.id)} == {pick_list.id}
        assert reload(db, order.id).status == OrderStatus.ALLOCATED  # until a picker claims
    assert build(db) == []  # nothing is put on two lists


def test_a_wave_takes_the_oldest_orders_first_up_to_its_size(floor, settings):
    db = floor
    shelf = bin_(db, "WH1", "A-01", 10)
    cup = variant(db, "Cup")
    put(db, cup, shelf, 20)
    orders = [ready_order(db, settings, [(cup, 1)]) for _ in range(3)]

    [first] = build(db, max_orders=2)
    [second] = build(db, max_orders=2)

    def orders_on(pick_list_id: int) -> set[uuid.UUID]:
        with db.read_session() as session:
            return set(session.exec(select(Allocation.order_id)
                                    .where(Allocation.pick_list_id == pick_list_id)))
    assert orders_on(first.id) == {orders[0].id, orders[1].id}
    assert orders_on(second.id) == {orders[2].id}


def test_orders_split_over_two_warehouses_give_one_pick_list_per_warehouse(floor, settings):
    db = floor
    north, south = bin_(db, "NORTH", "N-01", 5), bin_(db, "SOUTH", "S-01", 5)
    kettle, pan = variant(db, "Kettle"), variant(db, "Pan")
    put(db, kettle, north, 5)
    put(db, pan, south, 5)
    order = ready_order(db, settings, [(kettle, 1), (pan, 2)])  # no warehouse has both

    lists = build(db)

    assert len(lists) == 2
    assert {p.warehouse_id for p in lists} == {warehouse(db, "NORTH"), warehouse(db, "SOUTH")}
    assert sorted(line.quantity for p in lists for line in walk(db, p.id)) == [1, 2]
    assert {a.pick_list_id for a in allocations_of(db, order.id)} == {p.id for p in lists}


def test_two_waves_built_at_once_never_share_an_order(floor, settings):
    db = floor
    shelf = bin_(db, "WH1", "A-01", 10)
    cup = variant(db, "Cup")
    put(db, cup, shelf, 20)
    orders = [ready_order(db, settings, [(cup, 1)]) for _ in range(6)]
    barrier = threading.Barrier(2)
    built: list[list[PickList]] = []

    def builder() -> None:
        barrier.wait()
        built.append(build(db, max_orders=4))

    threads = [threading.Thread(target=builder) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    listed = [a for o in orders for a in allocations_of(db, o.id)]
    assert all(a.pick_list_id is not None for a in listed)
    with db.read_session() as session:
        per_list = {p.id: session.exec(select(Allocation.order_id).distinct().where(
            Allocation.pick_list_id == p.id)).all() for batch in built for p in batch}
    assert sorted(len(v) for v in per_list.values()) == [2, 4]
    assert sum(len(v) for v in per_list.values()) == 6  # each order on exactly one list


# -- claiming -------------------------------------------------------------------------------------


def test_two_pickers_claiming_at_once_exactly_one_wins(floor, settings):
    db = floor
    shelf = bin_(db, "WH1", "A-01", 10)
    cup = variant(db, "Cup")
    put(db, cup, shelf, 5)
    order = ready_order(db, settings, [(cup, 2)])
    [pick_list] = build(db)
    pickers = [f"picker{i}@conveyor.test" for i in range(8)]
    barrier = threading.Barrier(len(pickers))
    won: list[str] = []
    refused: list[str] = []

    def claimer(picker: str) -> None:
        barrier.wait()
        try:
            claim(db, pick_list.id, picker)
            won.append(picker)
        except picking.PickListTaken:
            refused.append(picker)

    threads = [threading.Thread(target=claimer, args=(p,)) for p in pickers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(won) == 1 and len(refused) == len(pickers) - 1
    with db.read_session() as session:
        stored = session.get(PickList, pick_list.id)
        assert stored is not None
        assert (stored.status, stored.claimed_by) == (PickListStatus.CLAIMED, won[0])
        moves = session.exec(select(OrderEvent).where(
            OrderEvent.order_id == order.id, OrderEvent.to_status == OrderStatus.PICKING)).all()
    assert len(moves) == 1 and moves[0].actor == won[0]
    assert reload(db, order.id).status == OrderStatus.PICKING


def test_a_claim_held_open_makes_the_other_picker_wait_then_lose(floor, settings):
    """Two connections: the first claim's transaction stays open while the second claims."""
    db = floor
    shelf = bin_(db, "WH1", "A-01", 10)
    cup = variant(db, "Cup")
    put(db, cup, shelf, 5)
    ready_order(db, settings, [(cup, 1)])
    [pick_list] = build(db)
    first_claimed, second_started = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def slow_first() -> None:
        with db.unit_of_work() as uow:
            picking.claim_pick_list(uow=uow, pick_list_id=pick_list.id, picker="ann@x.test")
            first_claimed.set()
            second_started.wait(5)
            time.sleep(0.3)  # the second claim is now waiting on the row lock

    def second() -> None:
        first_claimed.wait(5)
        second_started.set()
        try:
            claim(db, pick_list.id, "bob@x.test")
            outcome["bob"] = "won"
        except picking.PickListTaken as exc:
            outcome["bob"] = exc.message

    threads = [threading.Thread(target=slow_first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert "ann@x.test" in str(outcome["bob"])
    assert claim(db, pick_list.id, "ann@x.test").claimed_by == "ann@x.test"  # her own again


# -- scanning -------------------------------------------------------------------------------------


def test_scans_pick_units_oldest_order_first_and_finish_the_list(floor, settings):
    db = floor
    shelf = bin_(db, "WH1", "A-01", 10)
    lamp = variant(db, "Lamp", barcode="4006381333931")
    put(db, lamp, shelf, 10)
    older = ready_order(db, settings, [(lamp, 2)])
    newer = ready_order(db, settings, [(lamp, 3)])
    [pick_list] = build(db)
    claim(db, pick_list.id)
    [line] = walk(db, pick_list.id)

    result = scan(db, pick_list.id, "4006381333931", 3, bin_code="a-01")  # barcode, any case bin

    assert result.picked_now == 3 and not result.list_done
    assert [a.status for a in allocations_of(db, older.id)] == [AllocationStatus.PICKED]
    assert sorted((a.status, a.quantity) for a in allocations_of(db, newer.id)) == [
        (AllocationStatus.ALLOCATED, 2), (AllocationStatus.PICKED, 1)]
    assert bin_units(db, shelf, lamp) == (7, 2)

    result = scan(db, pick_list.id, sku_of(db, lamp).lower(), 2, line_id=line.id)

    assert result.list_done and status_of(db, pick_list.id) == PickListStatus.DONE
    assert walk(db, pick_list.id)[0].picked == 5
    assert bin_units(db, shelf, lamp) == (5, 0)
    assert stock_of(db, lamp).on_hand == 10 and stock_of(db, lamp).allocated == 5


def test_a_wrong_item_is_refused_and_nothing_changes(floor, settings):
    db = floor
    shelf = bin_(db, "WH1", "A-01", 10)
    lamp, mug = variant(db, "Lamp", barcode="4006381333931"), variant(db, "Mug")
    put(db, lamp, shelf, 10)
    put(db, mug, shelf, 10)
    order = ready_order(db, settings, [(lamp, 1)])
    [pick_list] = build(db)
    claim(db, pick_list.id)
    [line] = walk(db, pick_list.id)

    for code, where in ((sku_of(db, mug), {"line_id": line.id}),
                        ("0000000000000", {"bin_code": "A-01"})):
        with pytest.raises(picking.WrongItem) as refused:
            scan(db, pick_list.id, code, 1, **where)  # type: ignore[arg-type]
        assert "Wrong item" in refused.value.message
        assert sku_of(db, lamp) in refused.value.message
        assert refused.value.details["expected_barcode"] == "4006381333931"

    assert walk(db, pick_list.id)[0].picked == 0
    assert [a.status for a in allocations_of(db, order.id)] == [AllocationStatus.ALLOCATED]
    assert bin_units(db, shelf, lamp) == (10, 1)


def test_more_than_the_line_wants_is_refused(floor, settings):
    db = floor
    shelf = bin_(db, "WH1", "A-01", 10)
    lamp = variant(db, "Lamp")
    put(db, lamp, shelf, 10)
    ready_order(db, settings, [(lamp, 2)])
    [pick_list] = build(db)
    claim(db, pick_list.id)
    [line] = walk(db, pick_list.id)

    with pytest.raises(picking.PickRefused, match="wants 2 more"):
        scan(db, pick_list.id, sku_of(db, lamp), 3, line_id=line.id)
    scan(db, pick_list.id, sku_of(db, lamp), 2, line_id=line.id)
    with pytest.raises(picking.PickListTaken, match="done"):
        scan(db, pick_list.id, sku_of(db, lamp), 1, line_id=line.id)
    assert walk(db, pick_list.id)[0].picked == 2


def test_only_the_picker_who_claimed_a_list_may_scan_it(floor, settings):
    db = floor
    shelf = bin_(db, "WH1", "A-01", 10)
    lamp = variant(db, "Lamp")
    put(db, lamp, shelf, 10)
    ready_order(db, settings, [(lamp, 1)])
    [pick_list] = build(db)

    with pytest.raises(picking.PickListTaken, match="Claim"):
        scan(db, pick_list.id, sku_of(db, lamp), bin_code="A-01")
    claim(db, pick_list.id, "ann@x.test")
    with pytest.raises(picking.PickListTaken, match=r"ann@x\.test"):
        scan(db, pick_list.id, sku_of(db, lamp), bin_code="A-01", picker="bob@x.test")


# -- short picks ----------------------------------------------------------------------------------


def movements(db: Database, kind: MovementKind) -> list[StockMovement]:
    with db.read_session() as session:
        return list(session.exec(select(StockMovement).where(StockMovement.kind == kind)
                                 .order_by(col(StockMovement.id))))


def test_a_short_pick_takes_what_was_found_corrects_the_bin_and_reallocates_elsewhere(
        floor, settings):
    db = floor
    first_bin, spare_bin = bin_(db, "WH1", "A-01", 10), bin_(db, "WH1", "D-09", 900)
    lamp = variant(db, "Lamp")
    put(db, lamp, first_bin, 4)  # the book says 4; only 1 is really there
    order = ready_order(db, settings, [(lamp, 3)])
    put(db, lamp, spare_bin, 5)  # arrives after the order was allocated to the first bin
    [pick_list] = build(db)
    claim(db, pick_list.id)
    [line] = walk(db, pick_list.id)

    result = short(db, pick_list.id, line.id, found=1)

    assert (result.picked, result.short, result.correction) == (1, 2, -3)
    [number] = result.given_back
    assert result.given_back == {number: 2} and result.reallocated == {number: 2}
    assert result.backordered == {} and result.list_done
    after = walk(db, pick_list.id)[0]
    assert (after.picked, after.short, after.remaining) == (1, 2, 0)
    assert bin_units(db, first_bin, lamp) == (0, 0)
    assert bin_units(db, spare_bin, lamp) == (5, 2)
    [correction] = movements(db, MovementKind.COUNT_CORRECTION)
    assert (correction.location_id, correction.on_hand_delta) == (first_bin, -3)
    new = [a for a in allocations_of(db, order.id) if a.status == AllocationStatus.ALLOCATED]
    assert [(a.location_id, a.quantity, a.pick_list_id) for a in new] == [(spare_bin, 2, None)]
    with db.read_session() as session:
        notes = session.exec(select(OrderEvent).where(OrderEvent.order_id == order.id,
                                                      col(OrderEvent.note).contains("Short"))
                             ).all()
    assert len(notes) == 1 and not notes[0].public and "2 set aside" in notes[0].note

    [next_list] = build(db)  # the re-allocated units go on the next wave
    assert [(li.bin, li.quantity) for li in walk(db, next_list.id)] == [("D-09", 2)]
    claim(db, next_list.id)
    pick_everything(db, next_list.id)
    assert sum(a.quantity for a in allocations_of(db, order.id)
               if a.status == AllocationStatus.PICKED) == 3


def test_what_no_bin_has_is_backordered_and_found_again_on_a_later_wave(floor, settings):
    db = floor
    shelf = bin_(db, "WH1", "A-01", 10)
    lamp, mug = variant(db, "Lamp"), variant(db, "Mug")
    put(db, lamp, shelf, 2)
    put(db, mug, shelf, 1)
    order = ready_order(db, settings, [(lamp, 2), (mug, 1)])
    [pick_list] = build(db)
    claim(db, pick_list.id)
    lamp_line = next(li for li in walk(db, pick_list.id) if li.sku == sku_of(db, lamp))

    result = short(db, pick_list.id, lamp_line.id, found=0)

    assert (result.picked, result.short) == (0, 2)
    assert result.backordered == {reload(db, order.id).number: 2}
    assert not result.list_done  # the mug is still to pick
    with db.read_session() as session:
        line = session.exec(select(OrderLine).where(OrderLine.order_id == order.id,
                                                    OrderLine.variant_id == lamp)).one()
        assert line.backordered == 2
        note = session.exec(select(OrderEvent).where(
            OrderEvent.order_id == order.id, col(OrderEvent.note).contains("backordered"))).one()
        assert not note.public
    assert stock_of(db, lamp).on_hand == 0 and stock_of(db, lamp).allocated == 0
    ledger_is_sound(db)

    put(db, lamp, bin_(db, "WH1", "B-02", 20), 5)  # new stock arrives
    [later] = build(db)

    assert [(li.bin, li.quantity) for li in walk(db, later.id)] == [("B-02", 2)]
    with db.read_session() as session:
        line = session.exec(select(OrderLine).where(OrderLine.order_id == order.id,
                                                    OrderLine.variant_id == lamp)).one()
        assert line.backordered == 0


def test_a_short_pick_gives_back_other_orders_units_in_that_bin(floor, settings):
    db = floor
    shelf, other_shelf = bin_(db, "WH1", "A-01", 10), bin_(db, "WH1", "B-01", 20)
    lamp = variant(db, "Lamp")
    put(db, lamp, shelf, 3)
    first = ready_order(db, settings, [(lamp, 1)])
    [pick_list] = build(db)
    second = ready_order(db, settings, [(lamp, 2)])  # allocated to the same bin, not listed
    put(db, lamp, other_shelf, 1)
    claim(db, pick_list.id)
    [line] = walk(db, pick_list.id)

    result = short(db, pick_list.id, line.id, found=0)  # the bin is empty

    numbers = (reload(db, first.id).number, reload(db, second.id).number)
    assert result.given_back == {numbers[0]: 1, numbers[1]: 2}
    assert result.reallocated == {numbers[0]: 1}  # the oldest order gets the one spare unit
    assert result.backordered == {numbers[1]: 2}
    assert bin_units(db, shelf, lamp) == (0, 0)
    assert bin_units(db, other_shelf, lamp) == (1, 1)


def test_a_short_pick_may_count_units_left_in_the_bin(floor, settings):
    db = floor
    shelf = bin_(db, "WH1", "A-01", 10)
    lamp = variant(db, "Lamp")
    put(db, lamp, shelf, 10)
    order = ready_order(db, settings, [(lamp, 3)])
    [pick_list] = build(db)
    claim(db, pick_list.id)
    [line] = walk(db, pick_list.id)

    result = short(db, pick_list.id, line.id, found=1, left_in_bin=4)

    assert result.correction == 4 - 9
    assert bin_units(db, shelf, lamp) == (4, 0)
    assert result.reallocated == {} and result.backordered == {reload(db, order.id).number: 2}


def test_short_reports_that_are_no_shortage_are_refused(floor, settings):
    db = floor
    shelf = bin_(db, "WH1", "A-01", 10)
    lamp = variant(db, "Lamp")
    put(db, lamp, shelf, 10)
    ready_order(db, settings, [(lamp, 2)])
    [pick_list] = build(db)
    claim(db, pick_list.id)
    [line] = walk(db, pick_list.id)

    with pytest.raises(picking.PickRefused, match="no shortage"):
        short(db, pick_list.id, line.id, found=2)
    assert walk(db, pick_list.id)[0] == line
    assert movements(db, MovementKind.COUNT_CORRECTION) == []


def test_a_cancelled_order_leaves_its_line_and_the_list_can_be_completed(floor, settings):
    from fulfilment.cancellation import cancel_order

    db = floor
    shelf = bin_(db, "WH1", "A-01", 10)
    lamp = variant(db, "Lamp")
    put(db, lamp, shelf, 10)
    order = ready_order(db, settings, [(lamp, 2)])
    [pick_list] = build(db)
    claim(db, pick_list.id)
    with db.unit_of_work() as uow:
        cancel_order(uow=uow, order_id=order.id, reason="customer asked", actor="desk",
                     env=ENV, settings=settings)

    assert walk(db, pick_list.id)[0].remaining == 0
    with db.unit_of_work() as uow:
        done = picking.complete_pick_list(uow=uow, pick_list_id=pick_list.id,
                                          picker="picker@conveyor.test")
    assert done.status == PickListStatus.DONE
