"""Customer accounts: sign-up, sign-in (password or emailed link), password reset, email
verification and change, saved addresses, contact details, preferences, and erasing an account.

Guarantees:
- Passwords are argon2id hashes (conveyor/passwords.py). Emailed links are 32 random bytes of
  which only the SHA-256 is stored; each works once, for CUSTOMER_LINK_MINUTES, and using one
  spends every other unused link of the same purpose of that customer.
- Nothing tells whether an email has an account: sign-up, link and reset requests answer the
  same either way (and send mail only to the address itself), and a sign-in fails with one
  message for an unknown email and a wrong password, after the same argon2 work.
- Failed sign-ins and requests for emailed links are counted per email and per client IP in
  `customer_sign_in_attempt`; past CUSTOMER_SIGN_IN_FAILURES_PER_EMAIL / _PER_IP within
  CUSTOMER_SIGN_IN_WINDOW_MINUTES, sign-in pauses for that email or address. Attempts for
  one email take turns on PostgreSQL, so concurrent guesses cannot pass its limit.
- A password sign-in needs a proved email. An email is proved by the verification link, by an
  emailed sign-in link or by a reset link; when it is, the guest orders placed with that email
  (any case) and no account join the account (`orders.customer_id`).
- Changing the email asks for the password and sends a link carrying the new address to it
  (or, when it has an account, a notice without a link: the page says the same); spending
  the link moves the account, its staff notes and the new address's guest orders to it.
- A browser's sign-in holds the time it began; it ends when the password changes after that
  time (`customer.password_changed_at`) or the account is erased (`customer_for_session`).
- Erasing an account blanks every personal column of the customer row and deletes its
  addresses, links, sign-in attempts, staff notes and file reference by that email; orders,
  their totals and invoices stay, linked to the anonymised row (see docs/architecture.md).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from jinja2 import Environment
from sqlalchemy import delete, func, text, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from conveyor.db import UnitOfWork
from conveyor.errors import DomainError, NotFound
from conveyor.mail import queue_email
from conveyor.passwords import (
    MAX_PASSWORD_LENGTH,
    WeakPassword,
    check_password_rules,
    hash_password,
    needs_rehash,
    verify_password,
)
from conveyor.settings import Settings
from models.after_sales import SupportMessage, SupportThread
from models.contact import (
    InvalidField,
    normalise_country,
    normalise_email,
    normalise_phone,
    normalise_postal_code,
    normalise_text,
)
from models.customers import (
    Customer,
    CustomerAddress,
    CustomerFileRef,
    CustomerLink,
    CustomerNote,
    CustomerSignInAttempt,
    LinkPurpose,
)
from models.messaging import Email
from models.orders import CUSTOMER_LABELS, Order, OrderStatus
from models.warehouse import Parcel

MAX_ADDRESSES = 20
ADDRESS_FIELDS = ("full_name", "phone", "address", "city", "postal_code", "country")
# The account's own emails; erasing the account deletes them (order emails stay with orders).
ERASED_MESSAGE = "[Removed when the customer deleted their account.]"
ACCOUNT_TEMPLATES = ("account_verify", "account_sign_in", "account_reset", "account_exists",
                     "account_change_email", "account_email_changing", "account_email_taken")
LINK_PATHS = {LinkPurpose.SIGN_IN: "sign-in", LinkPurpose.RESET_PASSWORD: "reset",
              LinkPurpose.VERIFY_EMAIL: "verify", LinkPurpose.CHANGE_EMAIL: "email"}
LINK_EMAILS = {
    LinkPurpose.SIGN_IN: ("account_sign_in", "Your sign-in link"),
    LinkPurpose.RESET_PASSWORD: ("account_reset", "Reset your password"),
    LinkPurpose.VERIFY_EMAIL: ("account_verify", "Confirm your email address"),
    LinkPurpose.CHANGE_EMAIL: ("account_change_email", "Confirm your new email address"),
}
HIDDEN_FROM_HISTORY = (OrderStatus.PENDING_PAYMENT, OrderStatus.EXPIRED)


class InvalidCredentials(DomainError):
    code = "invalid_credentials"


class SignInPaused(DomainError):
    code = "rate_limited"


class EmailNotVerified(DomainError):
    code = "email_not_verified"


class InvalidLink(DomainError):
    code = "invalid_link"


class WrongConfirmation(DomainError):
    code = "wrong_confirmation"


class TooManyAddresses(DomainError):
    code = "too_many_addresses"


class EmailTaken(DomainError):
    code = "email_taken"


INVALID_LINK = "This link has expired or has been used already. Please ask for a new one."


# -- Forms ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignUpDetails:
    email: str
    full_name: str
    password: str
    marketing_emails: bool


@dataclass(frozen=True)
class AddressDetails:
    full_name: str
    phone: str
    address: str
    city: str
    postal_code: str
    country: str


T = TypeVar("T")


@dataclass
class Form(Generic[T]):
    """What was typed (kept to show again), a message per bad field, and the clean value."""

    values: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)
    value: T | None = None


def _checker(values: dict[str, str], errors: dict[str, str],
             clean: dict[str, str]) -> Callable[[str, Callable[[str], str]], None]:
    def check(name: str, rule: Callable[[str], str]) -> None:
        try:
            clean[name] = rule(values[name])
        except InvalidField as exc:
            errors[name] = str(exc)
    return check


def _password_rule(email: str) -> Callable[[str], str]:
    def rule(password: str) -> str:
        try:
            check_password_rules(password, email=email)
        except WeakPassword as exc:
            raise InvalidField(exc.message) from None
        return password
    return rule


def parse_sign_up_form(data: Mapping[str, str]) -> Form[SignUpDetails]:
    values = {name: str(data.get(name, ""))[:MAX_PASSWORD_LENGTH + 1]
              for name in ("email", "full_name", "password")}
    form: Form[SignUpDetails] = Form(values={k: v for k, v in values.items()
                                             if k != "password"})
    clean: dict[str, str] = {}
    check = _checker(values, form.errors, clean)
    check("email", normalise_email)
    check("full_name", lambda v: normalise_text(v, what="full name", max_len=200))
    check("password", _password_rule(clean.get("email", "")))
    marketing = str(data.get("marketing_emails", "")) in ("on", "1", "true", "yes")
    form.values["marketing_emails"] = "on" if marketing else ""
    if not form.errors:
        form.value = SignUpDetails(clean["email"], clean["full_name"], clean["password"],
                                   marketing)
    return form


def parse_password(data: Mapping[str, str], *, email: str = "") -> Form[str]:
    values = {"password": str(data.get("password", ""))[:MAX_PASSWORD_LENGTH + 1]}
    form: Form[str] = Form(values={})
    clean: dict[str, str] = {}
    _checker(values, form.errors, clean)("password", _password_rule(email))
    form.value = clean.get("password")
    return form


def parse_address_form(data: Mapping[str, str]) -> Form[AddressDetails]:
    """The checkout's rules (models/contact.py), one message per bad field."""
    values = {name: str(data.get(name, ""))[:400] for name in ADDRESS_FIELDS}
    form: Form[AddressDetails] = Form(values=values)
    clean: dict[str, str] = {}
    check = _checker(values, form.errors, clean)
    check("country", normalise_country)
    country = clean.get("country")
    check("full_name", lambda v: normalise_text(v, what="full name", max_len=200))
    check("phone", lambda v: normalise_phone(v, country))
    check("address", lambda v: normalise_text(v, what="address", min_len=4, max_len=300))
    check("city", lambda v: normalise_text(v, what="city", max_len=120))
    check("postal_code", lambda v: normalise_postal_code(v, country))
    if not form.errors:
        form.value = AddressDetails(**clean)
    return form


def parse_contact_form(data: Mapping[str, str], *, country: str | None) -> Form[tuple[str, str]]:
    """Full name (required) and phone (optional; read for `country` without a +prefix)."""
    values = {name: str(data.get(name, ""))[:400] for name in ("full_name", "phone")}
    form: Form[tuple[str, str]] = Form(values=values)
    clean: dict[str, str] = {"phone": ""}
    check = _checker(values, form.errors, clean)
    check("full_name", lambda v: normalise_text(v, what="full name", max_len=200))
    if values["phone"].strip():
        check("phone", lambda v: normalise_phone(v, country))
    if not form.errors:
        form.value = (clean["full_name"], clean["phone"])
    return form


# -- Lookups -------------------------------------------------------------------------------------


def _by_email(session: Session, email: str, *, lock: bool = False) -> Customer | None:
    query = select(Customer).where(func.lower(Customer.email) == email.strip().lower(),
                                   col(Customer.deleted_at).is_(None))
    return session.exec(query.with_for_update() if lock else query).first()


def _live(session: Session, customer_id: uuid.UUID, *, lock: bool = True) -> Customer:
    customer = session.get(Customer, customer_id, with_for_update=lock)
    if customer is None or customer.deleted_at is not None:
        raise NotFound("This account no longer exists.")
    return customer


def customer_for_session(session: Session, customer_id: uuid.UUID,
                         signed_in_at: datetime) -> Customer | None:
    """The customer a browser's sign-in (begun at `signed_in_at`) still stands for, or None
    when the account was erased, its email is not proved, or its password changed since."""
    customer = session.get(Customer, customer_id)
    if (customer is None or customer.deleted_at is not None
            or customer.email_verified_at is None):
        return None
    if customer.password_changed_at is not None and customer.password_changed_at > signed_in_at:
        return None
    return customer


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# -- Rate limits ---------------------------------------------------------------------------------


def _normal_email(email: str) -> str:
    return email.strip().lower()[:254]


def _check_rate(session: Session, *, email: str, client_ip: str, settings: Settings,
                now: datetime) -> None:
    """Raise SignInPaused past the limits. On PostgreSQL, attempts for one email take turns
    (a transaction-scoped advisory lock), so a burst of guesses at one account cannot pass
    its limit by racing; the per-IP count is not serialised and may be passed by a race."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                        {"key": f"customer_sign_in:{email}"})
    window = settings.customer_sign_in_window_minutes
    base = select(func.count()).select_from(CustomerSignInAttempt).where(
        col(CustomerSignInAttempt.succeeded).is_(False),
        col(CustomerSignInAttempt.at) >= now - timedelta(minutes=window))
    by_email = session.exec(base.where(CustomerSignInAttempt.email == email)).one()
    by_ip = session.exec(base.where(CustomerSignInAttempt.client_ip == client_ip)).one()
    if (by_email >= settings.customer_sign_in_failures_per_email
            or by_ip >= settings.customer_sign_in_failures_per_ip):
        raise SignInPaused(f"Too many sign-in attempts. For your security, please wait "
                           f"{window} minutes before trying again.")


def _record_attempt(session: Session, *, email: str, client_ip: str, now: datetime,
                    succeeded: bool) -> None:
    session.add(CustomerSignInAttempt(email=email, client_ip=client_ip[:64], at=now,
                                      succeeded=succeeded))


# -- Links and their emails ----------------------------------------------------------------------


def _send_link(uow: UnitOfWork, env: Environment, settings: Settings, customer: Customer,
               purpose: LinkPurpose, now: datetime, *, template: str | None = None,
               subject: str | None = None, new_email: str | None = None) -> None:
    """Store a link's hash and mail the link: to the account's email, or to `new_email` (the
    address a CHANGE_EMAIL link moves the account to, which it carries)."""
    plain = secrets.token_urlsafe(32)
    minutes = settings.customer_link_minutes
    uow.session.add(CustomerLink(token_hash=token_digest(plain), customer_id=customer.id,
                                 purpose=purpose, created_at=now, new_email=new_email,
                                 expires_at=now + timedelta(minutes=minutes)))
    default_template, default_subject = LINK_EMAILS[purpose]
    url = f"{settings.base_url.rstrip('/')}/account/{LINK_PATHS[purpose]}/{plain}"
    queue_email(uow, env, to=new_email or customer.email, subject=subject or default_subject,
                template=template or default_template,
                context={"name": customer.full_name, "link": url, "minutes": minutes,
                         "new_email": new_email, "shop_url": settings.base_url.rstrip("/")})


def _consume_link(session: Session, token: str, purpose: LinkPurpose,
                  now: datetime) -> Customer:
    return _take_link(session, token, purpose, now)[1]


def _take_link(session: Session, token: str, purpose: LinkPurpose,
               now: datetime) -> tuple[CustomerLink, Customer]:
    """Spend a live link of `purpose` and every other unused one of that purpose of its
    customer, under the link's and then the customer row's lock (InvalidLink otherwise)."""
    if not 20 <= len(token) <= 100:
        raise InvalidLink(INVALID_LINK)
    link = session.exec(select(CustomerLink).where(CustomerLink.token_hash == token_digest(token))
                        .with_for_update()).first()
    if (link is None or link.purpose != purpose or link.used_at is not None
            or link.expires_at <= now):
        raise InvalidLink(INVALID_LINK)
    customer = session.get(Customer, link.customer_id, with_for_update=True)
    if customer is None or customer.deleted_at is not None:
        raise InvalidLink(INVALID_LINK)
    session.execute(update(CustomerLink).where(
        col(CustomerLink.customer_id) == customer.id, col(CustomerLink.purpose) == purpose,
        col(CustomerLink.used_at).is_(None)).values(used_at=now))
    link.used_at = now
    return link, customer


def join_guest_orders(*, uow: UnitOfWork, customer: Customer) -> int:
    """Attach the orders placed with this customer's email (any case) and no account; returns
    how many joined. Only for a proved email: callers check."""
    result = uow.session.execute(
        update(Order).where(func.lower(Order.email) == customer.email.lower(),
                            col(Order.customer_id).is_(None))
        .values(customer_id=customer.id).execution_options(synchronize_session=False))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _prove_email(uow: UnitOfWork, customer: Customer, now: datetime) -> None:
    if customer.email_verified_at is None:
        customer.email_verified_at = now
    customer.updated_at = now
    join_guest_orders(uow=uow, customer=customer)


# -- Sign-up, sign-in, links, reset --------------------------------------------------------------


def sign_up(*, uow: UnitOfWork, env: Environment, settings: Settings, details: SignUpDetails,
            now: datetime) -> Customer | None:
    """Create an account whose email is not yet proved and send it a verification link.

    When an account with this email exists (any case, not erased), nothing is created and the
    address gets a sign-in link instead, so the page can say the same in both cases; a
    concurrent sign-up losing the race on the unique email index behaves the same way.
    Returns the new customer, or None.
    """
    password_hash = hash_password(details.password)  # before any row is touched
    session = uow.session
    existing = _by_email(session, details.email)
    if existing is None:
        customer = Customer(email=details.email, full_name=details.full_name,
                            password_hash=password_hash,
                            marketing_emails=details.marketing_emails,
                            created_at=now, updated_at=now)
        try:
            with session.begin_nested():
                session.add(customer)
        except IntegrityError:
            existing = _by_email(session, details.email)
        else:
            _send_link(uow, env, settings, customer, LinkPurpose.VERIFY_EMAIL, now)
            return customer
    if existing is not None:
        _send_link(uow, env, settings, existing, LinkPurpose.SIGN_IN, now,
                   template="account_exists", subject="You already have an account")
    return None


@dataclass(frozen=True)
class SignInOutcome:
    """A sign-in's result: the customer, or why not. Returned rather than raised so that the
    unit of work commits the recorded attempt either way."""

    customer: Customer | None = None
    refusal: DomainError | None = None


def sign_in_with_password(*, uow: UnitOfWork, env: Environment, settings: Settings, email: str,
                          password: str, client_ip: str, now: datetime) -> SignInOutcome:
    """Check a password sign-in and record the attempt.

    Refuses, checking nothing, while the email or IP is paused (SignInPaused); refuses an
    unknown email and a wrong password alike (InvalidCredentials), both counted as failures;
    after a right password for an email not yet proved, sends a new verification link and
    refuses (EmailNotVerified). On success rehashes an old-parameter hash and stamps
    `last_sign_in_at`.
    """
    session = uow.session
    key = _normal_email(email)
    try:
        _check_rate(session, email=key, client_ip=client_ip, settings=settings, now=now)
    except SignInPaused as exc:
        return SignInOutcome(refusal=exc)
    customer = _by_email(session, key, lock=True) if "@" in key else None
    if not verify_password(customer.password_hash if customer else None, password):
        _record_attempt(session, email=key, client_ip=client_ip, now=now, succeeded=False)
        return SignInOutcome(refusal=InvalidCredentials(
            "That email and password do not match an account. Check them, or sign in with "
            "a link sent by email."))
    assert customer is not None and customer.password_hash is not None
    _record_attempt(session, email=key, client_ip=client_ip, now=now, succeeded=True)
    if customer.email_verified_at is None:
        _send_link(uow, env, settings, customer, LinkPurpose.VERIFY_EMAIL, now)
        return SignInOutcome(refusal=EmailNotVerified(
            "Please confirm your email address first: we have sent you a new link."))
    if needs_rehash(customer.password_hash):
        customer.password_hash = hash_password(password)
    customer.last_sign_in_at = now
    return SignInOutcome(customer=customer)


def request_link(*, uow: UnitOfWork, env: Environment, settings: Settings, email: str,
                 purpose: LinkPurpose, client_ip: str, now: datetime) -> None:
    """Email a sign-in or password-reset link if an account has this email; either way the
    request counts against the email's and the IP's limits (raises SignInPaused past them)."""
    if purpose in (LinkPurpose.VERIFY_EMAIL, LinkPurpose.CHANGE_EMAIL):
        raise ValueError("verification and email-change links are not asked for by email")
    session = uow.session
    key = _normal_email(email)
    _check_rate(session, email=key, client_ip=client_ip, settings=settings, now=now)
    _record_attempt(session, email=key, client_ip=client_ip, now=now, succeeded=False)
    customer = _by_email(session, key) if "@" in key else None
    if customer is not None:
        _send_link(uow, env, settings, customer, purpose, now)


def sign_in_with_link(*, uow: UnitOfWork, token: str, now: datetime) -> Customer:
    """Spend an emailed sign-in link (InvalidLink if unknown, used or expired); the email is
    thereby proved, so the guest orders with it join the account."""
    customer = _consume_link(uow.session, token, LinkPurpose.SIGN_IN, now)
    _prove_email(uow, customer, now)
    customer.last_sign_in_at = now
    return customer


def verify_email(*, uow: UnitOfWork, token: str, now: datetime) -> Customer:
    """Spend a verification link: the email is proved, guest orders join, the customer is
    signed in (the link proves the address as a sign-in link does)."""
    customer = _consume_link(uow.session, token, LinkPurpose.VERIFY_EMAIL, now)
    _prove_email(uow, customer, now)
    customer.last_sign_in_at = now
    return customer


def check_link(session: Session, *, token: str, purpose: LinkPurpose, now: datetime) -> bool:
    """Whether a link would work now, without spending it (for the page that asks to go on)."""
    if not 20 <= len(token) <= 100:
        return False
    link = session.exec(select(CustomerLink).where(
        CustomerLink.token_hash == token_digest(token))).first()
    return (link is not None and link.purpose == purpose and link.used_at is None
            and link.expires_at > now)


def reset_password(*, uow: UnitOfWork, token: str, password: str, now: datetime) -> Customer:
    """Spend a reset link and set a new password (WeakPassword leaves the link unspent).
    `password_changed_at = now` ends every sign-in begun before; the email is proved."""
    session = uow.session
    if not check_link(session, token=token, purpose=LinkPurpose.RESET_PASSWORD, now=now):
        raise InvalidLink(INVALID_LINK)
    customer = _consume_link(session, token, LinkPurpose.RESET_PASSWORD, now)
    check_password_rules(password, email=customer.email)
    customer.password_hash = hash_password(password)
    customer.password_changed_at = now
    _prove_email(uow, customer, now)
    customer.last_sign_in_at = now
    return customer


# -- Changing the email address -----------------------------------------------------------------


def parse_new_email(data: Mapping[str, str], *, current: str) -> Form[str]:
    """The new address (models/contact.py's rule); not the one the account has already."""
    values = {"new_email": str(data.get("new_email", ""))[:400]}
    form: Form[str] = Form(values=values)
    clean: dict[str, str] = {}
    _checker(values, form.errors, clean)("new_email", normalise_email)
    if clean.get("new_email", "").lower() == current.strip().lower():
        form.errors["new_email"] = "That is already your email address."
    elif not form.errors:
        form.value = clean["new_email"]
    return form


def request_email_change(*, uow: UnitOfWork, env: Environment, settings: Settings,
                         customer_id: uuid.UUID, new_email: str, password: str,
                         client_ip: str, now: datetime) -> DomainError | None:
    """Ask to move an account to `new_email`; returns the refusal, if any, rather than raising,
    so that the attempt recorded commits either way.

    Counted like link requests, per new address (so nobody can flood an address with mail)
    and per IP, and refused past their limits (SignInPaused); a wrong password (accounts that
    have one) is refused (WrongConfirmation) and counted against the account's own email as a
    failed sign-in. Otherwise the account's earlier change links are spent, and the new address
    gets a link carrying it, or, when a live account has it, a note that one exists instead
    (the caller says the same either way); the old address is told a change was asked.
    """
    session = uow.session
    customer = _live(session, customer_id)
    new_key, own_key = _normal_email(new_email), _normal_email(customer.email)
    try:
        for key in sorted({new_key, own_key}):  # advisory locks in one order: no deadlock
            _check_rate(session, email=key, client_ip=client_ip, settings=settings, now=now)
    except SignInPaused as exc:
        return exc
    _record_attempt(session, email=new_key, client_ip=client_ip, now=now, succeeded=False)
    if customer.password_hash is not None and not verify_password(customer.password_hash,
                                                                  password):
        _record_attempt(session, email=own_key, client_ip=client_ip, now=now, succeeded=False)
        return WrongConfirmation("That is not your password. Your email address was not "
                                 "changed.")
    session.execute(update(CustomerLink).where(
        col(CustomerLink.customer_id) == customer.id,
        col(CustomerLink.purpose) == LinkPurpose.CHANGE_EMAIL,
        col(CustomerLink.used_at).is_(None)).values(used_at=now))
    shop_url = settings.base_url.rstrip("/")
    if _by_email(session, new_key) is not None:
        queue_email(uow, env, to=new_email, subject="You already have an account",
                    template="account_email_taken",
                    context={"shop_url": shop_url, "minutes": settings.customer_link_minutes})
    else:
        _send_link(uow, env, settings, customer, LinkPurpose.CHANGE_EMAIL, now,
                   new_email=new_email)
    queue_email(uow, env, to=customer.email, subject="Your email address is being changed",
                template="account_email_changing",
                context={"name": customer.full_name, "shop_url": shop_url})
    return None


def confirm_email_change(*, uow: UnitOfWork, token: str, now: datetime) -> Customer:
    """Spend a change link (InvalidLink if unknown, used or expired) and move the account to
    the address it carries, which is thereby proved.

    Under the customer row's lock: refused (EmailTaken, the link left unspent) when a live
    account has that address by now, also when one wins a race for it (the unique index, in
    a savepoint). Every other unused link of the account is spent (those sent to the old
    address must not act on it any more). Staff notes move to the new address; the old
    address's customer-file reference is deleted; the new address's guest orders join.
    """
    session = uow.session
    link, customer = _take_link(session, token, LinkPurpose.CHANGE_EMAIL, now)
    new_email = link.new_email
    if not new_email:
        raise InvalidLink(INVALID_LINK)
    taken = EmailTaken(f"There is already an account for {new_email}, so this one cannot move "
                       "to it. Your email address was not changed.")
    other = _by_email(session, new_email)
    if other is not None and other.id != customer.id:
        raise taken
    old = customer.email.lower()
    try:
        with session.begin_nested():
            customer.email = new_email
            session.flush()
    except IntegrityError:
        raise taken from None
    session.execute(update(CustomerLink).where(
        col(CustomerLink.customer_id) == customer.id,
        col(CustomerLink.used_at).is_(None)).values(used_at=now))
    session.execute(update(CustomerNote).where(func.lower(CustomerNote.email) == old)
                    .values(email=new_email.lower())
                    .execution_options(synchronize_session=False))
    session.execute(delete(CustomerFileRef).where(func.lower(CustomerFileRef.email) == old))
    customer.email_verified_at = now
    customer.last_sign_in_at = now
    _prove_email(uow, customer, now)
    return customer


# -- Account pages -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrackingView:
    carrier: str
    tracking_number: str
    tracking_url: str


@dataclass(frozen=True)
class OrderRow:
    number: str
    status_token: str
    created_at: datetime
    status_label: str
    total_cents: int
    currency: str
    tracking: list[TrackingView]


def order_history(session: Session, customer_id: uuid.UUID, *, limit: int = 100
                  ) -> list[OrderRow]:
    """The account's orders, newest first, without unpaid or expired checkouts; each with its
    status as the customer reads it and the tracking of its shipped parcels."""
    orders = list(session.exec(
        select(Order).where(Order.customer_id == customer_id,
                            col(Order.status).not_in(HIDDEN_FROM_HISTORY))
        .order_by(col(Order.created_at).desc(), col(Order.id)).limit(limit)))
    tracking: dict[uuid.UUID, list[TrackingView]] = {order.id: [] for order in orders}
    if orders:
        for parcel in session.exec(
                select(Parcel).where(col(Parcel.order_id).in_(list(tracking)),
                                     col(Parcel.shipped_at).is_not(None))
                .order_by(col(Parcel.id))):
            tracking[parcel.order_id].append(TrackingView(parcel.carrier, parcel.tracking_number,
                                                          parcel.tracking_url))
    return [OrderRow(o.number, o.status_token, o.created_at,
                     CUSTOMER_LABELS[OrderStatus(o.status)], o.total_cents, o.currency,
                     tracking[o.id]) for o in orders]


def addresses_of(session: Session, customer_id: uuid.UUID) -> list[CustomerAddress]:
    """Saved addresses, the default first, then oldest first."""
    return list(session.exec(
        select(CustomerAddress).where(CustomerAddress.customer_id == customer_id)
        .order_by(col(CustomerAddress.is_default).desc(), col(CustomerAddress.id))))


def address_of(session: Session, customer_id: uuid.UUID, address_id: int) -> CustomerAddress:
    address = session.get(CustomerAddress, address_id)
    if address is None or address.customer_id != customer_id:
        raise NotFound("We could not find that address.")
    return address


def save_address(*, uow: UnitOfWork, customer_id: uuid.UUID, details: AddressDetails,
                 address_id: int | None = None, make_default: bool = False) -> CustomerAddress:
    """Add an address (at most MAX_ADDRESSES) or replace one of the customer's own (NotFound
    otherwise). Locks the customer row, so a customer has exactly one default address while
    they have any: the first becomes it, and `make_default` moves it."""
    session = uow.session
    _live(session, customer_id)
    addresses = addresses_of(session, customer_id)
    if address_id is None:
        if len(addresses) >= MAX_ADDRESSES:
            raise TooManyAddresses(f"You can keep up to {MAX_ADDRESSES} addresses. "
                                   "Delete one you no longer use first.")
        address = CustomerAddress(customer_id=customer_id, **vars(details))
        session.add(address)
    else:
        found = next((a for a in addresses if a.id == address_id), None)
        if found is None:
            raise NotFound("We could not find that address.")
        address = found
        for name, value in vars(details).items():
            setattr(address, name, value)
    if make_default or not addresses:
        for other in addresses:
            other.is_default = False
        address.is_default = True
    session.flush()
    return address


def remember_address(*, uow: UnitOfWork, customer_id: uuid.UUID,
                     details: AddressDetails) -> None:
    """Save a checkout's address unless the customer has it already (or has no room left)."""
    existing = addresses_of(uow.session, customer_id)
    if len(existing) >= MAX_ADDRESSES or any(
            all(getattr(a, n) == getattr(details, n) for n in ADDRESS_FIELDS) for a in existing):
        return
    save_address(uow=uow, customer_id=customer_id, details=details)


def set_default_address(*, uow: UnitOfWork, customer_id: uuid.UUID, address_id: int) -> None:
    session = uow.session
    _live(session, customer_id)
    addresses = addresses_of(session, customer_id)
    if all(a.id != address_id for a in addresses):
        raise NotFound("We could not find that address.")
    for address in addresses:
        address.is_default = address.id == address_id


def delete_address(*, uow: UnitOfWork, customer_id: uuid.UUID, address_id: int) -> None:
    """Delete one of the customer's addresses; if it was the default, the oldest left is."""
    session = uow.session
    _live(session, customer_id)
    addresses = addresses_of(session, customer_id)
    doomed = next((a for a in addresses if a.id == address_id), None)
    if doomed is None:
        raise NotFound("We could not find that address.")
    session.delete(doomed)
    rest = sorted((a for a in addresses if a.id != address_id), key=lambda a: a.id or 0)
    if doomed.is_default and rest:
        rest[0].is_default = True


def update_contact(*, uow: UnitOfWork, customer_id: uuid.UUID, full_name: str, phone: str,
                   now: datetime) -> None:
    customer = _live(uow.session, customer_id)
    customer.full_name, customer.phone, customer.updated_at = full_name, phone, now


def set_marketing_emails(*, uow: UnitOfWork, customer_id: uuid.UUID, opted_in: bool,
                         now: datetime) -> None:
    customer = _live(uow.session, customer_id)
    customer.marketing_emails, customer.updated_at = opted_in, now


# -- Checkout ------------------------------------------------------------------------------------


def checkout_prefill(session: Session, customer_id: uuid.UUID,
                     address_id: int | None = None) -> dict[str, str]:
    """Checkout's fields from the account: email, name and phone, and the chosen saved address
    (else the default one)."""
    customer = _live(session, customer_id, lock=False)
    values = {"email": customer.email, "full_name": customer.full_name, "phone": customer.phone}
    addresses = addresses_of(session, customer_id)
    chosen = next((a for a in addresses if a.id == address_id), None) or next(
        (a for a in addresses if a.is_default), None)
    if chosen is not None:
        values.update({name: str(getattr(chosen, name)) for name in ADDRESS_FIELDS})
    return values


def claim_order(*, uow: UnitOfWork, order: Order, customer_id: uuid.UUID,
                save_address: AddressDetails | None = None) -> None:
    """An order placed by a signed-in customer joins their account when their email is
    proved; with `save_address`, the order's address is saved to the account too."""
    customer = uow.session.get(Customer, customer_id)
    if customer is None or customer.deleted_at is not None or customer.email_verified_at is None:
        return
    order.customer_id = customer.id
    if save_address is not None:
        remember_address(uow=uow, customer_id=customer.id, details=save_address)


# -- Erasure -------------------------------------------------------------------------------------


def delete_account(*, uow: UnitOfWork, customer_id: uuid.UUID, password: str,
                   confirmation: str, now: datetime) -> None:
    """Erase an account, asking for its password (or, for an account without one, the word
    DELETE; WrongConfirmation otherwise).

    In one transaction, under the customer row's lock: every personal column of the row is
    blanked (email, name and phone empty; password hash, verification, sign-in and
    password-change times null; marketing off) and `deleted_at` set, which frees the email for
    a new account and ends every sign-in; its addresses and links are deleted, as are the
    sign-in attempts, staff notes, customer-file reference and account emails (verification,
    links) by its email; the messages it wrote to the shop about its orders lose their author
    and text. Orders, their lines, totals, payments and invoices stay: the law
    requires them, and they stay linked to the anonymised row, so reports keep counting them
    as one (erased) customer's. A later account with the same email starts afresh: those
    orders do not join it.
    """
    session = uow.session
    customer = _live(session, customer_id)
    if customer.password_hash is not None:
        if not verify_password(customer.password_hash, password):
            raise WrongConfirmation("That is not your password. Your account was not deleted.")
    elif confirmation.strip().upper() != "DELETE":
        raise WrongConfirmation("Type DELETE to confirm. Your account was not deleted.")
    email = customer.email.lower()
    session.execute(delete(CustomerAddress).where(col(CustomerAddress.customer_id) == customer.id))
    session.execute(delete(CustomerLink).where(col(CustomerLink.customer_id) == customer.id))
    session.execute(delete(CustomerSignInAttempt).where(
        func.lower(CustomerSignInAttempt.email) == email))
    session.execute(delete(CustomerNote).where(func.lower(CustomerNote.email) == email))
    session.execute(delete(CustomerFileRef).where(func.lower(CustomerFileRef.email) == email))
    session.execute(delete(Email).where(func.lower(Email.to_address) == email,
                                        col(Email.template).in_(ACCOUNT_TEMPLATES),
                                        col(Email.order_id).is_(None)))
    # What the customer wrote to the shop is theirs, not the law's: its text goes too. Staff
    # replies stay, so the shop still knows what it promised.
    threads = select(SupportThread.id).join(Order, col(Order.id) == SupportThread.order_id).where(
        col(Order.customer_id) == customer.id)
    session.execute(update(SupportMessage).where(
        col(SupportMessage.thread_id).in_(threads), col(SupportMessage.from_customer).is_(True),
    ).values(author="", body=ERASED_MESSAGE))
    customer.email = ""
    customer.full_name = ""
    customer.phone = ""
    customer.password_hash = None
    customer.email_verified_at = None
    customer.marketing_emails = False
    customer.last_sign_in_at = None
    customer.password_changed_at = None
    customer.updated_at = now
    customer.deleted_at = now
