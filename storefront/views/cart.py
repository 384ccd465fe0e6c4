"""The cart page and its forms: add, change quantity, remove."""

from __future__ import annotations

import contextlib
import uuid

from sqlmodel import select
from starlette.requests import Request
from starlette.responses import Response

from conveyor.errors import DomainError
from models.base import utcnow
from models.cart import Cart
from models.catalog import Variant
from storefront import cart as carts
from storefront.web import (
    CART_COUNT_KEY,
    CART_KEY,
    catalogue_of,
    db_of,
    flash,
    parse_int,
    redirect,
    render,
    run_service,
    session_uuid,
    settings_of,
)


def _quantity_error(max_quantity: int) -> str:
    return f"Choose a quantity between 1 and {max_quantity}."


def _change(request: Request, cart_id: uuid.UUID | None, variant_id: int | None,
            sku: str, quantity: int, *, add: bool) -> tuple[uuid.UUID, carts.CartChange]:
    db = db_of(request)
    settings = settings_of(request)
    with db.unit_of_work() as uow:
        if variant_id is None and sku:
            variant_id = uow.session.exec(select(Variant.id).where(Variant.sku == sku)).first()
        if variant_id is None:
            raise carts.UnknownVariant("We could not find that product.")
        if cart_id is None or uow.session.get(Cart, cart_id) is None:
            cart_id = carts.create_cart(uow=uow)
        change = carts.set_quantity(uow=uow, cart_id=cart_id, variant_id=variant_id,
                                    quantity=quantity, max_quantity=settings.max_line_quantity,
                                    add=add)
    return cart_id, change


def _count(request: Request, cart_id: uuid.UUID) -> int:
    with db_of(request).read_session() as session:
        view = carts.view_cart(session, catalogue_of(request), cart_id, utcnow())
    return view.count


async def add(request: Request) -> Response:
    form = await request.form()
    settings = settings_of(request)
    quantity = parse_int(form.get("quantity", "1"))
    back = request.headers.get("referer") or "/cart"
    if not back.startswith(settings.base_url) and not back.startswith("/"):
        back = "/cart"
    if quantity is None or not 1 <= quantity <= settings.max_line_quantity:
        flash(request, _quantity_error(settings.max_line_quantity), "error")
        return redirect(back)
    variant_id = parse_int(form.get("variant_id"))
    sku = str(form.get("sku", ""))[:64]
    try:
        cart_id, change = await run_service(_change, request, session_uuid(request, CART_KEY),
                                            variant_id, sku, quantity, add=True)
    except DomainError as exc:
        flash(request, exc.message, "error")
        return redirect(back)
    request.session[CART_KEY] = str(cart_id)
    request.session[CART_COUNT_KEY] = await run_service(_count, request, cart_id)
    if change.capped_by_stock:
        flash(request, f"Only {change.quantity} can be had right now; "
                       "your cart holds all of them.", "warning")
    elif change.capped:
        flash(request, f"At most {settings.max_line_quantity} of one item per order.", "warning")
    else:
        flash(request, "Added to your cart.", "success")
    return redirect("/cart")


async def update(request: Request) -> Response:
    form = await request.form()
    settings = settings_of(request)
    cart_id = session_uuid(request, CART_KEY)
    variant_id = parse_int(form.get("variant_id"))
    quantity = parse_int(form.get("quantity"))
    if cart_id is None or variant_id is None:
        flash(request, "That item is no longer in your cart.", "error")
        return redirect("/cart")
    if quantity is None or not 0 <= quantity <= settings.max_line_quantity:
        flash(request, f"Choose a quantity between 0 and {settings.max_line_quantity}.", "error")
        return redirect("/cart")
    try:
        _, change = await run_service(_change, request, cart_id, variant_id, "", quantity,
                                      add=False)
    except DomainError as exc:
        flash(request, exc.message, "error")
        return redirect("/cart")
    if change.capped_by_stock:
        flash(request, f"Only {change.quantity} can be had right now.", "warning")
    request.session[CART_COUNT_KEY] = await run_service(_count, request, cart_id)
    return redirect("/cart")


async def remove(request: Request) -> Response:
    form = await request.form()
    cart_id = session_uuid(request, CART_KEY)
    variant_id = parse_int(form.get("variant_id"))
    if cart_id is not None and variant_id is not None:
        def _remove() -> None:
            with db_of(request).unit_of_work() as uow:
                carts.remove_line(uow=uow, cart_id=cart_id, variant_id=variant_id)
        with contextlib.suppress(DomainError):
            await run_service(_remove)
        request.session[CART_COUNT_KEY] = await run_service(_count, request, cart_id)
        flash(request, "Removed from your cart.", "success")
    return redirect("/cart")


def show(request: Request) -> Response:
    cart_id = session_uuid(request, CART_KEY)
    with db_of(request).read_session() as session:
        view = carts.view_cart(session, catalogue_of(request), cart_id, utcnow())
    if request.session.get(CART_COUNT_KEY, 0) != view.count:
        request.session[CART_COUNT_KEY] = view.count
    return render(request, "storefront/cart.html", {
        "cart": view, "max_quantity": settings_of(request).max_line_quantity,
    }, private=True)
