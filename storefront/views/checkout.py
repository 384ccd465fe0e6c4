"""The one-page checkout: details, shipping, summary, card, `Pay`; and 3-D Secure's return."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from conveyor.errors import DomainError
from conveyor.stripe_gateway import PaymentProviderError
from fulfilment import discounts, payments
from fulfilment.inventory import InsufficientStock
from models.base import utcnow
from models.contact import shipping_countries
from models.discounts import Verdict
from models.money import format_money
from models.orders import Order, OrderStatus
from models.payments import PaymentStatus
from models.shipping import DEFAULT_SHIPPING, SHIPPING_METHODS, shipping_method
from storefront import cart as carts
from storefront import checkout
from storefront.views import account
from storefront.web import (
    CART_COUNT_KEY,
    CART_KEY,
    ORDER_KEY,
    catalogue_of,
    db_of,
    device_id,
    flash,
    gateway_of,
    parse_int,
    redirect,
    render,
    run_service,
    session_uuid,
    settings_of,
)

SHOP_COUNTRY = "DE"


def _cart(request: Request) -> carts.CartView:
    with db_of(request).read_session() as session:
        return carts.view_cart(session, catalogue_of(request), session_uuid(request, CART_KEY),
                               utcnow())


def _pending_order(request: Request) -> Order | None:
    order_id = session_uuid(request, ORDER_KEY)
    if order_id is None:
        return None
    with db_of(request).read_session() as session:
        order = session.get(Order, order_id)
    if order is None or order.status != OrderStatus.PENDING_PAYMENT:
        return None
    return order


def _prefill(order: Order | None) -> dict[str, str]:
    if order is None:
        return {"country": SHOP_COUNTRY, "shipping_method": DEFAULT_SHIPPING.code}
    return {name: str(getattr(order, name)) for name in checkout.FIELDS} | {
        "discount_code": order.discount_code or ""}


def _discount(request: Request, cart: carts.CartView, values: dict[str, str],
              ) -> Verdict | None:
    """The code typed on the page, decided for this cart now (None: no code typed)."""
    typed = values.get("discount_code", "").strip()
    if not typed or cart.is_empty:
        return None
    with db_of(request).read_session() as session:
        return discounts.quote(session, typed=typed, lines=checkout.discount_lines(cart),
                               email=values.get("email", ""), now=utcnow(),
                               exclude_order_id=session_uuid(request, ORDER_KEY))


def _page(request: Request, cart: carts.CartView, values: dict[str, str], *,
          errors: dict[str, str] | None = None, status_code: int = 200) -> Response:
    method = shipping_method(values.get("shipping_method", "")) or DEFAULT_SHIPPING
    country = values.get("country", "").upper()
    if country not in dict(shipping_countries()):
        country = SHOP_COUNTRY
    settings = settings_of(request)
    errors = dict(errors or {})
    verdict = _discount(request, cart, values)
    if verdict is not None and not verdict.ok:
        errors.setdefault("discount_code", verdict.message)
    discount = verdict.discount_cents if verdict is not None and verdict.ok else 0
    return render(request, "storefront/checkout.html", {
        "cart": cart, "values": values, "errors": errors,
        "totals": checkout.totals_for(cart, method, country, discount), "country": country,
        "countries": shipping_countries(), "methods": SHIPPING_METHODS,
        "discount": verdict if verdict is not None and verdict.ok else None,
        "method_prices": {m.code: m.price_for(cart.subtotal_cents - discount)
                          for m in SHIPPING_METHODS},
        "stripe_publishable_key": settings.stripe_publishable_key,
        "stripe_js_url": settings.stripe_js_url,
        "payments_ready": gateway_of(request) is not None,
        **account.checkout_context(request, values),
    }, status_code=status_code, private=True)


def show(request: Request) -> Response:
    cart = _cart(request)
    if cart.is_empty:
        flash(request, "Your cart is empty: add something first.", "info")
        return redirect("/cart")
    order = _pending_order(request)
    values = _prefill(order)
    if order is None:  # a signed-in customer's details, and the saved address chosen
        address_id = parse_int(request.query_params.get("address"))
        values |= account.checkout_values(request, address_id)
    return _page(request, cart, values)


def summary(request: Request) -> Response:
    """Totals for a country and shipping method, for the page to update as the shopper types."""
    cart = _cart(request)
    method = shipping_method(request.query_params.get("shipping_method", "")) or DEFAULT_SHIPPING
    country = request.query_params.get("country", "").upper()
    if country not in dict(shipping_countries()):
        country = SHOP_COUNTRY
    verdict = _discount(request, cart, {
        "discount_code": request.query_params.get("discount_code", "")[:80],
        "email": request.query_params.get("email", "")[:254]})
    discount = verdict.discount_cents if verdict is not None and verdict.ok else 0
    totals = checkout.totals_for(cart, method, country, discount)
    return JSONResponse({
        key: format_money(getattr(totals, f"{key}_cents"))
        for key in ("subtotal", "shipping", "tax", "total")
    } | {"tax_rate": f"{totals.tax_rate_bps / 100:g}%"} | (
        {} if verdict is None else {"discount": format_money(-discount) if discount else "",
                                    "discount_message": verdict.message}),
        headers={"cache-control": "no-store"})


async def apply_discount(request: Request) -> Response:
    """`Apply` next to the discount code: the page again with everything typed kept, the
    code's discount in the summary, or its refusal in plain words next to the field."""
    form_data = await request.form()
    form = checkout.parse_checkout_form({k: str(v) for k, v in form_data.items()},
                                        require_payment=False)
    cart = await run_service(_cart, request)
    if cart.is_empty:
        flash(request, "Your cart is empty: add something first.", "info")
        return redirect("/cart")
    if not form.values.get("discount_code"):
        return await run_service(_page, request, cart, form.values, errors={
            "discount_code": "Enter a discount code first."}, status_code=422)
    verdict = await run_service(_discount, request, cart, form.values)
    return await run_service(_page, request, cart, form.values,
                             status_code=200 if verdict is None or verdict.ok else 422)


def _cap_cart_to_stock(request: Request, error: InsufficientStock) -> None:
    cart_id = session_uuid(request, CART_KEY)
    if cart_id is None:
        return
    settings = settings_of(request)
    with db_of(request).unit_of_work() as uow:
        for shortage in error.shortages:
            try:
                carts.set_quantity(uow=uow, cart_id=cart_id, variant_id=shortage.variant_id,
                                   quantity=shortage.available,
                                   max_quantity=settings.max_line_quantity)
            except DomainError:
                continue


def _shortage_message(request: Request, error: InsufficientStock) -> str:
    snapshot = catalogue_of(request)
    parts = []
    for shortage in error.shortages:
        found = snapshot.variants.get(shortage.variant_id)
        name = f"{found[1].product.name} ({found[0].name})" if found else "an item"
        parts.append(f"only {shortage.available} left of {name}" if shortage.available
                     else f"{name} has sold out")
    return ("Sorry, while you were shopping " + "; ".join(parts)
            + ". We have updated your cart: please check it and pay again.")


async def pay(request: Request) -> Response:
    form_data = await request.form()
    form = checkout.parse_checkout_form({k: str(v) for k, v in form_data.items()})
    cart = await run_service(_cart, request)
    if cart.is_empty:
        flash(request, "Your cart is empty: add something first.", "info")
        return redirect("/cart")
    details = form.details
    form.values["save_address"] = "on" if form_data.get("save_address") == "on" else ""
    if details is None:
        return await run_service(_page, request, cart, form.values, errors=form.errors,
                                 status_code=422)
    gateway = gateway_of(request)
    if gateway is None:
        return await run_service(_page, request, cart, form.values, status_code=503, errors={
            "payment": "Card payments are not set up in this shop yet."})

    db, settings = db_of(request), settings_of(request)
    client_ip = request.client.host if request.client else ""
    device = device_id(request)
    now = utcnow()
    cart_id = session_uuid(request, CART_KEY)
    assert cart_id is not None
    claim = await run_service(account.checkout_claim, request, form.values)

    def place() -> Order:
        with db.unit_of_work() as uow:
            checkout.check_payment_rate(uow.session, client_ip=client_ip,
                                        email=details.email, settings=settings, now=now)
            placed = checkout.place_order(uow=uow, cart=cart, cart_id=cart_id,
                                          details=details,
                                          pending_order_id=session_uuid(request, ORDER_KEY),
                                          client_ip=client_ip, device_id=device,
                                          settings=settings, now=now)
            claim(uow, placed)
            return placed

    try:
        order = await run_service(place)
    except InsufficientStock as exc:
        await run_service(_cap_cart_to_stock, request, exc)
        return await run_service(_page, request, await run_service(_cart, request),
                                 form.values, status_code=409,
                                 errors={"cart": _shortage_message(request, exc)})
    except checkout.TooManyAttempts as exc:
        return await run_service(_page, request, cart, form.values, status_code=429,
                                 errors={"payment": exc.message})
    except discounts.DiscountRefused as exc:
        return await run_service(_page, request, cart, form.values, status_code=422,
                                 errors={"discount_code": exc.message})
    except DomainError as exc:
        return await run_service(_page, request, cart, form.values, status_code=422,
                                 errors={"payment": exc.message})
    request.session[ORDER_KEY] = str(order.id)

    outcome = await run_service(
        checkout.pay_order, db=db, gateway=gateway, env=request.app.state.templates.env,
        settings=settings, order_id=order.id, payment_token=form.payment_token,
        client_ip=client_ip,
    )
    return await run_service(_after_payment, request, order, outcome, cart, form.values)


def _after_payment(request: Request, order: Order, outcome: checkout.PaymentOutcome,
                   cart: carts.CartView, values: dict[str, str]) -> Response:
    if outcome.outcome == checkout.Outcome.AUTHORIZED:
        request.session.pop(ORDER_KEY, None)
        request.session[CART_COUNT_KEY] = 0
        return redirect(f"/checkout/confirmation/{order.status_token}")
    if outcome.outcome == checkout.Outcome.REQUIRES_ACTION:
        settings = settings_of(request)
        return render(request, "storefront/authenticate.html", {
            "order": order, "payment_id": outcome.payment_id,
            "client_secret": outcome.client_secret,
            "stripe_publishable_key": settings.stripe_publishable_key,
            "stripe_js_url": settings.stripe_js_url,
        }, private=True)
    status = 402 if outcome.outcome == checkout.Outcome.DECLINED else 503
    return _page(request, cart, values, status_code=status, errors={"payment": outcome.message})


async def authenticated(request: Request) -> Response:
    """Back from 3-D Secure in the page: ask Stripe how it went, then go on accordingly."""
    form = await request.form()
    order_id = session_uuid(request, ORDER_KEY)
    try:
        payment_id = uuid.UUID(str(form.get("payment_id", "")))
    except ValueError:
        payment_id = None
    gateway = gateway_of(request)
    if order_id is None or payment_id is None or gateway is None:
        flash(request, "We could not find that payment. Please try again.", "error")
        return redirect("/checkout")
    db, settings = db_of(request), settings_of(request)

    def refresh() -> tuple[Any, Order | None]:
        with db.read_session() as session:
            if checkout.payment_for_return(session, payment_id=payment_id,
                                           order_id=order_id) is None:
                return None, None
        result = payments.refresh_payment(db=db, gateway=gateway,
                                          env=request.app.state.templates.env,
                                          settings=settings, payment_id=payment_id,
                                          source="3-D Secure return")
        with db.read_session() as session:
            return result, session.get(Order, order_id)

    try:
        result, order = await run_service(refresh)
    except PaymentProviderError:
        flash(request, "We could not reach our payment provider. Please try again.", "error")
        return redirect("/checkout")
    if order is None:
        flash(request, "We could not find that payment. Please try again.", "error")
        return redirect("/checkout")
    if order.status != OrderStatus.PENDING_PAYMENT:
        request.session.pop(ORDER_KEY, None)
        request.session[CART_COUNT_KEY] = 0
        return redirect(f"/checkout/confirmation/{order.status_token}")
    message = (checkout.decline_message("payment_intent_authentication_failure", "")
               if result is None or result.payment_status != PaymentStatus.AUTHORIZED
               else "")
    cart = await run_service(_cart, request)
    return await run_service(_page, request, cart, _prefill(order), status_code=402,
                             errors={"payment": message or "The payment is not complete yet."})
