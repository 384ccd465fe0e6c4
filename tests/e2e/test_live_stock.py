"""Live stock on the catalogue pages: cached in the storefront, dropped when PostgreSQL says
it changed (storefront/live_stock.py and the triggers of migration 0006).

Changes are made by other connections, as the checkout, the workers or the back office make
them; the pages must follow within moments of the commit, in both directions.
"""

from __future__ import annotations

import re
import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, text
from sqlmodel import select
from starlette.testclient import TestClient

import storefront.web
from conveyor.db import Database
from conveyor.migrate import upgrade
from conveyor.settings import Settings
from fulfilment.inventory import LineRequest, receive_stock, release_reservations, reserve_lines
from models.base import utcnow
from models.inventory import BinStock
from storefront.app import create_app
from storefront.live_stock import LiveStock, StockCache
from tests.conftest import truncate_all
from tests.factories import make_pending_order, make_product
from tests.helpers import wait_for

NOTIFY_TIMEOUT = 0.5  # the notification is asynchronous, but a matter of milliseconds
AVAILABILITY = re.compile(r'data-testid="availability">\s*<span[^>]*>([^<]*)</span>')


def availability(html: str) -> str:
    match = AVAILABILITY.search(html)
    assert match, "the product page shows no availability"
    return match.group(1)


def reserve(db: Database, variant_id: int, quantity: int) -> uuid.UUID:
    order_id = make_pending_order(db)
    with db.unit_of_work() as uow:
        reserve_lines(uow=uow, order_id=order_id, until=utcnow() + timedelta(minutes=15),
                      lines=[LineRequest(variant_id, quantity)])
    return order_id


def release(db: Database, order_id: uuid.UUID) -> None:
    with db.unit_of_work() as uow:
        release_reservations(uow=uow, order_id=order_id, reason="test")


def receive(db: Database, variant_id: int, quantity: int) -> None:
    with db.unit_of_work() as uow:
        location_id = uow.session.exec(  # the bin that holds it already
            select(BinStock.location_id).where(BinStock.variant_id == variant_id)).first()
        assert location_id is not None
        receive_stock(uow=uow, variant_id=variant_id, location_id=location_id,
                      quantity=quantity, actor="test")


def live_stock(client: TestClient) -> LiveStock:
    stock: LiveStock = client.app.state.live_stock  # type: ignore[attr-defined]
    wait_for(lambda: stock.live, timeout=5, what="the stock listener")
    return stock


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    """The SQL this process sends through the shop's engine while the block runs."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def stock_queries(seen: list[str]) -> list[str]:
    return [s for s in seen if "FROM stock_item" in s]


@pytest.fixture
def client(db: Database, settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, db=db), base_url="http://127.0.0.1:8000") as shop:
        yield shop


# --- The cache on its own: a notification racing a read -----------------------------------


class FakeDatabase:
    """Stock that changes while a read is under way, with the notification the commit sends."""

    def __init__(self, values: dict[int, int]) -> None:
        self.values = values
        self.reads = 0
        self.during_next_read: Callable[[], None] = lambda: None

    def read(self, ids: list[int]) -> dict[int, int]:
        answer = {vid: self.values.get(vid, 0) for vid in ids}  # the read's snapshot...
        self.reads += 1
        act, self.during_next_read = self.during_next_read, lambda: None
        act()  # ...and what happens before the reader gets to store it
        return answer


def test_a_change_notified_during_a_read_keeps_the_read_value_out_of_the_cache():
    database = FakeDatabase({1: 5, 2: 7})
    cache = StockCache(database.read)
    cache.set_live(True)

    def sell_out_variant_1() -> None:
        database.values[1] = 0
        cache.invalidate(1)

    database.during_next_read = sell_out_variant_1
    assert cache.available([1, 2]) == {1: 5, 2: 7}  # what the read saw, for this page only
    assert cache.cached([1, 2]) is None  # variant 1's value came too late to be trusted
    assert cache.cached([2]) == {2: 7}  # the notification named 1 only
    assert cache.available([1, 2]) == {1: 0, 2: 7}
    assert cache.cached([1, 2]) == {1: 0, 2: 7}
    assert database.reads == 2

    # Overlapping reads: a change to 2 notified during the inner one spoils 2 for both.
    def read_2_meanwhile() -> None:
        database.during_next_read = lambda: (database.values.update({2: 1}), cache.invalidate(2))
        assert cache.available([2, 3]) == {2: 7, 3: 0}

    cache.invalidate(2)
    database.during_next_read = read_2_meanwhile
    assert cache.available([2]) == {2: 7}
    assert cache.cached([2]) is None and cache.cached([3]) == {3: 0}


def test_a_read_that_began_before_the_listener_was_lost_keeps_nothing():
    database = FakeDatabase({1: 5})
    cache = StockCache(database.read)
    cache.set_live(True)
    database.during_next_read = lambda: (cache.set_live(False), cache.set_live(True))
    assert cache.available([1]) == {1: 5}
    assert cache.cached([1]) is None

    database.during_next_read = cache.invalidate_all  # a TRUNCATE
    assert cache.available([1]) == {1: 5}
    assert cache.cached([1]) is None


def test_nothing_is_cached_or_served_unless_the_cache_is_live():
    database = FakeDatabase({1: 5})
    cache = StockCache(database.read)
    assert cache.available([1]) == {1: 5} and cache.available([1]) == {1: 5}
    assert database.reads == 2 and cache.cached([1]) is None
    cache.set_live(True)
    assert cache.available([1, 1]) == {1: 5} and cache.cached([1]) == {1: 5}
    cache.set_live(False)  # the listener is gone: what it cached is gone with it
    assert cache.cached([1]) is None and cache.cached([]) == {}


# --- The storefront with its listener on PostgreSQL ---------------------------------------


def test_the_product_page_follows_stock_changes_made_elsewhere_right_after_commit(client, db):
    made = make_product(db, variants=[("Std", 1000, 8)])
    variant = made.variant_ids[0]
    live_stock(client)

    def shows(label: str) -> bool:
        return availability(client.get(f"/p/{made.slug}").text) == label

    assert shows("In stock")
    assert live_stock(client).cached([variant]) == {variant: 8}
    five = reserve(db, variant, 5)
    wait_for(lambda: shows("Only 3 left"), timeout=NOTIFY_TIMEOUT, what="Only 3 left")
    three = reserve(db, variant, 3)
    wait_for(lambda: shows("Out of stock"), timeout=NOTIFY_TIMEOUT, what="Out of stock")
    release(db, three)
    wait_for(lambda: shows("Only 3 left"), timeout=NOTIFY_TIMEOUT, what="Only 3 left again")
    release(db, five)
    receive(db, variant, 2)
    wait_for(lambda: shows("In stock"), timeout=NOTIFY_TIMEOUT, what="In stock again")
    assert live_stock(client).cached([variant]) == {variant: 10}


def test_pages_seen_before_render_without_the_database_or_a_thread(db, settings, monkeypatch):
    made = make_product(db, name="Steady Mug", variants=[("S", 900, 8), ("L", 1200, 2)])
    hops: list[Callable[..., Any]] = []
    real_hop = storefront.web.run_in_threadpool

    async def counted_hop(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        hops.append(fn)
        return await real_hop(fn, *args, **kwargs)

    monkeypatch.setattr(storefront.web, "run_in_threadpool", counted_hop)
    quiet = settings.model_copy(update={"catalogue_check_seconds": 60})
    paths = ("/", "/c/testing", f"/p/{made.slug}", f"/p/{made.slug}?variant=0")
    with TestClient(create_app(quiet, db=db)) as client:
        live_stock(client)
        with statements(db) as first:
            assert all("Steady Mug" in client.get(path).text for path in paths)
        assert len(stock_queries(first)) == 1 and hops  # one stock read, then all in memory
        hops.clear()
        with statements(db) as later:
            for path in paths:
                page = client.get(path)
                assert page.status_code == 200 and "Steady Mug" in page.text
        assert later == [] and hops == []

        reserve(db, made.variant_ids[1], 1)  # only the changed variant is read again
        wait_for(lambda: "Only 1 left" in client.get(f"/p/{made.slug}").text,
                 timeout=NOTIFY_TIMEOUT, what="the change")
        with statements(db) as after_change:
            client.get("/c/testing")
        assert after_change == []


def test_a_truncate_empties_the_cache(client, db):
    made = make_product(db, variants=[("Std", 1000, 8)])
    stock = live_stock(client)
    client.get(f"/p/{made.slug}")
    assert stock.cached(made.variant_ids) is not None
    truncate_all(db)
    wait_for(lambda: stock.cached(made.variant_ids) is None, timeout=NOTIFY_TIMEOUT,
             what="the cache to be emptied")
    assert stock.live


def test_without_its_listener_the_storefront_reads_the_database_and_reconnects(
    client, db, monkeypatch
):
    made = make_product(db, variants=[("Std", 1000, 8)])
    variant = made.variant_ids[0]
    stock = live_stock(client)
    page = f"/p/{made.slug}"
    client.get(page)
    with statements(db) as seen:
        client.get(page)
    assert stock_queries(seen) == []

    refusing = threading.Event()
    refusing.set()
    connect = LiveStock._connect

    def flaky_connect(self: LiveStock, options: dict[str, Any]) -> psycopg.Connection[Any]:
        if refusing.is_set():
            raise psycopg.OperationalError("the test refuses the connection")
        return connect(self, options)

    monkeypatch.setattr(LiveStock, "_connect", flaky_connect)
    killed = stock.listener_pid
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": killed}).scalar()
    wait_for(lambda: not stock.live, timeout=NOTIFY_TIMEOUT, what="the cache to stop serving")
    assert stock.cached([variant]) is None

    reserve(db, variant, 5)  # no listener hears it: the pages read the database instead
    with statements(db) as seen:
        assert availability(client.get(page).text) == "Only 3 left"
        assert availability(client.get(page).text) == "Only 3 left"
    assert len(stock_queries(seen)) == 2

    refusing.clear()
    wait_for(lambda: stock.live, timeout=5, what="the listener to reconnect")
    assert stock.listener_pid not in (None, killed)
    reserve(db, variant, 3)
    wait_for(lambda: availability(client.get(page).text) == "Out of stock",
             timeout=NOTIFY_TIMEOUT, what="Out of stock")


def listener_pids(db: Database) -> list[int]:
    with db.engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'conveyor stock listener'")).scalars())


def test_the_running_storefront_follows_stock_and_outlives_its_listener(live_storefront, db):
    made = make_product(db, variants=[("Std", 1000, 8)])
    variant = made.variant_ids[0]

    def shows(label: str) -> bool:
        with urllib.request.urlopen(f"{live_storefront}/p/{made.slug}", timeout=5) as response:
            return availability(response.read().decode()) == label

    wait_for(lambda: shows("In stock"), timeout=5, what="the new product")
    [listener] = wait_for(lambda: len(pids := listener_pids(db)) == 1 and pids, timeout=5,
                          what="one listener")
    order = reserve(db, variant, 5)
    wait_for(lambda: shows("Only 3 left"), timeout=NOTIFY_TIMEOUT, what="Only 3 left")

    with db.engine.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": listener})
    wait_for(lambda: listener_pids(db) not in ([], [listener]), timeout=5,
             what="a new listener")
    reserve(db, variant, 3)
    wait_for(lambda: shows("Out of stock"), timeout=NOTIFY_TIMEOUT, what="Out of stock")
    release(db, order)
    wait_for(lambda: shows("Only 5 left"), timeout=NOTIFY_TIMEOUT, what="Only 5 left")


# --- SQLite: no listener, no cache ---------------------------------------------------------


@pytest.mark.filterwarnings("ignore:.*expression-based index")  # SQLite cannot reflect them
def test_on_sqlite_pages_read_stock_on_every_request(tmp_path: Path):
    sqlite = Settings(var_dir=tmp_path, catalogue_check_seconds=0)
    upgrade(sqlite)
    db = Database.from_settings(sqlite)
    try:
        made = make_product(db, variants=[("Std", 1000, 8)])
        with TestClient(create_app(sqlite, db=db)) as client:
            stock: LiveStock = client.app.state.live_stock  # type: ignore[attr-defined]
            assert stock.start() is False and not stock.live
            assert availability(client.get(f"/p/{made.slug}").text) == "In stock"
            reserve(db, made.variant_ids[0], 5)
            assert availability(client.get(f"/p/{made.slug}").text) == "Only 3 left"
            assert stock.cached(made.variant_ids) is None
    finally:
        db.dispose()
