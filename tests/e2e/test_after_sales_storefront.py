"""The order status page's after-sales forms over HTTP: returning shipped items (and seeing
the return's progress to completion), cancelling before picking (and being refused after),
writing to the shop and reading its answers; refusals are readable and keep what was typed;
every form needs the session's CSRF token."""

from __future__ import annotations

import re

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from conveyor.db import Database
from conveyor.settings import Settings
from conveyor.stripe_gateway import create_gateway
from fulfilment import refunds, returns, support
from models.after_sales import (
    CancellationRequest,
    ItemCondition,
    ReturnRequest,
    SupportMessage,
)
from models.messaging import Email
from models.orders import Order, OrderStatus
from storefront.app import create_app
from tests import shopping
from tests.after_sales import ENV, lenient_screening, shipped_order
from tests.factories import make_product, stock_of


@pytest.fixture
def client(db: Database, settings: Settings):
    lenient_screening(db)
    with TestClient(create_app(settings, db=db), base_url="http://127.0.0.1:8000",
                    follow_redirects=True) as test_client:
        yield test_client


def csrf(page_html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page_html)
    assert match, "the page has no CSRF token"
    return match.group(1)


def page(client: TestClient, order: Order):
    response = client.get(f"/orders/{order.status_token}")
    assert response.status_code == 200
    return response


def post(client: TestClient, order: Order, form: str, data: dict[str, str]):
    token = csrf(page(client, order).text)
    return client.post(f"/orders/{order.status_token}/{form}",
                       data={"csrf_token": token, **data})


def shipped(db: Database, settings: Settings) -> tuple[Order, int, int]:
    made = make_product(db, name="Lamp", variants=[("Red", 2000, 10), ("Blue", 3000, 10)])
    red, blue = made.variant_ids
    return shipped_order(db, settings, [(red, 2), (blue, 1)]), red, blue


def test_a_customer_returns_items_and_follows_the_return_to_completion(client, db, settings):
    order, red, blue = shipped(db, settings)
    before = page(client, order).text
    assert 'data-testid="return-form"' in before and 'data-testid="cancel-form"' not in before

    response = post(client, order, "returns", {f"quantity_{red}": "1", f"quantity_{blue}": "0",
                                               "reason": "The red one is too bright"})

    assert response.status_code == 200 and str(response.url).endswith(order.status_token)
    with db.read_session() as session:
        request = session.exec(select(ReturnRequest)).one()
        email = session.exec(select(Email).where(Email.template == "return_requested")).one()
    assert f"Your return {request.number} is registered" in response.text
    assert "Requested: we are waiting for your parcel" in response.text
    assert settings.return_address in response.text and request.number in email.text_body
    assert 'max="1"' in response.text  # one red left to return

    with db.unit_of_work() as uow:  # the returns desk does its part
        returns.receive_return(uow=uow, return_id=request.id, received_by="stock@x.test",
                               lines=[returns.ReceivedLine(red, 1, ItemCondition.SELLABLE)])
    assert "Received: your refund is on its way" in page(client, order).text
    with db.unit_of_work() as uow:
        refund = returns.refund_return(uow=uow, return_id=request.id,
                                       requested_by="finance@x.test", settings=settings)
    refunds.process_refund(db=db, gateway=create_gateway(settings), env=ENV,
                           settings=settings, refund_id=refund.id)
    done = page(client, order).text
    assert "Refunded: this return is complete" in done
    assert 'data-status="refunded"' in done


def test_a_return_not_yet_sent_can_be_withdrawn_and_its_units_asked_for_again(
        client, db, settings):
    # Given a requested return of both red lamps
    order, red, _ = shipped(db, settings)
    post(client, order, "returns", {f"quantity_{red}": "2", "reason": "Changed my mind"})
    with db.read_session() as session:
        number = session.exec(select(ReturnRequest)).one().number
    assert 'data-testid="withdraw-return"' in page(client, order).text

    # When the customer withdraws it
    withdrawn = post(client, order, f"returns/{number}/withdraw", {})

    # Then it shows as withdrawn, with no button, and both lamps can be returned again
    assert withdrawn.status_code == 200 and f"Your return {number} is withdrawn" in withdrawn.text
    assert 'data-status="cancelled"' in withdrawn.text and "Withdrawn" in withdrawn.text
    assert 'data-testid="withdraw-return"' not in withdrawn.text and 'max="2"' in withdrawn.text

    # And once a return has arrived, it can no longer be withdrawn
    post(client, order, "returns", {f"quantity_{red}": "1", "reason": "Too bright after all"})
    with db.read_session() as session:
        second = session.exec(select(ReturnRequest).where(
            ReturnRequest.status == "requested")).one()
    with db.unit_of_work() as uow:
        returns.receive_return(uow=uow, return_id=second.id, received_by="stock@x.test",
                               lines=[returns.ReceivedLine(red, 1, ItemCondition.SELLABLE)])
    late = post(client, order, f"returns/{second.number}/withdraw", {})
    assert late.status_code == 422 and "can no longer be withdrawn" in late.text
    other = post(client, order, "returns/R-NOSUCH/withdraw", {})
    assert other.status_code == 422 and "No such return" in other.text


def test_return_refusals_are_readable_and_keep_what_was_typed(client, db, settings):
    order, red, _ = shipped(db, settings)

    too_many = post(client, order, "returns", {f"quantity_{red}": "5",
                                               "reason": "Keep <this> reason"})
    nothing = post(client, order, "returns", {f"quantity_{red}": "0", "reason": "Nothing?"})
    no_reason = post(client, order, "returns", {f"quantity_{red}": "1", "reason": ""})
    garbage = post(client, order, "returns", {f"quantity_{red}": "lots", "reason": "x"})
    strange_key = post(client, order, "returns", {"quantity_abc": "1", "reason": "Fine"})

    assert too_many.status_code == 422 and "At most 2 of Lamp (Red)" in too_many.text
    assert "Keep &lt;this&gt; reason</textarea>" in too_many.text  # kept, escaped
    assert 'value="5"' in too_many.text
    assert nothing.status_code == 422 and "Choose at least one item" in nothing.text
    assert no_reason.status_code == 422 and "why you are sending it back" in no_reason.text
    assert garbage.status_code == 422 and "whole numbers" in garbage.text
    assert strange_key.status_code == 422
    with db.read_session() as session:
        assert session.exec(select(ReturnRequest)).all() == []


def test_an_order_not_yet_shipped_offers_no_return_and_an_unknown_order_is_404(client, db,
                                                                              settings):
    variant = make_product(db).variant_ids[0]
    order = shopping.bought(db, settings, [(variant, 1)])
    text = page(client, order).text
    assert 'data-testid="return-form"' not in text
    refused = post(client, order, "returns", {f"quantity_{variant}": "1", "reason": "Why not"})
    assert refused.status_code == 422 and "Only items that have been shipped" in refused.text
    unknown = client.post("/orders/" + "x" * 32 + "/returns",
                          data={"csrf_token": csrf(text), "reason": "Hello"})
    assert unknown.status_code == 404


def test_cancelling_before_picking_refunds_and_after_shipping_is_refused(client, db, settings):
    variant = make_product(db, variants=[("Std", 2500, 10)]).variant_ids[0]
    order = shopping.bought(db, settings, [(variant, 2)])
    assert 'data-testid="cancel-form"' in page(client, order).text

    response = post(client, order, "cancel", {"reason": "Found it cheaper"})

    assert response.status_code == 200 and "Your order is cancelled" in response.text
    assert "is being refunded" in response.text
    assert 'data-testid="cancel-form"' not in response.text
    with db.read_session() as session:
        assert session.get(Order, order.id).status == OrderStatus.CANCELLED
    assert stock_of(db, variant).allocated == 0

    late, _, _ = shipped(db, settings)
    assert 'data-testid="cancel-form"' not in page(client, late).text
    refused = post(client, late, "cancel", {"reason": "Too late?"})
    assert refused.status_code == 409 and "already been shipped" in refused.text
    assert 'value="Too late?"' not in refused.text  # no form to keep it in: just the reason
    with db.read_session() as session:
        statuses = sorted(r.status for r in session.exec(select(CancellationRequest)))
    assert statuses == ["cancelled", "refused"]


def test_a_customer_writes_and_reads_the_shops_answer_on_the_order_page(client, db, settings):
    order, _, _ = shipped(db, settings)

    sent = post(client, order, "messages", {"subject": "Colour",
                                            "body": "Is the <b>red</b> one brighter?"})

    assert sent.status_code == 200 and "your message is with us" in sent.text
    assert "Is the &lt;b&gt;red&lt;/b&gt; one brighter?" in sent.text
    with db.read_session() as session:
        message = session.exec(select(SupportMessage)).one()
    with db.unit_of_work() as uow:
        support.reply_to_thread(uow=uow, thread_id=message.thread_id,
                                body="Yes, a little.\nIt glows.", author="sam@conveyor.test",
                                env=ENV, settings=settings)
    text = page(client, order).text
    assert "Yes, a little.\nIt glows." in text and "Conveyor Shop" in text
    assert "sam@conveyor.test" not in text


def test_message_refusals_keep_what_was_typed_and_the_limit_answers_429(client, db,
                                                                       settings):
    order, _, _ = shipped(db, settings)
    empty = post(client, order, "messages", {"subject": "Kept subject", "body": "  "})
    long_subject = post(client, order, "messages", {"subject": "s" * 201, "body": "Hi"})
    assert empty.status_code == 422 and "Write a message" in empty.text
    assert 'value="Kept subject"' in empty.text
    assert long_subject.status_code == 422 and "at most 200" in long_subject.text
    for n in range(settings.support_messages_per_order_per_hour):
        assert post(client, order, "messages", {"body": f"Message {n}"}).status_code == 200
    limited = post(client, order, "messages", {"body": "One more thing"})
    assert limited.status_code == 429 and "please wait" in limited.text
    assert "One more thing</textarea>" in limited.text


def test_every_after_sales_form_needs_the_csrf_token(client, db, settings):
    order, red, _ = shipped(db, settings)
    page(client, order)
    for form in ("returns", "cancel", "messages"):
        missing = client.post(f"/orders/{order.status_token}/{form}",
                              data={"reason": "x", "body": "x", f"quantity_{red}": "1"})
        forged = client.post(f"/orders/{order.status_token}/{form}",
                             data={"csrf_token": "forged", "body": "x"})
        assert (missing.status_code, forged.status_code) == (403, 403)
    with db.read_session() as session:
        assert session.exec(select(ReturnRequest)).all() == []
        assert session.exec(select(SupportMessage)).all() == []
        assert session.exec(select(CancellationRequest)).all() == []
