"""`conveyor screening backtest` as a process: a candidate rule set replayed over screened
orders, its count of changed decisions checked against one worked out from the stored scores,
and the database left exactly as it was."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func
from sqlmodel import col, select, update

from conveyor.db import Database
from conveyor.settings import PROJECT_ROOT, Settings
from conveyor.templating import create_environment
from fulfilment.screening import screen_order
from models.base import utcnow
from models.messaging import Email, OutboxMessage
from models.orders import Order, OrderEvent
from models.screening import DEFAULT_RULES, RuleSet, Screening
from storefront import checkout
from tests import shopping
from tests.factories import make_product
from tests.helpers import conveyor_command, process_env

ENV = create_environment()
FORWARDER = "c/o Shipito, Unter den Linden 1"


@dataclass(frozen=True)
class Spec:
    """One order: who buys, where it goes, how many units; `expected` is its default score
    (10 for the US test card and the German address, plus what the spec adds)."""

    email: str
    expected: int
    address: str = "Unter den Linden 1"
    units: int = 1
    bad_totals: bool = False


SPECS = [
    Spec("a1@example.com", 15),  # + new email domain
    Spec("a2@example.com", 10),
    Spec("a3@example.com", 25, units=6),  # + more than 5 units of one item
    Spec("b1@example.org", 45, address=FORWARDER),  # + new domain, + forwarder
    Spec("b2@example.org", 40, address=FORWARDER),  # exactly the review threshold
    Spec("c1@mailinator.com", 45),  # + disposable address
    Spec("c2@yopmail.com", 60, units=6),
    Spec("c3@guerrillamail.com", 75, address=FORWARDER),
    Spec("c4@trashmail.com", 90, address=FORWARDER, units=6),  # rejected
    Spec("d1@example.net", 30, units=6),
    Spec("a4@example.com", 10, bad_totals=True),  # reviewed for its quality issue
    Spec("c5@maildrop.cc", 90, address=FORWARDER, units=6),  # rejected
]


def place_and_screen(db: Database, settings: Settings, variant: int, n: int,
                     spec: Spec) -> uuid.UUID:
    cart_id, view = shopping.cart(db, [(variant, spec.units)])
    details = replace(shopping.DETAILS, email=spec.email, address=spec.address)
    with db.unit_of_work() as uow:  # each order from its own address and card: no velocity
        order = checkout.place_order(uow=uow, cart=view, cart_id=cart_id, details=details,
                                     pending_order_id=None, client_ip=f"198.51.100.{n + 1}",
                                     settings=settings, now=utcnow())
    card = f"42424242424200{n + 1:02d}"
    assert shopping.pay(db, settings, order.id, card).outcome == checkout.Outcome.AUTHORIZED
    if spec.bad_totals:
        with db.unit_of_work() as uow:
            uow.session.execute(update(Order).where(col(Order.id) == order.id).values(
                total_cents=Order.total_cents + 100, shipping_cents=Order.shipping_cents + 100))
    with db.unit_of_work() as uow:
        screening = screen_order(uow=uow, order_id=order.id, env=ENV, settings=settings)
        assert screening is not None
        assert screening.score == spec.expected, (spec, screening.signals)
    return order.id


@pytest.fixture
def screened(db: Database, settings: Settings) -> dict[str, Screening]:
    """Twelve screened orders, scores spread across both thresholds, by order number."""
    variant = make_product(db, variants=[("One", 2000, 200)]).variant_ids[0]
    for n, spec in enumerate(SPECS):
        place_and_screen(db, settings, variant, n, spec)
    with db.read_session() as session:
        rows = session.exec(select(Order.number, Screening).join(
            Screening, col(Screening.order_id) == Order.id)).all()
    by_number = {number: screening for number, screening in rows}
    decisions = sorted(s.decision for s in by_number.values())
    assert decisions.count("approve") == 4 and decisions.count("reject") == 2
    assert decisions.count("review") == 6
    return by_number


def decision_for(points: int, issues: list[dict[str, Any]], review: int, reject: int) -> str:
    if points >= reject:
        return "reject"
    if points >= review or issues:
        return "review"
    return "approve"


def snapshot(db: Database) -> dict[str, Any]:
    """Everything a backtest might touch, as plain values."""
    with db.read_session() as session:
        return {
            "screenings": sorted((s.model_dump(mode="json") for s in session.exec(
                select(Screening))), key=lambda s: s["id"]),
            "orders": sorted(session.exec(select(Order.number, Order.status,
                                                 Order.updated_at)).all()),
            "counts": {model.__name__: session.exec(select(func.count()).select_from(model))
                       .one() for model in (OrderEvent, OutboxMessage, Email, RuleSet)},
        }


def backtest(settings: Settings, rules: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        conveyor_command("screening", "backtest", "--rules", str(rules), *extra),
        env=process_env(settings), cwd=PROJECT_ROOT, capture_output=True, text=True,
        timeout=120, check=False)


CHANGED = re.compile(r"replayed (\d+) screened orders: (\d+) decisions would change")
EXAMPLE = re.compile(r"e\.g\. (\S+): (\w+) \(score (\d+)\) -> (\w+) \(score (\d+);")


def examples(output: str) -> dict[str, tuple[str, int, str, int]]:
    return {m[1]: (m[2], int(m[3]), m[4], int(m[5])) for m in EXAMPLE.finditer(output)}


def test_a_lower_review_threshold_changes_what_the_stored_scores_say_it_would(
    db, settings, screened, tmp_path
):
    body = DEFAULT_RULES.model_dump(mode="json")
    body["thresholds"]["review"] = 25
    rules = tmp_path / "stricter.json"
    rules.write_text(json.dumps(body))
    expected = {number: decision_for(s.score, s.quality_issues, 25, 80)
                for number, s in screened.items()}
    changed = {number for number, s in screened.items() if expected[number] != s.decision}
    assert len(changed) == 2  # the approved orders scoring 25 and 30
    before = snapshot(db)
    in_force = tmp_path / "in-force.json"
    in_force.write_text(DEFAULT_RULES.model_dump_json())

    same = backtest(settings, in_force)

    assert same.returncode == 0, same.stderr
    assert "replayed 12 screened orders: 0 decisions would change" in same.stdout
    assert "e.g." not in same.stdout

    result = backtest(settings, rules)

    assert result.returncode == 0, result.stderr
    match = CHANGED.search(result.stdout)
    assert match is not None, result.stdout
    assert (int(match[1]), int(match[2])) == (len(screened), len(changed))
    shown = examples(result.stdout)
    assert set(shown) == changed
    for number in changed:
        score = screened[number].score
        assert shown[number] == ("approve", score, "review", score)
    assert re.search(r"approve -> review\s+2\s+<- changes", result.stdout)
    assert re.search(r"reject -> reject\s+2\s*$", result.stdout, re.MULTILINE)
    assert snapshot(db) == before


def test_a_heavier_signal_changes_the_decisions_it_pushes_over_a_threshold(
    db, settings, screened, tmp_path
):
    body = DEFAULT_RULES.model_dump(mode="json")
    body["signals"]["sku_quantity"]["weight"] = 30
    rules = tmp_path / "heavier.json"
    rules.write_text(json.dumps({"version": 7, "body": body, "note": "as GET returns it"}))

    def rescored(s: Screening) -> int:
        return min(100, sum(30 if signal["code"] == "sku_quantity" else signal["weight"]
                            for signal in s.signals))

    expected = {number: (rescored(s), decision_for(rescored(s), s.quality_issues, 40, 80))
                for number, s in screened.items()}
    changed = {number for number, s in screened.items() if expected[number][1] != s.decision}
    assert len(changed) == 2  # 25 -> 40 and 30 -> 45: both now reviewed
    before = snapshot(db)

    result = backtest(settings, rules, "--examples", "1")

    assert result.returncode == 0, result.stderr
    match = CHANGED.search(result.stdout)
    assert match is not None, result.stdout
    assert (int(match[1]), int(match[2])) == (len(screened), len(changed))
    [(number, (before_decision, score_before, after, score_after))] = examples(
        result.stdout).items()  # only as many examples as asked for
    assert number in changed
    assert (before_decision, score_before) == (screened[number].decision,
                                               screened[number].score)
    assert (after, score_after) == (expected[number][1], expected[number][0])
    assert snapshot(db) == before


def test_an_invalid_rule_set_file_is_refused_without_a_traceback(db, settings, tmp_path):
    body = DEFAULT_RULES.model_dump(mode="json")
    body["thresholds"] = {"review": 90, "reject": 80}
    upside_down = tmp_path / "upside-down.json"
    upside_down.write_text(json.dumps(body))
    not_json = tmp_path / "not.json"
    not_json.write_text("{thresholds: ")
    a_list = tmp_path / "list.json"
    a_list.write_text(json.dumps([body]))

    for path in (upside_down, not_json, a_list):
        result = backtest(settings, path)
        assert result.returncode == 2, (path.name, result.stdout, result.stderr)
        assert "is not a valid rule set" in result.stderr
        assert "Traceback" not in result.stderr
