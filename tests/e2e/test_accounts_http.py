"""Customer accounts over HTTP, through the real storefront app (Starlette's test client, in
process) on PostgreSQL and localstripe: sign-up and verification, sign-in and sign-out with
session rotation, emailed links, password reset, rate limits, saved addresses at checkout and
erasing an account. Links are read from the `email` table, as a mail client would show them.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlmodel import col, func, select
from starlette.testclient import TestClient

from conveyor.db import Database
from conveyor.settings import Settings
from conveyor.templating import create_environment
from fulfilment import support
from models.after_sales import SupportMessage
from models.base import utcnow
from models.customers import (
    Customer,
    CustomerAddress,
    CustomerFileRef,
    CustomerLink,
    CustomerNote,
    CustomerSignInAttempt,
)
from models.finance import FinanceDocument
from models.messaging import Email
from models.orders import Order
from storefront.accounts import ERASED_MESSAGE
from storefront.app import create_app
from tests.e2e.test_storefront_http import ADDRESS, add_to_cart, csrf
from tests.factories import make_product
from tests.helpers import card_token
from tests.shopping import bought

PASSWORD = "correct horse battery"
NEW_PASSWORD = "another long passphrase"
ADA = "ada.lovelace@example.com"


def _client(db: Database, settings: Settings) -> TestClient:
    return TestClient(create_app(settings, db=db), base_url="http://127.0.0.1:8000",
                      follow_redirects=True)


@pytest.fixture
def client(db: Database, settings: Settings):
    with _client(db, settings) as test_client:
        yield test_client


@pytest.fixture
def other_client(db: Database, settings: Settings):
    with _client(db, settings) as test_client:
        yield test_client


def emails_to(db: Database, address: str, template: str | None = None) -> list[Email]:
    with db.read_session() as session:
        query = select(Email).where(func.lower(Email.to_address) == address.lower())
        if template is not None:
            query = query.where(Email.template == template)
        return list(session.exec(query.order_by(col(Email.created_at))))


def link_in(email: Email) -> str:
    """The path of the account link in an email (its text part)."""
    match = re.search(r"http://127\.0\.0\.1:8000(/account/[a-z-]+/[A-Za-z0-9_-]+)",
                      email.text_body)
    assert match, f"no account link in {email.template}"
    return match.group(1)


def last_link(db: Database, address: str, template: str) -> str:
    found = emails_to(db, address, template)
    assert found, f"no {template} email to {address}"
    return link_in(found[-1])


def follow_link(client: TestClient, path: str):
    """Open an emailed link (a page with a button) and press the button."""
    page = client.get(path)
    assert page.status_code == 200, page.text
    assert page.headers["referrer-policy"] == "no-referrer"
    return client.post(path, data={"csrf_token": csrf(page.text)})


def sign_up(client: TestClient, email: str = ADA, password: str = PASSWORD,
            full_name: str = "Ada Lovelace", **extra: str):
    page = client.get("/account/sign-up")
    return client.post("/account/sign-up", data={
        "csrf_token": csrf(page.text), "email": email, "full_name": full_name,
        "password": password, **extra})


def sign_in(client: TestClient, email: str = ADA, password: str = PASSWORD):
    page = client.get("/account/sign-in")
    return client.post("/account/sign-in", data={"csrf_token": csrf(page.text), "email": email,
                                                 "password": password})


def registered(client: TestClient, db: Database, email: str = ADA) -> None:
    """A verified account, signed in on `client`."""
    assert sign_up(client, email).status_code == 200
    response = follow_link(client, last_link(db, email, "account_verify"))
    assert response.status_code == 200 and str(response.url).endswith("/account")


def customer_row(db: Database, email: str = ADA) -> Customer:
    with db.read_session() as session:
        return session.exec(select(Customer).where(
            func.lower(Customer.email) == email.lower())).one()


def signed_in(client: TestClient) -> bool:
    response = client.get("/account", follow_redirects=False)
    return response.status_code == 200


# -- Sign-up and verification --------------------------------------------------------------------


def test_sign_up_then_the_verification_link_signs_in_and_joins_the_guests_orders(
        client, db, settings):
    # Given orders placed as a guest with the same email in another case, and someone else's
    made = make_product(db, variants=[("Std", 1500, 20)])
    mine = [bought(db, settings, [(made.variant_ids[0], 1)], email="Ada.Lovelace@example.com"),
            bought(db, settings, [(made.variant_ids[0], 2)], email=ADA)]
    theirs = bought(db, settings, [(made.variant_ids[0], 1)], email="grace@example.com")

    # When Ada signs up
    response = sign_up(client, marketing_emails="on")

    # Then she is asked to confirm her address, and is not signed in yet
    assert response.status_code == 200 and "We have sent a link to" in response.text
    assert not signed_in(client)
    customer = customer_row(db)
    assert customer.email_verified_at is None and customer.marketing_emails is True
    assert customer.password_hash and customer.password_hash.startswith("$argon2id$")
    with db.read_session() as session:
        assert session.exec(select(func.count()).select_from(Order)
                            .where(col(Order.customer_id).is_not(None))).one() == 0

    # When she opens the link from the email and confirms
    link = last_link(db, ADA, "account_verify")
    response = follow_link(client, link)

    # Then she is signed in, and her guest orders (only hers) are in her account
    assert response.status_code == 200 and str(response.url).endswith("/account")
    assert "your email address is confirmed" in response.text
    for order in mine:
        assert f'<a href="/orders/{order.status_token}">{order.number}</a>' in response.text
    assert theirs.number not in response.text
    assert "Being prepared" in response.text or "Confirmed" in response.text
    with db.read_session() as session:
        joined = {o.number: o.customer_id for o in session.exec(select(Order))}
    assert joined == {mine[0].number: customer.id, mine[1].number: customer.id,
                      theirs.number: None}
    assert customer_row(db).email_verified_at is not None

    # And the link works only once
    assert client.get(link).status_code == 410


def test_signing_up_with_a_taken_email_says_the_same_and_mails_the_owner_a_sign_in_link(
        client, other_client, db):
    # Given an account
    first = sign_up(client)

    # When someone signs up again with the same email in another case
    second = sign_up(other_client, email=ADA.upper(), password="some other password")

    # Then the page is the same, one account exists, and the owner got a sign-in link
    assert second.status_code == first.status_code == 200
    assert second.text.lower().split("<main")[1] == first.text.lower().split("<main")[1]
    with db.read_session() as session:
        assert session.exec(select(func.count()).select_from(Customer)).one() == 1
    notice = emails_to(db, ADA, "account_exists")
    assert len(notice) == 1 and "/account/sign-in/" in notice[0].text_body


def test_sign_up_shows_each_bad_field_and_keeps_what_was_typed(client, db):
    response = sign_up(client, email="not-an-email", password="short", full_name="Ada <b>")
    assert response.status_code == 422
    assert "This email address is not valid" in response.text
    assert "at least 12 characters" in response.text
    assert "cannot contain &lt; &gt;" in response.text
    assert 'value="not-an-email"' in response.text and "Ada &lt;b&gt;" in response.text
    assert 'value="short"' not in response.text  # a password is never sent back
    with db.read_session() as session:
        assert session.exec(select(func.count()).select_from(Customer)).one() == 0


def test_a_password_sign_in_needs_a_confirmed_email(client, db):
    # Given an account whose email is not confirmed yet
    sign_up(client)
    assert len(emails_to(db, ADA, "account_verify")) == 1

    # When its owner signs in with the right password
    response = sign_in(client)

    # Then she is asked to confirm first, with a new link
    assert response.status_code == 403 and "confirm your email address first" in response.text
    assert len(emails_to(db, ADA, "account_verify")) == 2
    assert not signed_in(client)


# -- Sign-in, sign-out, session rotation ---------------------------------------------------------


def test_signing_in_and_out_rotates_the_session_and_keeps_the_cart(client, other_client, db):
    # Given a confirmed account, and a visitor with something in the cart
    registered(other_client, db)
    made = make_product(db, name="Kept Mug", variants=[("Std", 1200, 5)])
    add_to_cart(client, made.slug, made.variant_ids[0], 2)
    before = client.get("/account/sign-in")
    old_token = csrf(before.text)
    old_cookie = client.cookies.get("conveyor_session")
    assert "Sign in</a>" in before.text

    # When they sign in
    response = client.post("/account/sign-in", data={"csrf_token": old_token, "email": ADA,
                                                      "password": PASSWORD})

    # Then they are signed in with fresh session content: a new CSRF token, the cart kept
    assert response.status_code == 200 and str(response.url).endswith("/account")
    assert "You are signed in." in response.text and 'href="/account">Account</a>' in response.text
    new_token = csrf(response.text)
    assert new_token != old_token
    assert client.cookies.get("conveyor_session") != old_cookie
    stale = client.post("/account/details", data={"csrf_token": old_token,
                                                  "full_name": "Mallory"})
    assert stale.status_code == 403
    cart = client.get("/cart")
    assert "Kept Mug" in cart.text and 'data-testid="cart-count">2<' in cart.text
    assert customer_row(db).last_sign_in_at is not None

    # When they sign out
    response = client.post("/account/sign-out", data={"csrf_token": new_token})

    # Then the session rotates again, the account pages ask to sign in, the cart stays
    assert response.status_code == 200 and "You are signed out." in response.text
    assert csrf(client.get("/account/sign-in").text) not in (new_token, old_token)
    assert not signed_in(client)
    assert "Kept Mug" in client.get("/cart").text


def test_a_wrong_password_and_an_unknown_email_get_the_same_answer(client, db):
    registered(client, db)
    client.cookies.clear()
    wrong = sign_in(client, password="not the password at all")
    unknown = sign_in(client, email="nobody@example.com")
    assert wrong.status_code == unknown.status_code == 401
    message = "That email and password do not match an account."
    assert message in wrong.text and message in unknown.text
    assert not signed_in(client)
    with db.read_session() as session:
        failed = session.exec(select(CustomerSignInAttempt.email).where(
            col(CustomerSignInAttempt.succeeded).is_(False))).all()
    assert sorted(failed) == ["ada.lovelace@example.com", "nobody@example.com"]


def test_account_pages_send_visitors_to_sign_in_and_come_back(client, db):
    for path in ("/account", "/account/addresses", "/account/addresses/new",
                 "/account/addresses/1", "/account/details", "/account/preferences",
                 "/account/delete"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"] == f"/account/sign-in?next={path}"
    registered(client, db)
    client.post("/account/sign-out", data={"csrf_token": csrf(client.get("/account").text)})
    page = client.get("/account/sign-in?next=/account/addresses")
    response = client.post("/account/sign-in", data={
        "csrf_token": csrf(page.text), "email": ADA, "password": PASSWORD,
        "next": "/account/addresses"})
    assert str(response.url).endswith("/account/addresses")
    elsewhere = client.post("/account/sign-in", data={
        "csrf_token": csrf(response.text), "email": ADA, "password": PASSWORD,
        "next": "https://evil.example/"}, follow_redirects=False)
    assert elsewhere.headers["location"] == "/account"


def test_account_pages_are_private_and_keep_the_security_headers(client, db):
    registered(client, db)
    for path in ("/account", "/account/addresses", "/account/details",
                 "/account/preferences", "/account/delete", "/account/sign-in"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["cache-control"] == "no-store", path
        assert "default-src 'self'" in response.headers["content-security-policy"]
        assert response.headers["x-frame-options"] == "DENY"
    for path in ("/account/sign-in", "/account/sign-up", "/account/sign-in-link",
                 "/account/reset", "/account/details", "/account/addresses",
                 "/account/delete", "/account/sign-out"):
        refused = client.post(path, data={"email": ADA, "password": PASSWORD})
        assert refused.status_code == 403, path
    assert signed_in(client)


# -- Emailed sign-in links -----------------------------------------------------------------------


def test_an_emailed_sign_in_link_signs_in_once_and_proves_the_email(client, other_client,
                                                                    db, settings):
    # Given an account never confirmed, and a guest order with its email
    sign_up(other_client)
    made = make_product(db, variants=[("Std", 900, 5)])
    order = bought(db, settings, [(made.variant_ids[0], 1)], email=ADA)

    # When a link is asked for that email, and for an email without an account
    page = client.get("/account/sign-in")
    asked = client.post("/account/sign-in-link", data={"csrf_token": csrf(page.text),
                                                       "email": ADA})
    nobody = client.post("/account/sign-in-link", data={"csrf_token": csrf(page.text),
                                                        "email": "nobody@example.com"})

    # Then both pages say the same, and only the account's address gets a link
    for response, email in ((asked, ADA), (nobody, "nobody@example.com")):
        assert response.status_code == 200
        assert f"If an account exists for {email}, we have sent it an email" in response.text
    assert emails_to(db, "nobody@example.com") == []
    link = last_link(db, ADA, "account_sign_in")
    with db.read_session() as session:
        stored = session.exec(select(CustomerLink.token_hash)).all()
    token = link.rsplit("/", 1)[1]
    assert token not in stored and len(stored) == 2  # verification + sign-in, hashes only

    # When the link is opened: a page with a button, nothing spent yet
    assert client.get(link).status_code == 200 and client.get(link).status_code == 200
    response = follow_link(client, link)

    # Then the visitor is signed in, the email counts as proved, the guest order joined
    assert str(response.url).endswith("/account") and order.number in response.text
    assert customer_row(db).email_verified_at is not None
    # And the link is spent
    again = client.post(link, data={"csrf_token": csrf(response.text)})
    assert again.status_code == 410 and "expired or has been used" in again.text


def test_an_expired_link_does_not_sign_in(client, db):
    registered(client, db)
    client.cookies.clear()
    page = client.get("/account/sign-in")
    client.post("/account/sign-in-link", data={"csrf_token": csrf(page.text), "email": ADA})
    link = last_link(db, ADA, "account_sign_in")
    with db.unit_of_work() as uow:
        for row in uow.session.exec(select(CustomerLink)):
            row.expires_at = utcnow() - timedelta(seconds=1)
    assert client.get(link).status_code == 410
    page = client.get("/account/sign-in")
    assert client.post(link, data={"csrf_token": csrf(page.text)}).status_code == 410
    assert not signed_in(client)
    assert client.get("/account/sign-in/short").status_code == 410


# -- Password reset ------------------------------------------------------------------------------


def test_a_password_reset_ends_every_other_sign_in(client, other_client, db):
    # Given Ada signed in on one browser
    registered(client, db)
    assert signed_in(client)

    # When she asks for a reset on another browser (and someone asks for an unknown email)
    page = other_client.get("/account/reset")
    asked = other_client.post("/account/reset", data={"csrf_token": csrf(page.text),
                                                      "email": ADA})
    unknown = other_client.post("/account/reset", data={"csrf_token": csrf(page.text),
                                                        "email": "nobody@example.com"})
    assert "If an account exists for" in asked.text and "If an account exists for" in unknown.text
    link = last_link(db, ADA, "account_reset")

    # And tries a weak password first: refused, the link still works
    form = other_client.get(link)
    weak = other_client.post(link, data={"csrf_token": csrf(form.text), "password": "short"})
    assert weak.status_code == 422 and "at least 12 characters" in weak.text

    # When she sets a good one
    done = other_client.post(link, data={"csrf_token": csrf(weak.text),
                                         "password": NEW_PASSWORD})

    # Then this browser is signed in, the first one is signed out, and only the new password
    # works
    assert done.status_code == 200 and "Your password is changed" in done.text
    assert signed_in(other_client)
    assert not signed_in(client)
    assert sign_in(client, password=PASSWORD).status_code == 401
    assert sign_in(client, password=NEW_PASSWORD).status_code == 200
    assert signed_in(client)
    # And the link is spent
    assert other_client.get(link).status_code == 410


# -- Rate limits ---------------------------------------------------------------------------------


def test_sign_in_is_rate_limited_per_email_and_per_client_address(db, settings):
    limited = settings.model_copy(update={"customer_sign_in_failures_per_email": 3,
                                          "customer_sign_in_failures_per_ip": 6})
    with _client(db, limited) as client:
        registered(client, db)
        client.cookies.clear()
        # Given three wrong passwords for Ada's email
        for _ in range(3):
            assert sign_in(client, password="a wrong password!").status_code == 401

        # Then even the right password is refused for now, with a clear message, and a link
        # cannot be asked for either
        paused = sign_in(client)
        assert paused.status_code == 429
        assert "Too many sign-in attempts" in paused.text and "15 minutes" in paused.text
        assert not signed_in(client)
        page = client.get("/account/sign-in")
        link = client.post("/account/sign-in-link", data={"csrf_token": csrf(page.text),
                                                          "email": ADA})
        assert link.status_code == 429

        # And an email without an account is paused the same way (nothing told apart)
        for _ in range(3):
            assert sign_in(client, email="ghost@example.com").status_code in (401, 429)
        ghost = sign_in(client, email="ghost@example.com")
        assert ghost.status_code == 429 and "Too many sign-in attempts" in ghost.text

        # And the client address, past its own limit, is paused for every email
        other = sign_in(client, email="someone.else@example.com")
        assert other.status_code == 429

        # When the window has passed
        with db.unit_of_work() as uow:
            for attempt in uow.session.exec(select(CustomerSignInAttempt)):
                attempt.at = attempt.at - timedelta(minutes=16)

        # Then the right password works again
        assert sign_in(client).status_code == 200 and signed_in(client)


# -- Addresses, details, preferences, checkout ---------------------------------------------------


def _add_address(client: TestClient, **fields: str):
    page = client.get("/account/addresses/new")
    return client.post("/account/addresses", data={"csrf_token": csrf(page.text), **fields})


HOME = {"full_name": "Ada Lovelace", "phone": "+49 30 1234567", "address": "Unter den Linden 1",
        "city": "Berlin", "postal_code": "10117", "country": "DE"}
WORK = {"full_name": "Ada King", "phone": "+31 20 123 4567", "address": "Damrak 70",
        "city": "Amsterdam", "postal_code": "1012lm", "country": "NL"}


def test_saved_addresses_are_checked_and_fill_in_the_checkout(client, db, settings):
    registered(client, db)

    # A bad address: messages next to the fields, what was typed kept
    bad = _add_address(client, **{**HOME, "postal_code": "ABC", "phone": "12"})
    assert bad.status_code == 422
    assert "This is not a postal code of Germany" in bad.text
    assert "phone number" in bad.text and 'value="Unter den Linden 1"' in bad.text

    # Two good ones: the first is the default until the second is made it
    assert "Address saved." in _add_address(client, **HOME).text
    page = _add_address(client, **WORK, is_default="on")
    assert page.text.index("Damrak 70") < page.text.index("Unter den Linden 1")
    with db.read_session() as session:
        rows = {a.address: a for a in session.exec(select(CustomerAddress))}
    assert rows["Damrak 70"].is_default and not rows["Unter den Linden 1"].is_default
    assert rows["Damrak 70"].postal_code == "1012 LM"  # normalised as checkout does

    # The checkout is filled in from the account and the default address; another saved
    # address can be chosen
    made = make_product(db, name="Lamp", variants=[("Std", 4000, 5)])
    add_to_cart(client, made.slug, made.variant_ids[0])
    checkout = client.get("/checkout")
    assert f'value="{ADA}"' in checkout.text and 'value="Damrak 70"' in checkout.text
    assert 'value="Amsterdam"' in checkout.text
    assert "Save it to my account for next time" in checkout.text
    home_id = rows["Unter den Linden 1"].id
    chosen = client.get(f"/checkout?address={home_id}")
    assert 'value="Unter den Linden 1"' in chosen.text and 'value="Berlin"' in chosen.text
    for odd in ("99999999999", "abc", "-1"):
        fallback = client.get(f"/checkout?address={odd}")
        assert fallback.status_code == 200 and 'value="Damrak 70"' in fallback.text

    # When Ada pays to a new address and asks to save it
    response = client.post("/checkout", data={
        "csrf_token": csrf(chosen.text), **ADDRESS, "email": ADA, "address": "Am Markt 3",
        "city": "Bremen", "postal_code": "28195", "save_address": "on",
        "payment_token": card_token(settings.stripe_api_base)})

    # Then the order is hers, and the address is in her account
    assert "/checkout/confirmation/" in str(response.url)
    with db.read_session() as session:
        order = session.exec(select(Order)).one()
        saved = session.exec(select(CustomerAddress.address)).all()
    assert order.customer_id == customer_row(db).id
    assert sorted(saved) == ["Am Markt 3", "Damrak 70", "Unter den Linden 1"]
    assert order.number in client.get("/account").text


def test_addresses_can_be_edited_made_default_and_deleted_but_not_someone_elses(
        client, other_client, db):
    registered(client, db)
    registered(other_client, db, email="grace@example.com")
    _add_address(client, **HOME)
    _add_address(client, **WORK)
    with db.read_session() as session:
        ids = {a.address: a.id for a in session.exec(select(CustomerAddress))}
    home, work = ids["Unter den Linden 1"], ids["Damrak 70"]

    edit = client.get(f"/account/addresses/{home}")
    assert 'value="Unter den Linden 1"' in edit.text
    edited = client.post(f"/account/addresses/{home}", data={
        "csrf_token": csrf(edit.text), **HOME, "address": "Unter den Linden 2"})
    assert "Unter den Linden 2" in edited.text
    token = csrf(edited.text)
    assert "Default address changed." in client.post(
        f"/account/addresses/{work}/default", data={"csrf_token": token}).text

    # Someone else cannot see, change or delete them
    theirs = csrf(other_client.get("/account").text)
    assert other_client.get(f"/account/addresses/{home}").status_code == 404
    for action in ("", "/default", "/delete"):
        assert other_client.post(f"/account/addresses/{home}{action}", data={
            "csrf_token": theirs, **HOME}).status_code == 404
    assert client.get("/account/addresses/not-a-number").status_code == 404

    # Deleting the default makes the other one the default
    client.post(f"/account/addresses/{work}/delete", data={"csrf_token": token})
    with db.read_session() as session:
        left = session.exec(select(CustomerAddress)).all()
    assert [(a.address, a.is_default) for a in left] == [("Unter den Linden 2", True)]


def test_contact_details_and_email_preferences(client, db):
    registered(client, db)
    page = client.get("/account/details")
    assert 'href="/account/email"' in page.text
    bad = client.post("/account/details", data={"csrf_token": csrf(page.text),
                                                "full_name": "", "phone": "123"})
    assert bad.status_code == 422 and "Enter your full name" in bad.text
    good = client.post("/account/details", data={"csrf_token": csrf(page.text),
                                                 "full_name": "Augusta Ada King",
                                                 "phone": "+44 20 7946 0958"})
    assert "Your details are saved." in good.text
    row = customer_row(db)
    assert (row.full_name, row.phone) == ("Augusta Ada King", "+442079460958")

    assert row.marketing_emails is False
    prefs = client.get("/account/preferences")
    assert "always go out" in prefs.text
    client.post("/account/preferences", data={"csrf_token": csrf(prefs.text),
                                              "marketing_emails": "on"})
    assert customer_row(db).marketing_emails is True
    client.post("/account/preferences", data={"csrf_token": csrf(prefs.text)})
    assert customer_row(db).marketing_emails is False


# -- Erasure -------------------------------------------------------------------------------------


def test_account_deletion_leaves_no_personal_data_in_the_customers_rows_while_order_totals_and_invoices_remain(  # noqa: E501
        client, db, settings):
    # Given an account with orders (invoiced), addresses, links, sign-in attempts, a staff note
    made = make_product(db, variants=[("Std", 2500, 10)])
    orders = [bought(db, settings, [(made.variant_ids[0], n)], email=ADA) for n in (1, 2)]
    registered(client, db)
    _add_address(client, **HOME)
    page = client.get("/account/details")
    client.post("/account/details", data={"csrf_token": csrf(page.text),
                                          "full_name": "Ada Lovelace",
                                          "phone": "+49 30 1234567"})
    client.post("/account/sign-in-link", data={"csrf_token": csrf(page.text), "email": ADA})
    assert sign_in(client, password="wrong guess!!").status_code == 401
    with db.unit_of_work() as uow:
        uow.session.add(CustomerNote(email=ADA.upper(), author="support@conveyor.test",
                                     body="Prefers morning deliveries."))
        uow.session.add(CustomerFileRef(ref="g" + "0" * 32, email=ADA))
    with db.unit_of_work() as uow:
        support.post_customer_message(uow=uow, order_id=orders[0].id, subject="Delivery",
                                      body="Ada Lovelace here: please ring twice.",
                                      settings=settings)
    with db.unit_of_work() as uow:
        thread = support.current_thread(uow.session, orders[0].id)
        assert thread is not None
        support.reply_to_thread(uow=uow, thread_id=thread.id, body="We will ring twice.",
                                author="support@conveyor.test",
                                env=create_environment(), settings=settings)
    customer = customer_row(db)
    with db.read_session() as session:
        invoices_before = {d.number: (d.amount_cents, d.tax_cents, d.content) for d in
                           session.exec(select(FinanceDocument))}
        totals_before = {o.number: (o.subtotal_cents, o.tax_cents, o.total_cents) for o in
                         session.exec(select(Order))}
    assert len(invoices_before) == 2 and customer.phone == "+49301234567"

    # When a wrong password is given, nothing happens
    form = client.get("/account/delete")
    refused = client.post("/account/delete", data={"csrf_token": csrf(form.text),
                                                   "password": "not my password"})
    assert refused.status_code == 422 and "not your password" in refused.text
    assert customer_row(db).deleted_at is None

    # When Ada deletes her account with her password
    done = client.post("/account/delete", data={"csrf_token": csrf(form.text),
                                                "password": PASSWORD})

    # Then she is signed out
    assert done.status_code == 200 and "Your account is deleted" in done.text
    assert not signed_in(client)

    # And every column of her customer row holds no personal data
    personal = ("ada.lovelace", "lovelace", "+49301234567", "berlin", "linden", "argon2")
    with db.read_session() as session:
        row = session.get(Customer, customer.id)
        assert row is not None
        values = row.model_dump()
        assert set(values) == {c.name for c in Customer.__table__.columns}  # type: ignore[attr-defined]
        assert values.pop("id") == customer.id
        assert values.pop("created_at") == customer.created_at
        erased_at = values.pop("deleted_at")
        assert erased_at is not None and values.pop("updated_at") == erased_at
        assert values == {"email": "", "password_hash": None, "full_name": "", "phone": "",
                          "email_verified_at": None, "marketing_emails": False,
                          "last_sign_in_at": None, "password_changed_at": None}
        for value in row.model_dump().values():
            assert not any(word in str(value).lower() for word in personal)

        # And no row of hers is left in the account's other tables
        def left(model: type, *where: object) -> int:
            return session.exec(select(func.count()).select_from(model).where(*where)).one()

        assert left(CustomerAddress, CustomerAddress.customer_id == customer.id) == 0
        assert left(CustomerLink, CustomerLink.customer_id == customer.id) == 0
        assert left(CustomerSignInAttempt,
                    func.lower(CustomerSignInAttempt.email) == ADA) == 0
        assert left(CustomerNote, func.lower(CustomerNote.email) == ADA) == 0
        assert left(CustomerFileRef, func.lower(CustomerFileRef.email) == ADA) == 0
        assert left(Email, col(Email.template).like("account_%")) == 0

        # And what she wrote to the shop is gone, while the shop's reply stays
        messages = {m.from_customer: m for m in session.exec(select(SupportMessage))}
        assert (messages[True].author, messages[True].body) == ("", ERASED_MESSAGE)
        assert messages[False].body == "We will ring twice."

        # While the orders keep their totals, stay with the anonymised row, and the invoices
        # are untouched
        assert {o.number: (o.subtotal_cents, o.tax_cents, o.total_cents) for o in
                session.exec(select(Order))} == totals_before
        assert {o.customer_id for o in session.exec(select(Order))} == {customer.id}
        assert {d.number: (d.amount_cents, d.tax_cents, d.content) for d in
                session.exec(select(FinanceDocument))} == invoices_before
    for order in orders:
        assert client.get(f"/orders/{order.status_token}").status_code == 200

    # And the email is free for a new account, which starts empty
    registered(client, db)
    assert "No orders yet" in client.get("/account").text


def test_odd_input_on_every_account_page_gets_an_answer_never_a_500(client, db):
    registered(client, db)
    token = csrf(client.get("/account").text)
    odd = ["x" * 5000, "<script>alert(1)</script>", "\u202e\u200b", "   ", "🙂" * 300,
           "a@b", "@", "%", "ADA.LOVELACE@EXAMPLE.COM"]
    for path in ("/account/sign-in/<script>", "/account/verify/" + "x" * 300,
                 "/account/reset/%25%5F", "/account/email/<script>",
                 "/account/addresses/99999999999",
                 "/account/addresses/-1", "/account/addresses/1e9",
                 "/account/sign-in?next=//evil.example", "/account/sign-in?next=%0d%0a"):
        response = client.get(path)
        assert response.status_code in (200, 404, 410), path
        assert "<script>alert(1)</script>" not in response.text
    posts = ["/account/sign-in", "/account/sign-in-link", "/account/reset",
             "/account/addresses", "/account/addresses/99999999999",
             "/account/addresses/99999999999/default", "/account/addresses/1/delete",
             "/account/details", "/account/preferences", "/account/sign-up",
             "/account/reset/" + "y" * 40, "/account/sign-in/" + "y" * 40,
             "/account/verify/" + "y" * 40, "/account/email", "/account/email/" + "y" * 40]
    for path in posts:
        for value in odd:
            data = {"csrf_token": token, "next": value, "email": value, "password": value,
                    "full_name": value, "phone": value, "address": value, "city": value,
                    "postal_code": value, "country": value, "marketing_emails": value,
                    "is_default": value}
            response = client.post(path, data=data)
            assert response.status_code in (200, 401, 403, 404, 410, 422, 429), (path, value)
            assert "<script>alert(1)</script>" not in response.text
            token = csrf(client.get("/account/sign-in").text)
    assert customer_row(db).deleted_at is None
