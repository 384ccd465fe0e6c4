"""`conveyor demo-data`: a believable shop, loaded once, with its stock in the ledger."""

from __future__ import annotations

from sqlmodel import func, select

from conveyor.cli.demo_data import DEMO_CODE, load_demo_data
from conveyor.db import Database
from conveyor.settings import Settings
from fulfilment.discounts import find_code
from fulfilment.inventory import verify_ledger
from models.catalog import Category, Product


def test_the_demo_shop_loads_once_with_a_code_to_try_and_an_exact_ledger(
        db: Database, settings: Settings):
    # When the demo data is loaded twice
    first = load_demo_data(settings)
    second = load_demo_data(settings)

    # Then the first run loads a catalogue, stock and the discount code, the second nothing
    assert DEMO_CODE in first and "nothing loaded" in second
    with db.read_session() as session:
        assert session.exec(select(func.count()).select_from(Product)).one() >= 40
        assert session.exec(select(func.count()).select_from(Category)).one() >= 5
        code = find_code(session, DEMO_CODE.lower())
        assert code is not None and code.paused is False and code.per_customer_limit == 1
        assert verify_ledger(session) == []
