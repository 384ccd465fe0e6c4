"""Checkout: the form, the order it places, and the payment attempt that follows.

The journey of one press of `Pay`:
1. `parse_checkout_form` turns the posted fields into normalised details or field errors.
2. `place_order` (one transaction) creates the order, or updates the session's order still
   waiting for payment, and reserves its stock: a declined card followed by another card never
   makes a second order.
3. `pay_order` records a payment attempt, then creates and confirms a manual-capture
   PaymentIntent at Stripe (outside any transaction, with idempotency keys derived from the
   order and attempt), and records Stripe's answer through `fulfilment.payments.apply_intent`,
   the same path webhooks take.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from jinja2 import Environment
from sqlalchemy import func
from sqlmodel import Session, col, delete, select

from conveyor.db import Database, UnitOfWork
from conveyor.errors import DomainError
from conveyor.settings import Settings
from conveyor.stripe_gateway import (
    IntentSnapshot,
    PaymentDeclined,
    PaymentProviderError,
    StripeGateway,
)
from fulfilment import discounts, payments
from fulfilment.inventory import LineRequest, reserve_lines
from models.contact import (
    InvalidField,
    normalise_country,
    normalise_email,
    normalise_phone,
    normalise_postal_code,
    normalise_text,
)
from models.discounts import DiscountLine, normalise_code
from models.orders import Order, OrderEvent, OrderLine, OrderStatus
from models.payments import Payment
from models.pricing import Totals, order_totals
from models.shipping import DEFAULT_SHIPPING, ShippingMethod, shipping_method
from storefront.cart import CartView

FIELDS = ("email", "full_name", "phone", "address", "city", "postal_code", "country",
          "shipping_method")
TOKEN_PATTERN = re.compile(r"(tok|pm)_[A-Za-z0-9_]{6,64}")
NUMBER_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


class CartEmpty(DomainError):
    code = "cart_empty"


class TooManyAttempts(DomainError):
    code = "too_many_attempts"


@dataclass(frozen=True)
class CheckoutDetails:
    email: str
    full_name: str
    phone: str
    address: str
    city: str
    postal_code: str
    country: str
    shipping: ShippingMethod
    discount_code: str = ""  # as typed, normalised; "" for none


@dataclass
class CheckoutForm:
    values: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)
    details: CheckoutDetails | None = None
    payment_token: str = ""


def parse_checkout_form(data: Mapping[str, str], *, require_payment: bool = True) -> CheckoutForm:
    """Validate every field, collecting one message per bad field and keeping what was typed."""
    values = {name: str(data.get(name, ""))[:400] for name in FIELDS}
    values["discount_code"] = str(data.get("discount_code", "")).strip()[:80]
    form = CheckoutForm(values=values)
    errors = form.errors
    clean: dict[str, str] = {}

    def check(name: str, rule: object) -> None:
        try:
            clean[name] = rule(values[name])  # type: ignore[operator]
        except InvalidField as exc:
            errors[name] = str(exc)

    check("country", normalise_country)
    country = clean.get("country")
    check("email", normalise_email)
    check("full_name", lambda v: normalise_text(v, what="full name", max_len=200))
    check("phone", lambda v: normalise_phone(v, country))
    check("address", lambda v: normalise_text(v, what="address", min_len=4, max_len=300))
    check("city", lambda v: normalise_text(v, what="city", max_len=120))
    check("postal_code", lambda v: normalise_postal_code(v, country))
    method = shipping_method(values["shipping_method"] or DEFAULT_SHIPPING.code)
    if method is None:
        errors["shipping_method"] = "Choose one of the shipping methods shown."

    token = str(data.get("payment_token", "")).strip()
    if require_payment and not TOKEN_PATTERN.fullmatch(token):
        errors["payment"] = ("Enter your card details. Card payment needs JavaScript; "
                             "if it is switched off, please switch it on.")
    form.payment_token = token
    if not errors and method is not None:
        form.details = CheckoutDetails(shipping=method,
                                       discount_code=normalise_code(values["discount_code"]),
                                       **clean)
    return form


def totals_for(cart: CartView, method: ShippingMethod, country: str,
               discount_cents: int = 0) -> Totals:
    return order_totals(cart.subtotal_cents, method, country, discount_cents)


def discount_lines(cart: CartView) -> list[DiscountLine]:
    """The cart's lines as the discount rules see them (in the cart's order)."""
    return [DiscountLine(product_id=item.entry.product.id or 0,
                         category_id=item.entry.category.id or 0,
                         total_cents=item.line_total_cents) for item in cart.items]


def _new_number(session: Session) -> str:
    while True:
        number = "CV-" + "".join(secrets.choice(NUMBER_ALPHABET) for _ in range(8))
        if session.exec(select(Order.id).where(Order.number == number)).first() is None:
            return number


def place_order(
    *, uow: UnitOfWork, cart: CartView, cart_id: uuid.UUID, details: CheckoutDetails,
    pending_order_id: uuid.UUID | None, client_ip: str, settings: Settings, now: datetime,
    device_id: str = "",
) -> Order:
    """Create the order for this cart, or refresh the session's order still awaiting payment.

    Reserves the lines until now + RESERVATION_MINUTES through `fulfilment.inventory` (locks in
    primary-key order; InsufficientStock leaves nothing behind because the transaction rolls
    back). Prices come from `cart`, which the caller computed from the catalogue just now.

    A discount code in `details` is decided again here under the code's row lock
    (`fulfilment.discounts.claim_code`) and its redemption recorded in this transaction, so
    concurrent checkouts never use a code beyond its limits; placing the pending order again
    (after a declined card) replaces its one redemption instead of adding a second. Raises
    DiscountRefused, leaving nothing behind, when the code cannot be used.
    """
    if cart.is_empty:
        raise CartEmpty("Your cart is empty.")
    session = uow.session
    order: Order | None = None
    if pending_order_id is not None:
        order = session.get(Order, pending_order_id, with_for_update=True)
        if order is not None and (order.status != OrderStatus.PENDING_PAYMENT
                                  or order.cart_id != cart_id):
            order = None

    claim = discounts.claim_code(
        uow=uow, typed=details.discount_code, lines=discount_lines(cart), email=details.email,
        now=now, order_id=order.id if order is not None else None,
    ) if details.discount_code else None
    shares = claim.verdict.line_discounts if claim else tuple(0 for _ in cart.items)
    totals = totals_for(cart, details.shipping, details.country,
                        claim.verdict.discount_cents if claim else 0)
    contact: dict[str, Any] = {
        "email": details.email, "email_domain": details.email.rsplit("@", 1)[-1].lower(),
        "full_name": details.full_name, "phone": details.phone,
        "address": details.address, "city": details.city, "postal_code": details.postal_code,
        "country": details.country, "shipping_method": details.shipping.code,
        "shipping_method_name": details.shipping.name, "subtotal_cents": totals.subtotal_cents,
        "shipping_cents": totals.shipping_cents, "tax_rate_bps": totals.tax_rate_bps,
        "tax_cents": totals.tax_cents, "total_cents": totals.total_cents,
        "discount_code": claim.code.code if claim else None,
        "discount_cents": totals.discount_cents,
    }
    if order is None:
        order = Order(number=_new_number(session), status_token=secrets.token_urlsafe(24),
                      cart_id=cart_id, client_ip=client_ip, device_id=device_id,
                      created_at=now, **contact)
        session.add(order)
        session.flush()
        session.add(OrderEvent(order_id=order.id, created_at=now, to_status=order.status,
                               actor="storefront", note="Order placed.", public=True))
    else:
        for name, value in contact.items():
            setattr(order, name, value)
        order.client_ip = client_ip
        order.device_id = device_id or order.device_id
        order.updated_at = now
        session.execute(delete(OrderLine).where(col(OrderLine.order_id) == order.id))

    discounts.record_redemption(uow=uow, order_id=order.id, claim=claim, email=details.email,
                                now=now)
    for item, share in zip(cart.items, shares, strict=True):
        assert item.variant.id is not None
        session.add(OrderLine(
            order_id=order.id, variant_id=item.variant.id, sku=item.variant.sku,
            product_name=item.entry.product.name, variant_name=item.variant.name,
            unit_price_cents=item.price.cents, regular_price_cents=item.price.regular_cents,
            quantity=item.quantity,
            line_total_cents=item.line_total_cents, discount_cents=share,
        ))
    until = now + timedelta(minutes=settings.reservation_minutes)
    reserve_lines(
        uow=uow, order_id=order.id, until=until,
        lines=[LineRequest(i.variant.id, i.quantity) for i in cart.items if i.variant.id],
    )
    order.expires_at = until
    session.flush()
    return order


def check_payment_rate(
    session: Session, *, client_ip: str, email: str, settings: Settings, now: datetime,
) -> None:
    """Card testing guard: at most so many payment attempts per IP and per email an hour."""
    since = now - timedelta(hours=1)
    base = select(func.count()).select_from(Payment).where(col(Payment.created_at) >= since)
    by_ip = session.exec(base.where(Payment.client_ip == client_ip)).one()
    by_email = session.exec(base.where(Payment.email == email)).one()
    if (by_ip >= settings.payment_attempts_per_ip_per_hour
            or by_email >= settings.payment_attempts_per_email_per_hour):
        raise TooManyAttempts(
            "Too many payment attempts. Please wait an hour before trying again, "
            "or contact us if you need help."
        )


class Outcome(StrEnum):
    AUTHORIZED = "authorized"
    REQUIRES_ACTION = "requires_action"
    DECLINED = "declined"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class PaymentOutcome:
    outcome: Outcome
    payment_id: uuid.UUID
    message: str = ""
    client_secret: str | None = None


def pay_order(
    *, db: Database, gateway: StripeGateway, env: Environment, settings: Settings,
    order_id: uuid.UUID, payment_token: str, client_ip: str,
) -> PaymentOutcome:
    """One payment attempt for a placed order; see the module docstring for the steps."""
    with db.unit_of_work() as uow:
        payment = payments.begin_attempt(uow=uow, order_id=order_id, client_ip=client_ip)
        order = uow.session.get(Order, order_id)
        assert order is not None
        metadata = {"order_id": str(order.id), "order_number": order.number,
                    "payment_id": str(payment.id), "attempt": str(payment.attempt)}
        amount, currency = payment.amount_cents, payment.currency
        create_key = payments.intent_idempotency_key(payment, "create")
        confirm_key = payments.intent_idempotency_key(payment, "confirm")
        payment_id = payment.id

    try:
        intent = gateway.create_intent(amount=amount, currency=currency,
                                       payment_token=payment_token, metadata=metadata,
                                       idempotency_key=create_key)
        with db.unit_of_work() as uow:
            payments.attach_intent(uow=uow, payment_id=payment_id, intent_id=intent.id)
        intent = gateway.confirm_intent(intent.id, idempotency_key=confirm_key)
    except PaymentDeclined as exc:
        with db.unit_of_work() as uow:
            payments.record_decline(uow=uow, payment_id=payment_id, code=exc.code,
                                    message=exc.message)
        return PaymentOutcome(Outcome.DECLINED, payment_id, decline_message(exc.code,
                                                                            exc.message))
    except PaymentProviderError:
        return PaymentOutcome(
            Outcome.UNAVAILABLE, payment_id,
            "We could not reach our payment provider. Your card was not charged; "
            "please try again in a moment.",
        )
    return record_intent(db=db, env=env, settings=settings, payment_id=payment_id,
                         intent=intent, source="checkout")


def record_intent(
    *, db: Database, env: Environment, settings: Settings, payment_id: uuid.UUID,
    intent: IntentSnapshot, source: str,
) -> PaymentOutcome:
    with db.unit_of_work() as uow:
        payments.apply_intent(uow=uow, intent=intent, env=env, settings=settings, source=source)
    if intent.status in ("requires_capture", "succeeded", "processing"):
        return PaymentOutcome(Outcome.AUTHORIZED, payment_id)
    if intent.status == "requires_action":
        return PaymentOutcome(Outcome.REQUIRES_ACTION, payment_id,
                              client_secret=intent.client_secret)
    return PaymentOutcome(Outcome.DECLINED, payment_id,
                          decline_message(intent.failure_code, intent.failure_message))


def decline_message(code: str, message: str) -> str:
    if code == "payment_intent_authentication_failure":
        return ("Your bank could not confirm this payment (3-D Secure failed). "
                "Please try again or use another card.")
    if code in ("expired_card", "incorrect_cvc", "incorrect_number", "insufficient_funds"):
        return f"{message or 'Your card was declined.'} Please check it or use another card."
    return "Your card was declined. Please try another card."


def payment_for_return(
    session: Session, *, payment_id: uuid.UUID, order_id: uuid.UUID,
) -> Payment | None:
    """The payment a 3-D Secure return refers to, if it belongs to the session's order."""
    payment = session.get(Payment, payment_id)
    if payment is None or payment.order_id != order_id:
        return None
    return payment
