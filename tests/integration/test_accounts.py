"""Customer account services (storefront/accounts.py) on PostgreSQL: links, races, guest orders
joining, sessions ending, default addresses, erasure."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlmodel import col, func, select

from conveyor.db import Database
from conveyor.errors import NotFound
from conveyor.passwords import WeakPassword
from conveyor.settings import Settings
from models.base import utcnow
from models.customers import (
    Customer,
    CustomerAddress,
    CustomerLink,
    CustomerSignInAttempt,
    LinkPurpose,
)
from models.messaging import Email
from models.orders import Order, OrderStatus
from models.warehouse import Parcel
from storefront import accounts
from tests import shopping
from tests.factories import make_product
from tests.shopping import ENV, bought

PASSWORD = "correct horse battery"


def _sign_up(db: Database, settings: Settings, email: str = "ada@example.com",
             **changes: object) -> Customer | None:
    details = accounts.SignUpDetails(email=email, full_name="Ada Lovelace", password=PASSWORD,
                                     marketing_emails=False)
    with db.unit_of_work() as uow:
        return accounts.sign_up(uow=uow, env=ENV, settings=settings, details=details,
                                now=utcnow())


def _token(db: Database, template: str) -> str:
    with db.read_session() as session:
        email = session.exec(select(Email).where(Email.template == template)
                             .order_by(col(Email.created_at).desc())).first()
    assert email is not None
    return email.text_body.split("/account/", 1)[1].split("/", 1)[1].split()[0]


def _verified(db: Database, settings: Settings, email: str = "ada@example.com") -> Customer:
    _sign_up(db, settings, email)
    with db.unit_of_work() as uow:
        return accounts.verify_email(uow=uow, token=_token(db, "account_verify"), now=utcnow())


def test_concurrent_sign_ups_with_one_email_make_one_account(db, settings):
    # Given eight sign-ups racing with the same email in different cases
    barrier = threading.Barrier(8)
    results: list[object] = []

    def racer(n: int) -> None:
        barrier.wait()
        results.append(_sign_up(db, settings, "Ada@example.com" if n % 2 else "ada@example.com"))

    threads = [threading.Thread(target=racer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then one account exists; the others created nothing and mailed the owner instead
    assert sum(1 for r in results if r is not None) == 1 and len(results) == 8
    with db.read_session() as session:
        assert session.exec(select(func.count()).select_from(Customer)).one() == 1
        templates = sorted(e.template for e in session.exec(select(Email)))
    assert templates == ["account_exists"] * 7 + ["account_verify"]


def test_links_store_only_a_hash_expire_and_work_once(db, settings):
    _sign_up(db, settings)
    token = _token(db, "account_verify")
    with db.read_session() as session:
        link = session.exec(select(CustomerLink)).one()
    assert link.token_hash == accounts.token_digest(token) and token not in link.token_hash
    assert link.expires_at - link.created_at == timedelta(minutes=settings.customer_link_minutes)

    # A link is only good for its purpose
    with pytest.raises(accounts.InvalidLink), db.unit_of_work() as uow:
        accounts.sign_in_with_link(uow=uow, token=token, now=utcnow())
    # Not after its expiry
    with pytest.raises(accounts.InvalidLink), db.unit_of_work() as uow:
        accounts.verify_email(uow=uow, token=token, now=link.expires_at)
    # Once, before it
    with db.unit_of_work() as uow:
        accounts.verify_email(uow=uow, token=token, now=utcnow())
    with pytest.raises(accounts.InvalidLink), db.unit_of_work() as uow:
        accounts.verify_email(uow=uow, token=token, now=utcnow())


def test_spending_a_link_spends_the_other_links_of_its_purpose(db, settings):
    customer = _verified(db, settings)
    for _ in range(2):
        with db.unit_of_work() as uow:
            accounts.request_link(uow=uow, env=ENV, settings=settings, email=customer.email,
                                  purpose=LinkPurpose.RESET_PASSWORD, client_ip="192.0.2.1",
                                  now=utcnow())
    with db.read_session() as session:
        reset_emails = session.exec(select(Email).where(Email.template == "account_reset")
                                    .order_by(col(Email.created_at))).all()
    first, second = (e.text_body.split("/account/reset/", 1)[1].split()[0]
                     for e in reset_emails)

    # A weak password leaves the link unspent
    with pytest.raises(WeakPassword), db.unit_of_work() as uow:
        accounts.reset_password(uow=uow, token=second, password="short", now=utcnow())
    with db.unit_of_work() as uow:
        accounts.reset_password(uow=uow, token=second, password="a brand new password",
                                now=utcnow())
    with pytest.raises(accounts.InvalidLink), db.unit_of_work() as uow:
        accounts.reset_password(uow=uow, token=first, password="yet another password",
                                now=utcnow())


def test_a_sign_in_ends_when_the_password_changes_or_the_account_is_erased(db, settings):
    customer = _verified(db, settings)
    began = utcnow()
    with db.read_session() as session:
        assert accounts.customer_for_session(session, customer.id, began) is not None
    with db.unit_of_work() as uow:
        accounts.request_link(uow=uow, env=ENV, settings=settings, email=customer.email,
                              purpose=LinkPurpose.RESET_PASSWORD, client_ip="192.0.2.1",
                              now=utcnow())
    changed = utcnow()
    with db.unit_of_work() as uow:
        accounts.reset_password(uow=uow, token=_token(db, "account_reset"),
                                password="a brand new password", now=changed)
    with db.read_session() as session:
        assert accounts.customer_for_session(session, customer.id, began) is None
        assert accounts.customer_for_session(session, customer.id, changed) is not None
    with db.unit_of_work() as uow:
        accounts.delete_account(uow=uow, customer_id=customer.id,
                                password="a brand new password", confirmation="",
                                now=utcnow())
    with db.read_session() as session:
        assert accounts.customer_for_session(session, customer.id, utcnow()) is None


def test_guest_orders_join_by_email_in_any_case_and_never_leave_another_account(db, settings):
    made = make_product(db, variants=[("Std", 1000, 20)])
    variant = made.variant_ids[0]
    guest = bought(db, settings, [(variant, 1)], email="Ada@example.com")
    other = bought(db, settings, [(variant, 1)], email="grace@example.com")
    customer = _verified(db, settings)
    # An order of the same email already in some account stays there
    taken = bought(db, settings, [(variant, 3)], email="ada@example.com")
    grace = _verified(db, settings, "grace@example.com")
    with db.unit_of_work() as uow:
        uow.session.get(Order, taken.id).customer_id = grace.id  # type: ignore[union-attr]
    with db.unit_of_work() as uow:
        fresh = uow.session.get(Customer, customer.id)
        assert fresh is not None
        assert accounts.join_guest_orders(uow=uow, customer=fresh) == 0
    with db.read_session() as session:
        owners = {o.id: o.customer_id for o in session.exec(select(Order))}
    assert owners == {guest.id: customer.id, other.id: grace.id, taken.id: grace.id}


def test_a_password_sign_in_counts_failures_and_rehashes_old_hashes(db, settings):
    from argon2 import PasswordHasher

    customer = _verified(db, settings)
    with db.unit_of_work() as uow:
        row = uow.session.get(Customer, customer.id)
        assert row is not None
        row.password_hash = PasswordHasher(time_cost=1, memory_cost=8 * 1024,
                                           parallelism=1).hash(PASSWORD)

    def attempt(password: str) -> accounts.SignInOutcome:
        with db.unit_of_work() as uow:
            return accounts.sign_in_with_password(uow=uow, env=ENV, settings=settings,
                                                  email="ADA@example.com ", password=password,
                                                  client_ip="192.0.2.9", now=utcnow())

    assert isinstance(attempt("wrong password!").refusal, accounts.InvalidCredentials)
    ok = attempt(PASSWORD)
    assert ok.customer is not None and ok.refusal is None
    with db.read_session() as session:
        row = session.get(Customer, customer.id)
        assert row is not None and row.password_hash is not None
        assert not PasswordHasher().check_needs_rehash(row.password_hash)
        assert row.last_sign_in_at is not None


def test_a_customer_has_exactly_one_default_address_while_they_have_any(db, settings):
    customer = _verified(db, settings)
    home = accounts.AddressDetails("Ada Lovelace", "+49301234567", "Unter den Linden 1",
                                   "Berlin", "10117", "DE")
    work = accounts.AddressDetails("Ada King", "+31201234567", "Damrak 70", "Amsterdam",
                                   "1012 LM", "NL")

    def defaults() -> list[str]:
        with db.read_session() as session:
            return [a.address for a in accounts.addresses_of(session, customer.id)
                    if a.is_default]

    with db.unit_of_work() as uow:
        first = accounts.save_address(uow=uow, customer_id=customer.id, details=home)
        second = accounts.save_address(uow=uow, customer_id=customer.id, details=work)
    assert defaults() == ["Unter den Linden 1"]
    with db.unit_of_work() as uow:
        assert second.id is not None
        accounts.set_default_address(uow=uow, customer_id=customer.id, address_id=second.id)
    assert defaults() == ["Damrak 70"]
    with db.unit_of_work() as uow:
        accounts.remember_address(uow=uow, customer_id=customer.id, details=home)  # known
    with db.read_session() as session:
        assert len(accounts.addresses_of(session, customer.id)) == 2
        prefill = accounts.checkout_prefill(session, customer.id)
        assert prefill["address"] == "Damrak 70" and prefill["email"] == "ada@example.com"
        assert accounts.checkout_prefill(session, customer.id, first.id)["city"] == "Berlin"
    with db.unit_of_work() as uow:
        assert second.id is not None
        accounts.delete_address(uow=uow, customer_id=customer.id, address_id=second.id)
    assert defaults() == ["Unter den Linden 1"]

    # Another customer's address is nobody's business
    grace = _verified(db, settings, "grace@example.com")
    with pytest.raises(NotFound), db.unit_of_work() as uow:
        assert first.id is not None
        accounts.delete_address(uow=uow, customer_id=grace.id, address_id=first.id)
    with db.read_session() as session:
        assert session.exec(select(func.count()).select_from(CustomerAddress)).one() == 1


def test_an_account_without_a_password_is_erased_by_typing_delete(db, settings):
    customer = _verified(db, settings)
    with db.unit_of_work() as uow:
        row = uow.session.get(Customer, customer.id)
        assert row is not None
        row.password_hash = None
    with pytest.raises(accounts.WrongConfirmation), db.unit_of_work() as uow:
        accounts.delete_account(uow=uow, customer_id=customer.id, password="",
                                confirmation="yes", now=utcnow())
    with db.unit_of_work() as uow:
        accounts.delete_account(uow=uow, customer_id=customer.id, password="",
                                confirmation=" delete ", now=utcnow())
    with db.read_session() as session:
        row = session.get(Customer, customer.id)
        assert row is not None and row.deleted_at is not None and row.email == ""
    # And the same email can make a new account
    assert _sign_up(db, settings) is not None


def test_concurrent_wrong_passwords_for_one_email_never_pass_its_limit(db, settings):
    # Given an account whose email may fail three times per window
    customer = _verified(db, settings)
    limited = settings.model_copy(update={"customer_sign_in_failures_per_email": 3})
    barrier = threading.Barrier(10)
    refusals: list[str] = []

    # When ten wrong passwords arrive at once, from ten addresses
    def guess(n: int) -> None:
        barrier.wait()
        with db.unit_of_work() as uow:
            outcome = accounts.sign_in_with_password(
                uow=uow, env=ENV, settings=limited, email=customer.email,
                password=f"guess number {n}!", client_ip=f"198.51.100.{n}", now=utcnow())
        assert outcome.refusal is not None
        refusals.append(outcome.refusal.code)

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then exactly three were checked and counted; the others were paused unchecked
    assert sorted(refusals) == ["invalid_credentials"] * 3 + ["rate_limited"] * 7
    with db.read_session() as session:
        assert session.exec(select(func.count()).select_from(CustomerSignInAttempt)).one() == 3


def test_the_order_history_shows_status_and_tracking_but_not_unpaid_checkouts(db, settings):
    made = make_product(db, variants=[("Std", 1000, 20)])
    variant = made.variant_ids[0]
    shipped = bought(db, settings, [(variant, 1)])
    waiting = bought(db, settings, [(variant, 2)])
    cart_id, view = shopping.cart(db, [(variant, 3)])
    unpaid = shopping.place(db, settings, cart_id, view)  # never paid
    customer = _verified(db, settings)
    with db.unit_of_work() as uow:
        uow.session.add(Parcel(order_id=shipped.id, weight_grams=500, packed_by="packer",
                               carrier="DHL", tracking_number="JJD0001",
                               tracking_url="https://track.example/JJD0001",
                               shipped_by="packer", shipped_at=utcnow()))
        uow.session.add(Parcel(order_id=waiting.id, weight_grams=500, packed_by="packer"))
    with db.read_session() as session:
        rows = accounts.order_history(session, customer.id)
        assert session.get(Order, unpaid.id).customer_id == customer.id  # type: ignore[union-attr]
    assert [r.number for r in rows] == [waiting.number, shipped.number]  # newest first
    by_number = {r.number: r for r in rows}
    assert [(t.carrier, t.tracking_number) for t in by_number[shipped.number].tracking] == [
        ("DHL", "JJD0001")]
    assert by_number[waiting.number].tracking == []  # packed, not shipped yet
    assert by_number[shipped.number].status_label == accounts.CUSTOMER_LABELS[
        OrderStatus(shipped.status)]
    assert unpaid.status == OrderStatus.PENDING_PAYMENT
