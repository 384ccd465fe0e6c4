"""Deny by default: every route declares its permission, and each role gets exactly its own."""

from __future__ import annotations

import pytest
from sqlmodel import func, select
from starlette.routing import Route
from starlette.testclient import TestClient

from admin.api import PUBLIC, SPECIAL_ACCESS
from admin.app import API, create_app
from conveyor.db import Database
from conveyor.settings import Settings
from models.audit import AuditEntry
from models.staff import Permission, Role, permissions_of
from tests.e2e.admin_client import bearer, login
from tests.factories import make_staff

SAMPLE_PARAMS = {"number": "CV-NOSUCH1", "product_id": "1", "variant_id": "1",
                 "code": "NOSUCH", "adjustment_id": "1", "count_id": "1",
                 "pick_list_id": "1", "line_id": "1", "parcel_id": "1", "refund_id": "1",
                 "run_id": "1", "item_id": "1", "day": "2026-01-01", "document_id": "1",
                 "ref": "g" + "0" * 32,  # a customer file
                 "id": "1", "thread_id": "00000000-0000-0000-0000-000000000001"}


def _path(template: str) -> str:
    for name, value in SAMPLE_PARAMS.items():
        template = template.replace("{" + name + "}", value)
    assert "{" not in template, f"no sample value for a parameter of {template}"
    return template


@pytest.fixture
def client(db: Database, settings: Settings):
    with TestClient(create_app(settings, db=db)) as test_client:
        yield test_client


def test_every_route_of_the_app_declares_who_may_call_it(settings):
    app = create_app(settings)
    undeclared = []
    for route in app.routes:
        assert isinstance(route, Route), f"unexpected kind of route: {route!r}"
        endpoints = getattr(route.endpoint, "endpoints", None)
        if endpoints is None:
            access = getattr(route.endpoint, "access", None)
            if access != PUBLIC:
                undeclared.append(route.path)
            continue
        for endpoint in endpoints:
            if not (isinstance(endpoint.access, Permission) or endpoint.access in
                    SPECIAL_ACCESS):
                undeclared.append(f"{endpoint.method} {route.path}")
    assert undeclared == []
    operations = [op for path in app.state.openapi["paths"].values() for op in path.values()]
    assert all("x-conveyor-access" in op for op in operations)


def test_the_only_public_routes_are_login_and_the_openapi_document():
    public = sorted(f"{e.method} {e.path}" for e in API.endpoints if e.access == PUBLIC)
    assert public == ["POST /api/auth/login"]


def test_every_role_is_allowed_exactly_its_permissions_on_every_route(client, db):
    tokens = {role: login(client, make_staff(db, role)) for role in Role}
    expected_denials = 0
    logout_last = sorted(API.endpoints, key=lambda e: e.path == "/api/auth/logout")
    for endpoint in logout_last:
        if endpoint.access == PUBLIC:
            continue
        path = _path(endpoint.path)
        for role, token in tokens.items():
            response = client.request(endpoint.method, path, headers=bearer(token), json={})
            allowed = (endpoint.access in SPECIAL_ACCESS
                       or endpoint.access in permissions_of([role]))
            assert (response.status_code == 403) != allowed, (
                f"{role} on {endpoint.method} {endpoint.path}: {response.status_code}")
            assert response.status_code != 401
            expected_denials += 0 if allowed else 1
    with db.read_session() as session:
        denied = session.exec(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.action == "access.denied")).one()
    assert denied == expected_denials


@pytest.mark.parametrize(("role", "method", "path"), [
    (Role.PICKER, "GET", "/api/orders/CV-NOSUCH1/payments"),  # a picker cannot see payments
    (Role.PICKER, "GET", "/api/orders"),
    (Role.STOCK, "GET", "/api/orders/CV-NOSUCH1/payments"),
    (Role.FINANCE, "POST", "/api/orders/CV-NOSUCH1/cancel"),  # finance cannot move stock
    (Role.FINANCE, "POST", "/api/products"),
    (Role.REVIEWER, "GET", "/api/audit"),
    (Role.STOCK, "PATCH", "/api/variants/1"),
    (Role.FINANCE, "GET", "/api/discounts"),  # discount codes are for admins only
    (Role.FINANCE, "POST", "/api/discounts"),
    (Role.SUPPORT, "GET", "/api/discounts/NOSUCH"),
    (Role.REVIEWER, "PATCH", "/api/discounts/NOSUCH"),
    (Role.STOCK, "POST", "/api/discounts/NOSUCH/pause"),
    (Role.PICKER, "POST", "/api/discounts/NOSUCH/resume"),
    (Role.PICKER, "GET", "/api/customers"),  # customer files: support, finance, reviewers
    (Role.STOCK, "GET", "/api/customers/g00000000000000000000000000000000"),
    (Role.STOCK, "POST", "/api/customers/g00000000000000000000000000000000/notes"),
    (Role.PICKER, "GET", "/api/reports/segments"),
    (Role.SUPPORT, "POST", "/api/returns/R-NOSUCH1/refund"),  # support cannot refund,
    (Role.SUPPORT, "POST", "/api/orders/CV-NOSUCH1/refunds"),
    (Role.SUPPORT, "POST", "/api/stock/adjustments"),  # change stock,
    (Role.SUPPORT, "POST", "/api/returns/R-NOSUCH1/receive"),
    (Role.SUPPORT, "GET", "/api/orders/CV-NOSUCH1/payments"),  # or see payments
    (Role.SUPPORT, "GET", "/api/payments"),
    (Role.STOCK, "POST", "/api/returns/R-NOSUCH1/refund"),  # stock cannot refund a return
    (Role.FINANCE, "POST", "/api/returns/R-NOSUCH1/receive"),  # finance cannot receive one
    (Role.PICKER, "GET", "/api/support/threads"),
    (Role.FINANCE, "POST", "/api/support/threads/00000000-0000-0000-0000-000000000001/reply"),
])
def test_examples_from_the_role_matrix(client, db, role, method, path):
    token = login(client, make_staff(db, role))
    response = client.request(method, path, headers=bearer(token), json={})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/support/threads"),  # support reads the inbox
    ("GET", "/api/support/threads/00000000-0000-0000-0000-000000000001"),
    ("POST", "/api/support/threads/00000000-0000-0000-0000-000000000001/reply"),  # and replies
    ("GET", "/api/returns"),
    ("GET", "/api/orders/CV-NOSUCH1"),
])
def test_support_may_read_the_inbox_reply_and_follow_returns(client, db, method, path):
    token = login(client, make_staff(db, Role.SUPPORT))
    response = client.request(method, path, headers=bearer(token),
                              json={"body": "Hello"} if method == "POST" else None)
    assert response.status_code in (200, 404), response.text  # allowed: nothing to find
    assert response.status_code != 403


def test_without_a_token_every_protected_route_answers_401_and_it_is_audited(client, db):
    protected = [e for e in API.endpoints if e.access != PUBLIC]
    for endpoint in protected:
        response = client.request(endpoint.method, _path(endpoint.path),
                                  headers={"authorization": "Bearer cvt_forged"})
        assert response.status_code == 401, f"{endpoint.method} {endpoint.path}"
        assert response.json()["error"]["code"] == "unauthenticated"
    with db.read_session() as session:
        entries = session.exec(select(AuditEntry).where(
            AuditEntry.action == "access.unauthenticated")).all()
    assert len(entries) == len(protected)
    assert all(e.outcome == "denied" and e.client_ip for e in entries)
