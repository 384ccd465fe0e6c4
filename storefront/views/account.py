"""Customer account pages: sign-up, sign-in (password or emailed link), sign-out, password
reset, email verification, and the signed-in pages (orders, addresses, details, changing
the email address, email preferences, deleting the account).

Every page here is private (no-store); pages under a link's token also send no referrer.
Links in emails open a page with a button: the token is spent by that POST, never by a GET,
so mail scanners that fetch links do not use them up.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from conveyor.db import UnitOfWork
from conveyor.errors import DomainError, NotFound
from conveyor.passwords import WeakPassword
from models.base import utcnow
from models.contact import shipping_countries
from models.customers import Customer, LinkPurpose
from models.orders import Order
from storefront import accounts
from storefront.sessions import current_customer, rotate_session
from storefront.web import db_of, flash, parse_int, redirect, render, run_service, settings_of

CHECK_EMAIL = ("If an account exists for {email}, we have sent it an email with a link. "
               "It works once, for {minutes} minutes.")
CHANGE_SENT = ("We have sent a link to {email}: open it to confirm the address and your account "
               "moves to it. It works once, for {minutes} minutes. Until then, sign in with "
               "your current address.")
SIGN_UP_SENT = ("Thank you. We have sent a link to {email}: open it to confirm your address and "
                "sign in. If you already have an account, the email tells you how to sign in.")

NEXT_PATH = re.compile(r"/(account|checkout)(/[A-Za-z0-9_-]{1,100}){0,3}")
Endpoint = Callable[[Request, Customer], Awaitable[Response]]


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


async def _form(request: Request) -> dict[str, str]:
    return {key: str(value) for key, value in (await request.form()).items()}


def _page(request: Request, template: str, context: dict[str, Any] | None = None, *,
          status_code: int = 200, customer: Customer | None = None,
          no_referrer: bool = False) -> Response:
    response = render(request, f"storefront/account/{template}",
                      {"customer": customer, "errors": {}, "values": {}, **(context or {})},
                      status_code=status_code, private=True)
    response.headers["cache-control"] = "no-store"
    if no_referrer:
        response.headers["referrer-policy"] = "no-referrer"
    return response


def signed_in_only(endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    """Run the endpoint with the signed-in customer; others go to sign in, and come back."""
    async def guarded(request: Request) -> Response:
        customer = await run_service(current_customer, request)
        if customer is None:
            flash(request, "Please sign in to see your account.", "info")
            return redirect(f"/account/sign-in?next={request.url.path}")
        return await endpoint(request, customer)
    guarded.__name__ = endpoint.__name__
    guarded.__doc__ = endpoint.__doc__
    return guarded


def _next_path(raw: str | None) -> str:
    """Where to go after signing in: only a path of this shop's account or checkout pages."""
    if raw and NEXT_PATH.fullmatch(raw):
        return raw
    return "/account"


def _sign_in(request: Request, customer: Customer, now: datetime, message: str) -> None:
    rotate_session(request, customer_id=customer.id, signed_in_at=now)
    flash(request, message, "success")


# -- Sign-up -------------------------------------------------------------------------------------


async def sign_up_page(request: Request) -> Response:
    if await run_service(current_customer, request) is not None:
        return redirect("/account")
    return _page(request, "sign_up.html")


async def sign_up(request: Request) -> Response:
    form = accounts.parse_sign_up_form(await _form(request))
    if form.value is None:
        return _page(request, "sign_up.html", {"values": form.values, "errors": form.errors},
                     status_code=422)
    details = form.value
    db, settings = db_of(request), settings_of(request)
    env = request.app.state.templates.env

    def create() -> None:
        with db.unit_of_work() as uow:
            accounts.sign_up(uow=uow, env=env, settings=settings, details=details, now=utcnow())

    await run_service(create)
    return _page(request, "check_email.html", {
        "title": "Check your email",
        "message": SIGN_UP_SENT.format(email=details.email)})


# -- Sign-in and sign-out ------------------------------------------------------------------------


async def sign_in_page(request: Request) -> Response:
    if await run_service(current_customer, request) is not None:
        return redirect("/account")
    return _page(request, "sign_in.html",
                 {"next": _next_path(request.query_params.get("next"))})


async def sign_in(request: Request) -> Response:
    data = await _form(request)
    email, password = data.get("email", "")[:254], data.get("password", "")
    next_path = _next_path(data.get("next"))
    values = {"email": email}
    if not email.strip() or not password:
        return _page(request, "sign_in.html", {"values": values, "next": next_path, "errors": {
            "sign_in": "Enter your email and your password."}}, status_code=422)
    db, settings = db_of(request), settings_of(request)
    env = request.app.state.templates.env
    now = utcnow()

    def check() -> accounts.SignInOutcome:
        with db.unit_of_work() as uow:
            return accounts.sign_in_with_password(uow=uow, env=env, settings=settings,
                                                  email=email, password=password,
                                                  client_ip=_client_ip(request), now=now)

    outcome = await run_service(check)
    if outcome.customer is None:
        refusal = outcome.refusal
        status = 429 if isinstance(refusal, accounts.SignInPaused) else (
            403 if isinstance(refusal, accounts.EmailNotVerified) else 401)
        message = refusal.message if refusal else "We could not sign you in."
        return _page(request, "sign_in.html", {"values": values, "next": next_path,
                                               "errors": {"sign_in": message}},
                     status_code=status)
    _sign_in(request, outcome.customer, now, "You are signed in.")
    return redirect(next_path)


async def request_sign_in_link(request: Request) -> Response:
    return await _request_link(request, LinkPurpose.SIGN_IN, "sign_in.html")


async def sign_out(request: Request) -> Response:
    rotate_session(request)
    flash(request, "You are signed out.", "success")
    return redirect("/")


# -- Emailed links -------------------------------------------------------------------------------


async def _request_link(request: Request, purpose: LinkPurpose, template: str) -> Response:
    data = await _form(request)
    email = data.get("email", "").strip()[:254]
    next_path = _next_path(data.get("next"))
    if "@" not in email:
        return _page(request, template, {"values": {"email": email}, "next": next_path,
                                         "errors": {"link": "Enter your email address."}},
                     status_code=422)
    db, settings = db_of(request), settings_of(request)
    env = request.app.state.templates.env

    def send() -> None:
        with db.unit_of_work() as uow:
            accounts.request_link(uow=uow, env=env, settings=settings, email=email,
                                  purpose=purpose, client_ip=_client_ip(request), now=utcnow())

    try:
        await run_service(send)
    except accounts.SignInPaused as exc:
        return _page(request, template, {"values": {"email": email}, "next": next_path,
                                         "errors": {"link": exc.message}}, status_code=429)
    return _page(request, "check_email.html", {
        "title": "Check your email",
        "message": CHECK_EMAIL.format(email=email, minutes=settings.customer_link_minutes)})


def _link_page(request: Request, purpose: LinkPurpose, template: str,
               context: dict[str, Any] | None = None, *, status_code: int = 200) -> Response:
    token = request.path_params["token"]

    def valid() -> bool:
        with db_of(request).read_session() as session:
            return accounts.check_link(session, token=token, purpose=purpose, now=utcnow())

    if not valid():
        return _page(request, "check_email.html", {
            "title": "This link does not work", "message": accounts.INVALID_LINK,
            "invalid": True}, status_code=410, no_referrer=True)
    return _page(request, template, {"token": token, **(context or {})},
                 status_code=status_code, no_referrer=True)


async def sign_in_link_page(request: Request) -> Response:
    return await run_service(_link_page, request, LinkPurpose.SIGN_IN, "link.html",
                             {"title": "Sign in", "button": "Sign in"})


async def verify_page(request: Request) -> Response:
    return await run_service(_link_page, request, LinkPurpose.VERIFY_EMAIL, "link.html",
                             {"title": "Confirm your email address",
                              "button": "Confirm and sign in"})


async def _spend(request: Request, purpose: LinkPurpose,
                 service: Callable[..., Customer], message: str, **kwargs: Any) -> Response:
    token = request.path_params["token"]
    db = db_of(request)
    now = utcnow()

    def spend() -> Customer:
        with db.unit_of_work() as uow:
            return service(uow=uow, token=token, now=now, **kwargs)

    try:
        customer = await run_service(spend)
    except accounts.InvalidLink as exc:
        return _page(request, "check_email.html", {
            "title": "This link does not work", "message": exc.message, "invalid": True},
            status_code=410, no_referrer=True)
    _sign_in(request, customer, now, message)
    return redirect("/account")


async def sign_in_with_link(request: Request) -> Response:
    return await _spend(request, LinkPurpose.SIGN_IN, accounts.sign_in_with_link,
                        "You are signed in.")


async def verify(request: Request) -> Response:
    return await _spend(request, LinkPurpose.VERIFY_EMAIL, accounts.verify_email,
                        "Thank you: your email address is confirmed and you are signed in.")


# -- Password reset ------------------------------------------------------------------------------


async def reset_request_page(request: Request) -> Response:
    return _page(request, "reset_request.html")


async def reset_request(request: Request) -> Response:
    return await _request_link(request, LinkPurpose.RESET_PASSWORD, "reset_request.html")


async def reset_page(request: Request) -> Response:
    return await run_service(_link_page, request, LinkPurpose.RESET_PASSWORD, "reset.html")


async def reset(request: Request) -> Response:
    form = accounts.parse_password(await _form(request))
    if form.value is None:
        return await run_service(_link_page, request, LinkPurpose.RESET_PASSWORD, "reset.html",
                                 {"errors": form.errors}, status_code=422)
    try:
        return await _spend(request, LinkPurpose.RESET_PASSWORD, accounts.reset_password,
                            "Your password is changed, and you are signed in. Anyone signed "
                            "in with the old one elsewhere is signed out.",
                            password=form.value)
    except WeakPassword as exc:
        return await run_service(_link_page, request, LinkPurpose.RESET_PASSWORD, "reset.html",
                                 {"errors": {"password": exc.message}}, status_code=422)


# -- Signed-in pages -----------------------------------------------------------------------------


@signed_in_only
async def orders(request: Request, customer: Customer) -> Response:
    def load() -> list[accounts.OrderRow]:
        with db_of(request).read_session() as session:
            return accounts.order_history(session, customer.id)

    return _page(request, "orders.html", {"orders": await run_service(load)},
                 customer=customer)


def _addresses(request: Request, customer_id: uuid.UUID) -> list[Any]:
    with db_of(request).read_session() as session:
        return accounts.addresses_of(session, customer_id)


@signed_in_only
async def addresses(request: Request, customer: Customer) -> Response:
    return _page(request, "addresses.html",
                 {"addresses": await run_service(_addresses, request, customer.id)},
                 customer=customer)


def _address_form(request: Request, customer: Customer, values: dict[str, str], *,
                  address_id: int | None, errors: dict[str, str] | None = None,
                  status_code: int = 200) -> Response:
    return _page(request, "address_form.html", {
        "values": values, "errors": errors or {}, "address_id": address_id,
        "countries": shipping_countries()}, customer=customer, status_code=status_code)


@signed_in_only
async def new_address(request: Request, customer: Customer) -> Response:
    return _address_form(request, customer, {"full_name": customer.full_name,
                                             "phone": customer.phone, "country": "DE"},
                         address_id=None)


@signed_in_only
async def edit_address(request: Request, customer: Customer) -> Response:
    address_id = _address_id(request)

    def load() -> dict[str, str]:
        with db_of(request).read_session() as session:
            address = accounts.address_of(session, customer.id, address_id)
            return {n: str(getattr(address, n)) for n in accounts.ADDRESS_FIELDS}

    try:
        values = await run_service(load)
    except NotFound:
        raise HTTPException(404) from None
    return _address_form(request, customer, values, address_id=address_id)


def _address_id(request: Request) -> int:
    address_id = parse_int(request.path_params.get("address_id"))
    if address_id is None or not 0 < address_id < 2**31:  # the column is a 32-bit integer
        raise HTTPException(404)
    return address_id


async def _save_address(request: Request, customer: Customer, address_id: int | None) -> Response:
    data = await _form(request)
    form = accounts.parse_address_form(data)
    if form.value is None:
        return _address_form(request, customer, form.values, address_id=address_id,
                             errors=form.errors, status_code=422)
    details, make_default = form.value, data.get("is_default") == "on"

    def save() -> None:
        with db_of(request).unit_of_work() as uow:
            accounts.save_address(uow=uow, customer_id=customer.id, details=details,
                                  address_id=address_id, make_default=make_default)

    try:
        await run_service(save)
    except NotFound:
        raise HTTPException(404) from None
    except DomainError as exc:
        return _address_form(request, customer, form.values, address_id=address_id,
                             errors={"address_book": exc.message}, status_code=422)
    flash(request, "Address saved.", "success")
    return redirect("/account/addresses")


@signed_in_only
async def add_address(request: Request, customer: Customer) -> Response:
    return await _save_address(request, customer, None)


@signed_in_only
async def update_address(request: Request, customer: Customer) -> Response:
    return await _save_address(request, customer, _address_id(request))


async def _address_action(request: Request, customer: Customer,
                          service: Callable[..., None], message: str) -> Response:
    address_id = _address_id(request)

    def act() -> None:
        with db_of(request).unit_of_work() as uow:
            service(uow=uow, customer_id=customer.id, address_id=address_id)

    try:
        await run_service(act)
    except NotFound:
        raise HTTPException(404) from None
    flash(request, message, "success")
    return redirect("/account/addresses")


@signed_in_only
async def delete_address(request: Request, customer: Customer) -> Response:
    return await _address_action(request, customer, accounts.delete_address, "Address deleted.")


@signed_in_only
async def default_address(request: Request, customer: Customer) -> Response:
    return await _address_action(request, customer, accounts.set_default_address,
                                 "Default address changed.")


def _default_country(request: Request, customer_id: uuid.UUID) -> str | None:
    found = _addresses(request, customer_id)
    return found[0].country if found else None


@signed_in_only
async def details_page(request: Request, customer: Customer) -> Response:
    return _page(request, "details.html", {"values": {"full_name": customer.full_name,
                                                      "phone": customer.phone}},
                 customer=customer)


@signed_in_only
async def update_details(request: Request, customer: Customer) -> Response:
    country = await run_service(_default_country, request, customer.id)
    form = accounts.parse_contact_form(await _form(request), country=country)
    if form.value is None:
        return _page(request, "details.html", {"values": form.values, "errors": form.errors},
                     customer=customer, status_code=422)
    full_name, phone = form.value

    def save() -> None:
        with db_of(request).unit_of_work() as uow:
            accounts.update_contact(uow=uow, customer_id=customer.id, full_name=full_name,
                                    phone=phone, now=utcnow())

    await run_service(save)
    flash(request, "Your details are saved.", "success")
    return redirect("/account/details")


@signed_in_only
async def email_page(request: Request, customer: Customer) -> Response:
    return _page(request, "email.html", customer=customer)


@signed_in_only
async def request_email_change(request: Request, customer: Customer) -> Response:
    data = await _form(request)
    form = accounts.parse_new_email(data, current=customer.email)
    if form.value is None:
        return _page(request, "email.html", {"values": form.values, "errors": form.errors},
                     customer=customer, status_code=422)
    new_email = form.value
    db, settings = db_of(request), settings_of(request)
    env = request.app.state.templates.env

    def ask() -> DomainError | None:
        with db.unit_of_work() as uow:
            return accounts.request_email_change(
                uow=uow, env=env, settings=settings, customer_id=customer.id,
                new_email=new_email, password=data.get("password", ""),
                client_ip=_client_ip(request), now=utcnow())

    refusal = await run_service(ask)
    if refusal is not None:
        field = "new_email" if isinstance(refusal, accounts.SignInPaused) else "password"
        return _page(request, "email.html", {"values": form.values,
                                             "errors": {field: refusal.message}},
                     customer=customer,
                     status_code=429 if field == "new_email" else 422)
    # The same page whether or not the address has an account: the email tells.
    return _page(request, "check_email.html", {
        "title": "Check your new email",
        "again": "/account/email",
        "message": CHANGE_SENT.format(email=new_email,
                                      minutes=settings.customer_link_minutes)},
        customer=customer)


async def email_link_page(request: Request) -> Response:
    return await run_service(_link_page, request, LinkPurpose.CHANGE_EMAIL, "link.html",
                             {"title": "Confirm your new email address",
                              "button": "Confirm and use this address"})


async def confirm_email_change(request: Request) -> Response:
    try:
        return await _spend(request, LinkPurpose.CHANGE_EMAIL, accounts.confirm_email_change,
                            "Your email address is changed: sign in with the new one from "
                            "now on.")
    except accounts.EmailTaken as exc:
        return _page(request, "check_email.html", {
            "title": "Your email address was not changed", "message": exc.message,
            "invalid": True}, status_code=409, no_referrer=True)


@signed_in_only
async def preferences_page(request: Request, customer: Customer) -> Response:
    return _page(request, "preferences.html", customer=customer)


@signed_in_only
async def update_preferences(request: Request, customer: Customer) -> Response:
    opted_in = (await _form(request)).get("marketing_emails") == "on"

    def save() -> None:
        with db_of(request).unit_of_work() as uow:
            accounts.set_marketing_emails(uow=uow, customer_id=customer.id, opted_in=opted_in,
                                          now=utcnow())

    await run_service(save)
    flash(request, "Your email preferences are saved.", "success")
    return redirect("/account/preferences")


@signed_in_only
async def delete_page(request: Request, customer: Customer) -> Response:
    return _page(request, "delete.html", customer=customer)


@signed_in_only
async def delete_account(request: Request, customer: Customer) -> Response:
    data = await _form(request)

    def erase() -> None:
        with db_of(request).unit_of_work() as uow:
            accounts.delete_account(uow=uow, customer_id=customer.id,
                                    password=data.get("password", ""),
                                    confirmation=data.get("confirmation", ""), now=utcnow())

    try:
        await run_service(erase)
    except accounts.WrongConfirmation as exc:
        return _page(request, "delete.html", {"errors": {"confirm": exc.message}},
                     customer=customer, status_code=422)
    rotate_session(request)
    flash(request, "Your account is deleted, and your personal details with it. Orders "
                   "and invoices stay on record, as the law requires.", "success")
    return redirect("/")


get, post = ["GET"], ["POST"]
ROUTES = [  # mounted by storefront/app.py
    Route("/account", orders, methods=get, name="account"),
    Route("/account/sign-up", sign_up_page, methods=get, name="sign_up"),
    Route("/account/sign-up", sign_up, methods=post),
    Route("/account/sign-in", sign_in_page, methods=get, name="sign_in"),
    Route("/account/sign-in", sign_in, methods=post),
    Route("/account/sign-in-link", request_sign_in_link, methods=post),
    Route("/account/sign-in/{token}", sign_in_link_page, methods=get),
    Route("/account/sign-in/{token}", sign_in_with_link, methods=post),
    Route("/account/sign-out", sign_out, methods=post, name="sign_out"),
    Route("/account/verify/{token}", verify_page, methods=get),
    Route("/account/verify/{token}", verify, methods=post),
    Route("/account/reset", reset_request_page, methods=get),
    Route("/account/reset", reset_request, methods=post),
    Route("/account/reset/{token}", reset_page, methods=get),
    Route("/account/reset/{token}", reset, methods=post),
    Route("/account/addresses", addresses, methods=get),
    Route("/account/addresses", add_address, methods=post),
    Route("/account/addresses/new", new_address, methods=get),
    Route("/account/addresses/{address_id}", edit_address, methods=get),
    Route("/account/addresses/{address_id}", update_address, methods=post),
    Route("/account/addresses/{address_id}/delete", delete_address, methods=post),
    Route("/account/addresses/{address_id}/default", default_address, methods=post),
    Route("/account/details", details_page, methods=get),
    Route("/account/details", update_details, methods=post),
    Route("/account/email", email_page, methods=get),
    Route("/account/email", request_email_change, methods=post),
    Route("/account/email/{token}", email_link_page, methods=get),
    Route("/account/email/{token}", confirm_email_change, methods=post),
    Route("/account/preferences", preferences_page, methods=get),
    Route("/account/preferences", update_preferences, methods=post),
    Route("/account/delete", delete_page, methods=get),
    Route("/account/delete", delete_account, methods=post),
]


# -- Checkout (storefront/views/checkout.py calls these) -----------------------------------------


def checkout_values(request: Request, address_id: int | None = None) -> dict[str, str]:
    """Checkout's fields filled from the signed-in customer's account (none for a guest):
    contact details and the saved address chosen (`?address=ID`), else the default one."""
    customer = current_customer(request)
    if customer is None:
        return {}
    with db_of(request).read_session() as session:
        return accounts.checkout_prefill(session, customer.id, address_id)


def checkout_context(request: Request, values: dict[str, str]) -> dict[str, Any]:
    """What the checkout page shows of the account: for a signed-in customer the saved
    addresses to choose from and the offer to save the one typed; None for a guest."""
    customer = current_customer(request)
    if customer is None:
        return {"account": None}
    return {"account": {
        "addresses": _addresses(request, customer.id),
        "save_address": values.get("save_address", "") == "on",
    }}


def checkout_claim(request: Request, values: dict[str, str]
                   ) -> Callable[[UnitOfWork, Order], None]:
    """What placing the order does for the account, in the order's own transaction: a
    signed-in customer's order joins their account, and the address is saved if asked."""
    customer = current_customer(request)
    save = values.get("save_address", "") == "on"

    def claim(uow: UnitOfWork, order: Order) -> None:
        if customer is None:
            return
        address = accounts.AddressDetails(**{n: str(getattr(order, n))
                                             for n in accounts.ADDRESS_FIELDS})
        accounts.claim_order(uow=uow, order=order, customer_id=customer.id,
                             save_address=address if save else None)

    return claim
