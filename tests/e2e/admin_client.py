"""A test client for the admin API that logs staff in the way an integration would."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from tests.factories import MadeStaff


def login(client: TestClient, staff: MadeStaff, **extra: Any) -> str:
    body: dict[str, Any] = {"email": staff.email, "password": staff.password}
    if staff.totp_secret:
        body["totp_code"] = staff.totp_code()
    body.update(extra)
    response = client.post("/api/auth/login", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}
