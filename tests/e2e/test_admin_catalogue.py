"""Catalogue management on the admin API: categories, products, variants, prices, sale windows
and deactivation; every change audited and seen by the storefront at once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import col, select
from starlette.testclient import TestClient

from admin.app import create_app
from conveyor.db import Database
from conveyor.settings import Settings
from models.audit import AuditEntry
from models.base import utcnow
from models.catalog import CatalogueVersion, Product, Variant
from models.inventory import StockItem
from models.orders import OrderLine
from storefront.app import create_app as create_storefront
from tests import shopping
from tests.e2e.admin_client import bearer, login
from tests.factories import make_product, make_staff


@pytest.fixture
def client(db: Database, settings: Settings):
    with TestClient(create_app(settings, db=db)) as test_client:
        yield test_client


@pytest.fixture
def shop(db: Database, settings: Settings):
    with TestClient(create_storefront(settings, db=db), base_url="http://127.0.0.1:8000",
                    follow_redirects=True) as test_client:
        yield test_client


@pytest.fixture
def admin(client: TestClient, db: Database) -> dict[str, str]:
    return bearer(login(client, make_staff(db, "admin")))


def audit_entries(db: Database, action: str) -> list[AuditEntry]:
    with db.read_session() as session:
        return list(session.exec(select(AuditEntry).where(AuditEntry.action == action)
                                 .order_by(col(AuditEntry.id))))


def catalogue_version(db: Database) -> int:
    with db.read_session() as session:
        row = session.get(CatalogueVersion, 1)
        assert row is not None
        return row.version


def a_category(client: TestClient, admin: dict[str, str], name: str = "Desk Lamps") -> int:
    response = client.post("/api/categories", json={"name": name}, headers=admin)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def a_product(client: TestClient, admin: dict[str, str], **fields: Any) -> dict[str, Any]:
    """Arc Lamp in black (€89.00) and white (€94.00), in a new category unless one is given."""
    body: dict[str, Any] = {
        "name": "Arc Lamp", "description": "Bends over the desk.",
        "variants": [{"sku": "ARC-BLK", "name": "Black", "price_cents": 8900},
                     {"sku": "ARC-WHT", "name": "White", "price_cents": 9400}],
        **fields}
    if "category_id" not in body:
        body["category_id"] = a_category(client, admin)
    response = client.post("/api/products", json=body, headers=admin)
    assert response.status_code == 201, response.text
    return dict(response.json())


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    return dict(body["error"])


# -- creating -----------------------------------------------------------------------------------


def test_a_new_category_and_product_get_stock_rows_audit_entries_and_a_storefront_page(
    client, admin, db, shop
):
    before = catalogue_version(db)

    category = client.post("/api/categories", json={"name": "Desk Lamps", "position": 3},
                           headers=admin)
    assert category.status_code == 201, category.text
    assert category.json() | {"id": 0} == {"id": 0, "slug": "desk-lamps", "name": "Desk Lamps",
                                           "description": "", "position": 3}
    category_id = category.json()["id"]
    product = a_product(client, admin, category_id=category_id)

    assert (product["slug"], product["name"], product["category_id"], product["active"]) == (
        "arc-lamp", "Arc Lamp", category_id, True)
    assert [(v["sku"], v["name"], v["price_cents"], v["position"], v["currency"], v["active"],
             v["sale_price_cents"]) for v in product["variants"]] == [
        ("ARC-BLK", "Black", 8900, 0, "EUR", True, None),
        ("ARC-WHT", "White", 9400, 1, "EUR", True, None)]
    with db.read_session() as session:
        stock = session.exec(select(StockItem).order_by(col(StockItem.variant_id))).all()
    assert [(s.variant_id, s.on_hand, s.reserved, s.allocated) for s in stock] == [
        (v["id"], 0, 0, 0) for v in product["variants"]]
    assert catalogue_version(db) == before + 2

    [made_category] = audit_entries(db, "catalogue.category_create")
    assert made_category.target_id == str(category_id) and made_category.before is None
    assert made_category.after is not None
    assert (made_category.after["slug"], made_category.after["name"]) == (
        "desk-lamps", "Desk Lamps")
    [made_product] = audit_entries(db, "catalogue.product_create")
    assert made_product.target_type == "product"
    assert made_product.target_id == str(product["id"])
    assert made_product.after is not None and made_product.after["name"] == "Arc Lamp"
    assert [v["sku"] for v in made_product.after["variants"]] == ["ARC-BLK", "ARC-WHT"]
    assert made_product.actor_roles == ["admin"]

    page = shop.get("/p/arc-lamp")
    assert page.status_code == 200
    assert "Arc Lamp" in page.text and "€89.00" in page.text and "Out of stock" in page.text
    assert client.get(f"/api/products/{product['id']}", headers=admin).json() == product


def test_a_variant_added_later_gets_its_own_stock_row_and_shows_on_the_storefront(
    client, admin, db, shop
):
    product = a_product(client, admin)
    response = client.post(f"/api/products/{product['id']}/variants", headers=admin,
                           json={"sku": "ARC-RED", "name": "Signal Red", "price_cents": 9900})
    assert response.status_code == 201, response.text
    variant = response.json()
    assert (variant["position"], variant["active"]) == (2, True)
    with db.read_session() as session:
        assert session.get(StockItem, variant["id"]) is not None
    [audited] = audit_entries(db, "catalogue.variant_create")
    assert audited.after is not None and audited.after["sku"] == "ARC-RED"
    assert "Signal Red" in shop.get("/p/arc-lamp").text


def test_an_explicit_slug_is_kept_and_a_long_name_makes_a_slug_that_fits(client, admin):
    category = client.post("/api/categories", headers=admin, json={"name": "Lamp " * 24})
    assert category.status_code == 201, category.text
    slug = category.json()["slug"]
    assert len(slug) <= 80 and slug.startswith("lamp-lamp") and not slug.endswith("-")
    product = a_product(client, admin, slug="the-arc", category_id=category.json()["id"])
    assert product["slug"] == "the-arc"


def test_a_name_without_letters_or_digits_needs_an_explicit_slug(client, admin, db):
    error = error_of(client.post("/api/categories", json={"name": "★★★"}, headers=admin), 422)
    assert error["details"]["fields"][0]["loc"] == ["slug"]
    assert audit_entries(db, "catalogue.category_create") == []


# -- changes seen by the storefront -------------------------------------------------------------


def test_renaming_a_product_shows_on_the_storefront_and_is_audited(client, admin, db, shop):
    product = a_product(client, admin)
    assert "Arc Lamp" in shop.get("/p/arc-lamp").text  # the storefront has it cached now

    response = client.patch(f"/api/products/{product['id']}", headers=admin,
                            json={"name": "Arc Lamp Deluxe", "description": "Even bendier."})

    assert response.status_code == 200, response.text
    assert response.json()["name"] == "Arc Lamp Deluxe"
    assert response.json()["slug"] == "arc-lamp"  # the address stays
    page = shop.get("/p/arc-lamp").text
    assert "Arc Lamp Deluxe" in page and "Even bendier." in page
    [audited] = audit_entries(db, "catalogue.product_update")
    assert audited.before == {"name": "Arc Lamp", "description": "Bends over the desk."}
    assert audited.after == {"name": "Arc Lamp Deluxe", "description": "Even bendier."}


def test_a_new_price_and_a_sale_window_show_on_the_storefront(client, admin, db, shop):
    product = a_product(client, admin)
    black = product["variants"][0]["id"]
    assert "€89.00" in shop.get("/p/arc-lamp").text

    repriced = client.patch(f"/api/variants/{black}", json={"price_cents": 5000},
                            headers=admin)
    assert repriced.status_code == 200, repriced.text
    assert "€50.00" in shop.get("/p/arc-lamp").text

    now = utcnow()
    sale = client.patch(f"/api/variants/{black}", headers=admin, json={
        "sale_price_cents": 3500,
        "sale_starts_at": (now - timedelta(minutes=1)).isoformat().replace("+00:00", "Z"),
        "sale_ends_at": (now + timedelta(days=2)).astimezone().isoformat(),
    })
    assert sale.status_code == 200, sale.text
    assert sale.json()["sale_price_cents"] == 3500
    page = shop.get("/p/arc-lamp").text
    assert "€35.00" in page and "€50.00" in page and "Sale price until" in page

    ended = client.patch(f"/api/variants/{black}", headers=admin, json={
        "sale_price_cents": None, "sale_starts_at": None, "sale_ends_at": None})
    assert ended.status_code == 200, ended.text
    assert ended.json()["sale_price_cents"] is None
    page = shop.get("/p/arc-lamp").text
    assert "€50.00" in page and "€35.00" not in page

    updates = audit_entries(db, "catalogue.variant_update")
    assert [(e.before, e.after) for e in updates[:1]] == [
        ({"price_cents": 8900}, {"price_cents": 5000})]
    assert updates[1].after is not None and updates[1].after["sale_price_cents"] == 3500
    assert updates[2].before is not None and updates[2].before["sale_price_cents"] == 3500


def test_a_sale_can_be_set_when_the_product_is_created(client, admin, shop):
    now = utcnow()
    a_product(client, admin, variants=[{
        "sku": "ARC-BLK", "name": "Black", "price_cents": 8900, "sale_price_cents": 6900,
        "sale_starts_at": (now - timedelta(hours=1)).isoformat(),
        "sale_ends_at": (now + timedelta(hours=1)).isoformat()}])
    page = shop.get("/p/arc-lamp").text
    assert "€69.00" in page and "€89.00" in page


# -- refused changes ----------------------------------------------------------------------------


def _soon(hours: int) -> str:
    return (utcnow() + timedelta(hours=hours)).isoformat()


LATER, MUCH_LATER = "2030-01-01T00:00:00Z", "2030-01-02T00:00:00+00:00"


@pytest.mark.parametrize(("patch", "loc"), [
    ({"sale_price_cents": 8900}, ["sale_price_cents"]),  # equal to the price
    ({"sale_price_cents": 9000}, ["sale_price_cents"]),
    ({"price_cents": 3000}, ["sale_price_cents"]),  # below the running sale price
    ({"sale_starts_at": MUCH_LATER, "sale_ends_at": LATER}, ["sale_ends_at"]),
    ({"sale_starts_at": LATER, "sale_ends_at": "2030-01-01T01:00:00+01:00"},
     ["sale_ends_at"]),  # the same moment: a sale must last
    ({"sale_ends_at": "2030-01-01T00:00:00"}, ["sale_ends_at"]),  # naive
    ({"sale_starts_at": "2030-01-01"}, ["sale_starts_at"]),
    ({"sale_starts_at": "0001-01-01T00:00:00+14:00"}, ["sale_starts_at"]),  # not in UTC
    ({"sale_ends_at": "9999-12-31T23:59:59-14:00"}, ["sale_ends_at"]),
    ({"price_cents": -1}, ["price_cents"]),
    ({"price_cents": 100_000_001}, ["price_cents"]),
    ({"sku": "NEW-SKU"}, ["sku"]),  # the SKU stays
])
def test_a_variant_change_against_the_sale_rules_gives_422_with_field_details(
    client, admin, db, shop, patch, loc
):
    product = a_product(client, admin)
    black = product["variants"][0]["id"]
    assert client.patch(f"/api/variants/{black}", headers=admin, json={
        "sale_price_cents": 4000, "sale_starts_at": _soon(-1), "sale_ends_at": _soon(1),
    }).status_code == 200
    version = catalogue_version(db)

    error = error_of(client.patch(f"/api/variants/{black}", json=patch, headers=admin), 422)

    assert error["code"] == "invalid_input"
    assert [f["loc"] for f in error["details"]["fields"]] == [loc]
    assert all(set(f) == {"loc", "message", "type"} for f in error["details"]["fields"])
    with db.read_session() as session:
        variant = session.get(Variant, black)
        assert variant is not None
        assert (variant.price_cents, variant.sale_price_cents) == (8900, 4000)
    assert catalogue_version(db) == version
    assert len(audit_entries(db, "catalogue.variant_update")) == 1
    assert "€40.00" in shop.get("/p/arc-lamp").text


@pytest.mark.parametrize(("variant", "loc"), [
    ({"sale_price_cents": 8900}, "sale_price_cents"),
    ({"sale_price_cents": 100, "sale_starts_at": "2030-02-01T00:00:00Z",
      "sale_ends_at": "2030-01-01T00:00:00Z"}, "sale_ends_at"),
    ({"sale_price_cents": 100, "sale_starts_at": "2030-01-01T00:00:00"}, "sale_starts_at"),
    ({"sale_price_cents": 100, "sale_ends_at": "9999-12-31T23:59:59-14:00"}, "sale_ends_at"),
])
def test_a_new_product_with_a_bad_sale_is_refused_whole_naming_the_variant(
    client, admin, db, variant, loc
):
    category_id = a_category(client, admin)
    body = {"name": "Arc Lamp", "category_id": category_id, "variants": [
        {"sku": "ARC-BLK", "name": "Black", "price_cents": 8900},
        {"sku": "ARC-WHT", "name": "White", "price_cents": 8900, **variant}]}
    error = error_of(client.post("/api/products", json=body, headers=admin), 422)
    assert error["code"] == "invalid_input"
    [problem] = error["details"]["fields"]
    assert problem["loc"] == ["variants", "1", loc]  # the second variant is the bad one
    assert set(problem) == {"loc", "message", "type"}
    with db.read_session() as session:
        assert session.exec(select(Product)).all() == []
        assert session.exec(select(Variant)).all() == []
        assert session.exec(select(StockItem)).all() == []
    assert audit_entries(db, "catalogue.product_create") == []


def test_duplicate_skus_and_slugs_conflict_with_409(client, admin, db):
    first = a_product(client, admin)
    category_id = first["category_id"]
    other = {"name": "Other Lamp", "category_id": category_id,
             "variants": [{"sku": "OTHER-1", "name": "Std", "price_cents": 100}]}

    sku = error_of(client.post("/api/products", headers=admin, json={
        **other, "variants": [{"sku": "ARC-WHT", "name": "Std", "price_cents": 100}]}), 409)
    assert (sku["code"], sku["details"]) == ("conflict", {"sku": "ARC-WHT"})
    slug = error_of(client.post("/api/products", headers=admin,
                                json={**other, "slug": "arc-lamp"}), 409)
    assert (slug["code"], slug["details"]) == ("conflict", {"slug": "arc-lamp"})
    by_name = error_of(client.post("/api/products", headers=admin,
                                   json={**other, "name": "Arc  LAMP!"}), 409)
    assert by_name["details"] == {"slug": "arc-lamp"}
    category = error_of(client.post("/api/categories", headers=admin,
                                    json={"name": "Other", "slug": "desk-lamps"}), 409)
    assert category["details"] == {"slug": "desk-lamps"}
    added = error_of(client.post(f"/api/products/{first['id']}/variants", headers=admin,
                                 json={"sku": "ARC-BLK", "name": "Again", "price_cents": 1}),
                     409)
    assert added["details"] == {"sku": "ARC-BLK"}

    second = client.post("/api/products", json=other, headers=admin)
    assert second.status_code == 201
    moved = error_of(client.patch(f"/api/products/{second.json()['id']}", headers=admin,
                                  json={"slug": "arc-lamp"}), 409)
    assert moved["details"] == {"slug": "arc-lamp"}
    same = client.patch(f"/api/products/{first['id']}", json={"slug": "arc-lamp"},
                        headers=admin)
    assert same.status_code == 200  # its own slug is no conflict

    twice = error_of(client.post("/api/products", headers=admin, json={
        **other, "slug": "twice", "variants": [
            {"sku": "TWICE", "name": "A", "price_cents": 100},
            {"sku": "TWICE", "name": "B", "price_cents": 100}]}), 422)
    assert twice["code"] == "invalid_input"
    with db.read_session() as session:
        assert len(session.exec(select(Product)).all()) == 2


def test_an_unknown_category_is_refused_with_422(client, admin, db):
    product = a_product(client, admin)
    body = {"name": "Lost Lamp", "category_id": 4242,
            "variants": [{"sku": "LOST-1", "name": "Std", "price_cents": 100}]}

    created = error_of(client.post("/api/products", json=body, headers=admin), 422)
    moved = error_of(client.patch(f"/api/products/{product['id']}", json={"category_id": 4242},
                                  headers=admin), 422)

    assert created["code"] == moved["code"] == "invalid_input"
    assert created["details"] == moved["details"] == {"category_id": 4242}
    huge = error_of(client.post("/api/products", json={**body, "category_id": 99999999999},
                                headers=admin), 422)
    assert [f["loc"] for f in huge["details"]["fields"]] == [["category_id"]]
    with db.read_session() as session:
        assert [p.name for p in session.exec(select(Product))] == ["Arc Lamp"]


# -- deactivation -------------------------------------------------------------------------------


def test_deactivating_hides_the_product_but_orders_keep_their_lines(
    client, admin, db, settings, shop
):
    made = make_product(db, name="Old Faithful Kettle", variants=[("Steel", 3900, 5)])
    cart_id, view = shopping.cart(db, [(made.variant_ids[0], 2)])
    order = shopping.place(db, settings, cart_id, view)
    assert shop.get(f"/p/{made.slug}").status_code == 200

    response = client.post(f"/api/products/{made.product_id}/deactivate", headers=admin)

    assert response.status_code == 200, response.text
    assert response.json()["active"] is False
    assert shop.get(f"/p/{made.slug}").status_code == 404
    assert "Old Faithful Kettle" not in shop.get("/search?q=kettle").text
    renamed = client.patch(f"/api/products/{made.product_id}", headers=admin,
                           json={"name": "New Kettle"})
    assert renamed.status_code == 200
    detail = client.get(f"/api/orders/{order.number}", headers=admin).json()
    assert [(line["product_name"], line["variant_name"], line["unit_price_cents"],
             line["quantity"]) for line in detail["lines"]] == [
        ("Old Faithful Kettle", "Steel", 3900, 2)]
    with db.read_session() as session:
        [line] = session.exec(select(OrderLine).where(OrderLine.order_id == order.id)).all()
        assert line.product_name == "Old Faithful Kettle"
    [deactivated, _] = audit_entries(db, "catalogue.product_update")
    assert (deactivated.before, deactivated.after) == ({"active": True}, {"active": False})
    hidden = client.get("/api/products", params={"active": "false"}, headers=admin).json()
    assert [p["name"] for p in hidden["items"]] == ["New Kettle"]

    back = client.patch(f"/api/products/{made.product_id}", json={"active": True},
                        headers=admin)
    assert back.status_code == 200
    assert "New Kettle" in shop.get(f"/p/{made.slug}").text


def test_a_product_whose_variants_are_all_inactive_leaves_the_storefront(client, admin, shop):
    product = a_product(client, admin)
    for variant in product["variants"]:
        response = client.patch(f"/api/variants/{variant['id']}", json={"active": False},
                                headers=admin)
        assert response.status_code == 200
    assert shop.get("/p/arc-lamp").status_code == 404


# -- bad requests -------------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "patch"), [
    ("product", {"name": None}),
    ("product", {"slug": None}),
    ("product", {"category_id": None}),
    ("product", {"active": None}),
    ("variant", {"name": None}),
    ("variant", {"price_cents": None}),
    ("variant", {"active": None}),
])
def test_nulls_for_fields_that_cannot_be_empty_are_refused(client, admin, db, target, patch):
    product = a_product(client, admin)
    path = (f"/api/products/{product['id']}" if target == "product"
            else f"/api/variants/{product['variants'][0]['id']}")
    error = error_of(client.patch(path, json=patch, headers=admin), 422)
    assert error["code"] == "invalid_input"
    assert "cannot be null" in error["details"]["fields"][0]["message"]
    assert audit_entries(db, f"catalogue.{target}_update") == []


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/api/products/4242", None),
    ("GET", "/api/products/99999999999", None),
    ("GET", "/api/products/0", None),
    ("GET", "/api/products/-1", None),
    ("GET", "/api/products/1.5", None),
    ("GET", "/api/products/abc", None),
    ("PATCH", "/api/products/4242", {"name": "Ghost"}),
    ("PATCH", "/api/products/99999999999", {"name": "Ghost"}),
    ("POST", "/api/products/4242/deactivate", None),
    ("POST", "/api/products/99999999999/deactivate", None),
    ("POST", "/api/products/99999999999/variants",
     {"sku": "GHOST", "name": "Ghost", "price_cents": 100}),
    ("POST", "/api/products/4242/variants",
     {"sku": "GHOST", "name": "Ghost", "price_cents": 100}),
    ("PATCH", "/api/variants/4242", {"name": "Ghost"}),
    ("PATCH", "/api/variants/99999999999", {"name": "Ghost"}),
    ("PATCH", "/api/variants/" + "9" * 400, {"name": "Ghost"}),
])
def test_unknown_ids_give_404_never_a_server_error(client, admin, db, method, path, body):
    a_product(client, admin)
    error = error_of(client.request(method, path, json=body, headers=admin), 404)
    assert error["code"] == "not_found"
    with db.read_session() as session:
        assert session.exec(select(Variant).where(Variant.sku == "GHOST")).all() == []


def test_bodies_must_be_json_and_well_formed(client, admin, db):
    form = client.post("/api/categories", data={"name": "Lamps"}, headers=admin)
    assert error_of(form, 415)["code"] == "unsupported_media_type"
    text = client.post("/api/categories", content=b'{"name": "Lamps"}',
                       headers={**admin, "content-type": "text/plain"})
    assert error_of(text, 415)["code"] == "unsupported_media_type"
    for broken in (b'{"name": "Lamps"', b"{'name': 'Lamps'}", b"\xff\xfe"):
        response = client.post("/api/categories", content=broken,
                               headers={**admin, "content-type": "application/json"})
        assert error_of(response, 400)["code"] == "invalid_json", broken
    empty = client.post("/api/categories", headers={**admin, "content-type": "application/json"})
    assert error_of(empty, 422)["details"]["fields"][0]["loc"] == ["body"]
    for not_an_object in ([{"name": "Lamps"}], "Lamps", 7):
        response = client.post("/api/categories", json=not_an_object, headers=admin)
        assert error_of(response, 422)["code"] == "invalid_input"
    assert audit_entries(db, "catalogue.category_create") == []


def test_unknown_fields_are_refused_not_ignored(client, admin):
    category_id = a_category(client, admin)
    created = error_of(client.post("/api/products", headers=admin, json={
        "name": "Arc Lamp", "category_id": category_id, "price_cents": 100,
        "variants": [{"sku": "ARC-1", "name": "Std", "price_cents": 100, "stock": 5}]}), 422)
    assert sorted(f["loc"] for f in created["details"]["fields"]) == [
        ["price_cents"], ["variants", "0", "stock"]]
    assert all(f["type"] == "extra_forbidden" for f in created["details"]["fields"])
    product = a_product(client, admin, category_id=category_id, slug="arc-2", variants=[
        {"sku": "ARC-2", "name": "Std", "price_cents": 100}])
    for path, patch in ((f"/api/products/{product['id']}", {"price_cents": 1}),
                        (f"/api/variants/{product['variants'][0]['id']}", {"sku": "X"}),
                        (f"/api/variants/{product['variants'][0]['id']}", {"Name": "X"})):
        error = error_of(client.patch(path, json=patch, headers=admin), 422)
        assert error["details"]["fields"][0]["type"] == "extra_forbidden"


def test_staff_without_catalogue_write_may_read_but_not_change(client, db):
    reader = bearer(login(client, make_staff(db, "finance")))
    made = make_product(db, name="Read Only Lamp")
    assert client.get(f"/api/products/{made.product_id}", headers=reader).status_code == 200
    refused = client.patch(f"/api/products/{made.product_id}", json={"name": "Mine now"},
                           headers=reader)
    assert error_of(refused, 403)["details"] == {"needs": "catalogue:write"}
    with db.read_session() as session:
        product = session.get(Product, made.product_id)
        assert product is not None and product.name == "Read Only Lamp"
