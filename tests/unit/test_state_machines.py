from datetime import UTC, datetime

import pytest

from models.orders import (
    ALLOWED_TRANSITIONS,
    TERMINAL_STATUSES,
    IllegalTransition,
    Order,
    OrderStatus,
    transition,
)
from models.payments import PaymentStatus, payment_can_move, status_from_intent

AT = datetime(2026, 11, 23, tzinfo=UTC)


def order(status=OrderStatus.PENDING_PAYMENT):
    return Order(number="CV-TEST", status=status, status_token="t" * 32, email="a@b.de",
                 full_name="A B", phone="+491", address="x", city="y", postal_code="1",
                 country="DE", shipping_method="standard", shipping_method_name="S",
                 subtotal_cents=0, shipping_cents=0, tax_rate_bps=0, tax_cents=0,
                 total_cents=0)


def test_the_happy_path_is_allowed_step_by_step_and_each_step_is_recorded():
    o = order()
    path = [OrderStatus.AUTHORIZED, OrderStatus.APPROVED, OrderStatus.ALLOCATED,
            OrderStatus.PICKING, OrderStatus.PACKED, OrderStatus.SHIPPED]
    for target in path:
        before = o.status
        event = transition(o, target, actor="test", reason="because", at=AT)
        assert (event.from_status, event.to_status, event.actor) == (before, target, "test")
        assert o.status == target


def test_an_order_never_moves_backwards_or_out_of_an_end_state():
    o = order(OrderStatus.AUTHORIZED)
    with pytest.raises(IllegalTransition):
        transition(o, OrderStatus.PENDING_PAYMENT, actor="late event", reason="", at=AT)
    assert o.status == OrderStatus.AUTHORIZED
    for end in TERMINAL_STATUSES:
        assert ALLOWED_TRANSITIONS[end] == frozenset()
    assert {OrderStatus.SHIPPED, OrderStatus.EXPIRED, OrderStatus.CANCELLED,
            OrderStatus.REJECTED, OrderStatus.PAYMENT_FAILED} == TERMINAL_STATUSES


def test_every_state_is_in_the_table():
    assert set(ALLOWED_TRANSITIONS) == set(OrderStatus)


@pytest.mark.parametrize(("intent", "ours"), [
    ("requires_capture", PaymentStatus.AUTHORIZED),
    ("succeeded", PaymentStatus.CAPTURED),
    ("requires_action", PaymentStatus.REQUIRES_ACTION),
    ("requires_payment_method", PaymentStatus.FAILED),
    ("canceled", PaymentStatus.CANCELED),
    ("processing", None),
    ("requires_confirmation", None),
])
def test_stripe_intent_states_map_onto_payment_states(intent, ours):
    assert status_from_intent(intent) == ours


def test_a_payment_does_not_go_back_from_authorised_to_failed_or_pending():
    assert payment_can_move(PaymentStatus.PENDING, PaymentStatus.AUTHORIZED)
    assert payment_can_move(PaymentStatus.REQUIRES_ACTION, PaymentStatus.AUTHORIZED)
    assert not payment_can_move(PaymentStatus.AUTHORIZED, PaymentStatus.FAILED)
    assert not payment_can_move(PaymentStatus.AUTHORIZED, PaymentStatus.REQUIRES_ACTION)
    assert not payment_can_move(PaymentStatus.CANCELED, PaymentStatus.AUTHORIZED)
    assert payment_can_move(PaymentStatus.AUTHORIZED, PaymentStatus.CANCELED)
