"""The admin API's manners: one error shape, JSON only, request ids, headers, CORS."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from admin.app import create_app
from conveyor.db import Database
from conveyor.settings import Settings
from tests.e2e.admin_client import bearer, login
from tests.factories import make_staff

ORIGIN = "https://console.shop.example"


@pytest.fixture
def client(db: Database, settings: Settings):
    with TestClient(create_app(settings.model_copy(update={"admin_cors_origins": ORIGIN}),
                               db=db)) as test_client:
        yield test_client


def error_of(response):
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    return body["error"]


def test_unknown_routes_and_methods_answer_in_the_error_shape(client):
    assert error_of(client.get("/api/nothing-here"))["code"] == "not_found"
    response = client.delete("/api/auth/login")
    assert response.status_code == 405 and error_of(response)["code"] == "method_not_allowed"


def test_bodies_must_be_json(client, db):
    form = client.post("/api/auth/login", data={"email": "a@b.c", "password": "x"})
    assert form.status_code == 415 and error_of(form)["code"] == "unsupported_media_type"
    broken = client.post("/api/auth/login", content=b"{not json",
                         headers={"content-type": "application/json"})
    assert broken.status_code == 400 and error_of(broken)["code"] == "invalid_json"


def test_invalid_input_names_each_field(client, db):
    token = login(client, make_staff(db, "admin"))
    response = client.post("/api/categories", headers=bearer(token),
                           json={"name": "", "slug": "Not A Slug", "position": -1, "x": 1})
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_input"
    locations = {tuple(f["loc"]) for f in error["details"]["fields"]}
    assert locations == {("name",), ("slug",), ("position",), ("x",)}


def test_every_response_carries_a_request_id_and_security_headers(client):
    own = client.get("/api/openapi.json", headers={"x-request-id": "trace-123"})
    assert own.headers["x-request-id"] == "trace-123"
    made = client.get("/api/orders", headers={"x-request-id": "bad id with spaces"})
    assert len(made.headers["x-request-id"]) == 32 and made.status_code == 401
    for response in (own, made):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["cache-control"] == "no-store"
        assert "default-src 'none'" in response.headers["content-security-policy"]


def test_cors_allows_only_the_configured_origins(client):
    allowed = client.options("/api/orders", headers={
        "origin": ORIGIN, "access-control-request-method": "GET",
        "access-control-request-headers": "authorization"})
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    other = client.options("/api/orders", headers={
        "origin": "https://evil.example", "access-control-request-method": "GET"})
    assert "access-control-allow-origin" not in other.headers


def test_the_openapi_document_is_3_1_and_describes_every_route(client):
    document = client.get("/api/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    login_op = document["paths"]["/api/auth/login"]["post"]
    schema_ref = login_op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert schema_ref == "#/components/schemas/LoginRequest"
    assert "bearer" in document["components"]["securitySchemes"]
    orders = document["paths"]["/api/orders"]["get"]
    assert {p["name"] for p in orders["parameters"]} >= {"status", "cursor", "sort", "format"}
    assert orders["security"] == [{"bearer": []}]
