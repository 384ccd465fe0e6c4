"""Changing an account's email address over HTTP, through the real storefront app on
PostgreSQL: the link goes to the new address and moves the account (notes, customer file,
guest orders) when spent by its POST; the old address is told; a taken address is not told
apart; passwords, expired, used and superseded links are refused; requests are rate-limited.
Links are read from the `email` table.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlmodel import col, func, select
from starlette.testclient import TestClient

from conveyor.db import Database
from conveyor.settings import Settings
from models.base import utcnow
from models.customers import Customer, CustomerFileRef, CustomerLink, CustomerNote, LinkPurpose
from models.messaging import Email
from models.orders import Order
from tests.e2e.test_accounts_http import (
    ADA,
    PASSWORD,
    _client,
    customer_row,
    emails_to,
    follow_link,
    last_link,
    registered,
    sign_in,
    sign_up,
    signed_in,
)
from tests.e2e.test_storefront_http import csrf
from tests.factories import make_product
from tests.shopping import bought

NEW = "ada.king@example.com"
GRACE = "grace.hopper@example.com"


@pytest.fixture
def client(db: Database, settings: Settings):
    with _client(db, settings) as test_client:
        yield test_client


@pytest.fixture
def other_client(db: Database, settings: Settings):
    with _client(db, settings) as test_client:
        yield test_client


def ask_change(client: TestClient, new_email: str, password: str = PASSWORD):
    page = client.get("/account/email")
    assert page.status_code == 200
    return client.post("/account/email", data={"csrf_token": csrf(page.text),
                                                "new_email": new_email, "password": password})


def change_links(db: Database) -> list[CustomerLink]:
    with db.read_session() as session:
        return list(session.exec(select(CustomerLink).where(
            CustomerLink.purpose == LinkPurpose.CHANGE_EMAIL).order_by(col(CustomerLink.id))))


def main_part(html: str, *emails: str) -> str:
    """The page's main content, with the addresses it names blanked."""
    text = html.split("<main", 1)[1]
    for email in emails:
        text = re.sub(re.escape(email), "EMAIL", text, flags=re.IGNORECASE)
    return text


def test_a_confirmed_change_moves_the_account_its_notes_and_the_new_addresses_guest_orders(
        client, other_client, db, settings):
    # Given Ada's account with an order, a staff note and a customer-file reference under her
    # email, and guest orders placed with the new address (another case) and by someone else
    made = make_product(db, variants=[("Std", 1200, 20)])
    own = bought(db, settings, [(made.variant_ids[0], 1)], email=ADA)
    guest = bought(db, settings, [(made.variant_ids[0], 2)], email="Ada.King@example.com")
    theirs = bought(db, settings, [(made.variant_ids[0], 1)], email=GRACE)
    registered(client, db)
    with db.unit_of_work() as uow:
        uow.session.add(CustomerNote(email=ADA.upper(), author="support@conveyor.test",
                                     body="Prefers morning deliveries."))
        uow.session.add(CustomerFileRef(ref="g" + "1" * 32, email=ADA))
    customer = customer_row(db)
    assert "Change your email address" in client.get("/account/details").text

    # When she asks to move to the new address with her password
    asked = ask_change(client, NEW)

    # Then the page says a link went to the new address, which got it (the hash only stored)
    assert asked.status_code == 200 and f"We have sent a link to {NEW}" in asked.text
    link = last_link(db, NEW, "account_change_email")
    assert link.startswith("/account/email/")
    stored = change_links(db)
    assert [(s.new_email, s.token_hash != link.rsplit("/", 1)[1]) for s in stored] == [
        (NEW, True)]
    # And the old address is told, without the link
    told = emails_to(db, ADA, "account_email_changing")
    assert len(told) == 1 and "/account/email/" not in told[0].text_body + told[0].html_body
    # And nothing has changed yet
    assert customer_row(db).email == ADA

    # When the link is opened in another browser and confirmed
    done = follow_link(other_client, link)

    # Then the account has the new address, proved, and that browser is signed in
    assert done.status_code == 200 and str(done.url).endswith("/account")
    assert "Your email address is changed" in done.text
    with db.read_session() as session:
        row = session.get(Customer, customer.id)
        assert row is not None and row.email == NEW and row.email_verified_at is not None
        # And the staff note moved with it, the old file reference is gone
        notes = session.exec(select(CustomerNote.email, CustomerNote.body)).all()
        assert notes == [(NEW, "Prefers morning deliveries.")]
        assert session.exec(select(func.count()).select_from(CustomerFileRef)).one() == 0
        # And the new address's guest order joined; hers stays; someone else's stays out
        owners = {o.number: o.customer_id for o in session.exec(select(Order))}
    assert owners == {own.number: customer.id, guest.number: customer.id,
                      theirs.number: None}
    assert guest.number in done.text and own.number in done.text
    # And the link is spent
    assert other_client.get(link).status_code == 410

    # And the new address signs in; the old one does not
    client.cookies.clear()
    assert sign_in(client, email=ADA).status_code == 401
    assert sign_in(client, email=NEW).status_code == 200 and signed_in(client)


def test_the_form_checks_the_address_and_the_password_and_keeps_what_was_typed(client, db):
    registered(client, db)

    bad = ask_change(client, "not-an-email")
    assert bad.status_code == 422 and "This email address is not valid" in bad.text
    assert 'value="not-an-email"' in bad.text

    same = ask_change(client, ADA.upper())
    assert same.status_code == 422 and "already your email address" in same.text

    wrong = ask_change(client, NEW, password="not my password")
    assert wrong.status_code == 422 and "not your password" in wrong.text
    assert f'value="{NEW}"' in wrong.text and 'value="not my password"' not in wrong.text

    assert change_links(db) == [] and emails_to(db, NEW) == []
    assert emails_to(db, ADA, "account_email_changing") == []
    assert customer_row(db).email == ADA


def test_a_taken_address_gets_the_same_page_and_no_link_and_its_account_is_untouched(
        client, other_client, db):
    # Given Grace's account, and Ada's
    registered(other_client, db, GRACE)
    grace_before = customer_row(db, GRACE)
    registered(client, db)

    # When Ada asks to move to Grace's address (another case), and to a free one
    taken = ask_change(client, GRACE.upper())
    free = ask_change(client, NEW)

    # Then both pages say the same
    assert taken.status_code == free.status_code == 200
    assert main_part(taken.text, GRACE.upper()) == main_part(free.text, NEW)
    # And Grace's address got a notice, without any link, and no link carries it
    notice = emails_to(db, GRACE, "account_email_taken")
    assert len(notice) == 1 and "/account/email/" not in notice[0].text_body
    assert emails_to(db, GRACE, "account_change_email") == []
    assert [link.new_email for link in change_links(db)] == [NEW]
    # And Grace's account is untouched, Ada's too
    assert customer_row(db, GRACE).model_dump() == grace_before.model_dump()
    assert customer_row(db).email == ADA


def test_a_link_is_refused_when_its_address_got_an_account_meanwhile(client, other_client, db):
    registered(client, db)
    ask_change(client, NEW)
    link = last_link(db, NEW, "account_change_email")
    assert sign_up(other_client, NEW).status_code == 200  # an account, not yet confirmed

    refused = follow_link(other_client, link)

    assert refused.status_code == 409 and "There is already an account for" in refused.text
    assert customer_row(db).email == ADA
    with db.read_session() as session:
        assert session.exec(select(func.count()).select_from(Customer)).one() == 2


def test_expired_and_used_links_are_refused(client, db):
    registered(client, db)

    # An expired link
    ask_change(client, NEW)
    expired = last_link(db, NEW, "account_change_email")
    with db.unit_of_work() as uow:
        for row in uow.session.exec(select(CustomerLink)):
            row.expires_at = utcnow() - timedelta(seconds=1)
    assert client.get(expired).status_code == 410
    token = csrf(client.get("/account").text)
    assert client.post(expired, data={"csrf_token": token}).status_code == 410
    assert customer_row(db).email == ADA

    # A used one
    ask_change(client, NEW)
    used = last_link(db, NEW, "account_change_email")
    assert used != expired
    assert follow_link(client, used).status_code == 200
    token = csrf(client.get("/account").text)
    again = client.post(used, data={"csrf_token": token})
    assert again.status_code == 410 and "expired or has been used" in again.text
    assert customer_row(db, NEW).email == NEW


def test_a_second_request_spends_the_first_link(client, db):
    registered(client, db)
    ask_change(client, NEW)
    first = last_link(db, NEW, "account_change_email")

    ask_change(client, GRACE)
    second = last_link(db, GRACE, "account_change_email")

    assert client.get(first).status_code == 410
    token = csrf(client.get("/account").text)
    assert client.post(first, data={"csrf_token": token}).status_code == 410
    assert customer_row(db).email == ADA
    assert follow_link(client, second).status_code == 200
    assert customer_row(db, GRACE).email == GRACE
    assert len(emails_to(db, ADA, "account_email_changing")) == 2


def test_an_account_without_a_password_changes_without_one(client, db):
    registered(client, db)
    with db.unit_of_work() as uow:
        row = uow.session.exec(select(Customer)).one()
        row.password_hash = None
    page = client.get("/account/email")
    assert 'name="password"' not in page.text
    asked = client.post("/account/email", data={"csrf_token": csrf(page.text),
                                                "new_email": NEW})
    assert asked.status_code == 200
    assert follow_link(client, last_link(db, NEW, "account_change_email")).status_code == 200
    assert customer_row(db, NEW).password_hash is None


def test_change_requests_are_rate_limited_per_new_address(db, settings):
    limited = settings.model_copy(update={"customer_sign_in_failures_per_email": 3})
    with _client(db, limited) as client:
        registered(client, db)
        for _ in range(3):
            assert ask_change(client, NEW).status_code == 200
        paused = ask_change(client, NEW)
        assert paused.status_code == 429 and "Too many sign-in attempts" in paused.text
        assert len(emails_to(db, NEW)) == 3
        # Wrong passwords count against the account's own email too
        for _ in range(3):
            assert ask_change(client, GRACE, password="wrong guess!!").status_code in (422, 429)
        assert ask_change(client, "someone@example.net").status_code == 429
    with db.read_session() as session:
        assert session.exec(select(func.count()).select_from(Email).where(
            Email.to_address == "someone@example.net")).one() == 0
