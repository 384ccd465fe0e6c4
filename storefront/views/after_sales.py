"""The order status page's forms: send items back, cancel the order, write to the shop.

Each endpoint parses the form, calls one `fulfilment` service and redirects back to the order
page with a message; a refusal renders the page again with the reason next to the form and
what was typed kept.
"""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from conveyor.errors import DomainError
from conveyor.templating import create_environment
from fulfilment import returns, support
from fulfilment.cancellation import request_cancellation
from models.after_sales import CancellationStatus
from models.orders import Order
from storefront.after_sales import FormState
from storefront.views.orders import order_by_token, order_page, private
from storefront.web import db_of, flash, parse_int, redirect, render, run_service, settings_of

_emails = create_environment()
MAX_FIELD = 6000


def _order_id(request: Request) -> Order:
    with db_of(request).read_session() as session:
        return order_by_token(session, request.path_params["token"])


def _text(form: FormData, name: str) -> str:
    value = form.get(name, "")
    return value[:MAX_FIELD] if isinstance(value, str) else ""


def _back(order: Order) -> Response:
    return redirect(f"/orders/{order.status_token}")


async def _refused(request: Request, form_name: str, values: dict[str, str], message: str,
                   status_code: int) -> Response:
    context = await run_service(order_page, request)
    context[form_name] = FormState(values=values, error=message)
    return private(render(request, "storefront/order.html", context, status_code=status_code,
                          private=True))


def _status_of(exc: DomainError) -> int:
    return 429 if exc.code == "rate_limited" else 422


async def request_return(request: Request) -> Response:
    form = await request.form()
    order = await run_service(_order_id, request)
    values = {key: _text(form, key) for key in form if key != "csrf_token"}
    lines = []
    for key, raw in values.items():
        if key.startswith("quantity_"):
            variant_id = parse_int(key.removeprefix("quantity_"))
            quantity = parse_int(raw) if raw.strip() else 0
            if variant_id is None or quantity is None or not 0 <= quantity <= 10_000:
                return await _refused(request, "return_form", values,
                                      "Quantities must be whole numbers.", 422)
            lines.append(returns.ReturnLineRequest(variant_id, quantity))

    def act() -> str:
        with db_of(request).unit_of_work() as uow:
            return returns.request_return(uow=uow, order_id=order.id, lines=lines,
                                          reason=values.get("reason", ""), env=_emails,
                                          settings=settings_of(request)).number

    try:
        number = await run_service(act)
    except DomainError as exc:
        return await _refused(request, "return_form", values, exc.message, _status_of(exc))
    flash(request, f"Your return {number} is registered. We have emailed you the "
                   "instructions: write the number on the parcel.", "success")
    return _back(order)


async def withdraw_return(request: Request) -> Response:
    order = await run_service(_order_id, request)
    number = request.path_params["number"][:20]

    def act() -> None:
        with db_of(request).unit_of_work() as uow:
            returns.withdraw_return(uow=uow, order_id=order.id, number=number)

    try:
        await run_service(act)
    except DomainError as exc:
        return await _refused(request, "return_form", {}, exc.message, _status_of(exc))
    flash(request, f"Your return {number.upper()} is withdrawn: nothing to send back.",
          "success")
    return _back(order)


async def request_cancel(request: Request) -> Response:
    form = await request.form()
    order = await run_service(_order_id, request)
    values = {"reason": _text(form, "reason")}

    def act() -> tuple[str, str]:
        with db_of(request).unit_of_work() as uow:
            made = request_cancellation(uow=uow, order_id=order.id, reason=values["reason"],
                                        env=_emails, settings=settings_of(request))
            return made.status, made.outcome

    try:
        status, outcome = await run_service(act)
    except DomainError as exc:
        return await _refused(request, "cancel_form", values, exc.message, _status_of(exc))
    if status != CancellationStatus.CANCELLED:
        return await _refused(request, "cancel_form", values, outcome, 409)
    flash(request, f"Your order is cancelled. {outcome.removeprefix('Cancelled; ')}",
          "success")
    return _back(order)


async def post_message(request: Request) -> Response:
    form = await request.form()
    order = await run_service(_order_id, request)
    values = {"subject": _text(form, "subject"), "body": _text(form, "body")}

    def act() -> None:
        with db_of(request).unit_of_work() as uow:
            support.post_customer_message(uow=uow, order_id=order.id,
                                          subject=values["subject"], body=values["body"],
                                          settings=settings_of(request))

    try:
        await run_service(act)
    except DomainError as exc:
        return await _refused(request, "message_form", values, exc.message, _status_of(exc))
    flash(request, "Thank you: your message is with us. We answer here and by email.",
          "success")
    return _back(order)
