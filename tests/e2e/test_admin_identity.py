"""Staff identity on the admin API: login, tokens, TOTP, password rules, rate limits."""

from __future__ import annotations

from datetime import timedelta

import pyotp
import pytest
from argon2 import PasswordHasher
from sqlmodel import col, select, update
from starlette.testclient import TestClient

from admin import identity
from admin.app import create_app
from conveyor import audit
from conveyor.db import Database
from conveyor.settings import Settings
from models.audit import AuditEntry
from models.base import utcnow
from models.staff import StaffToken, StaffUser
from tests.e2e.admin_client import bearer, login
from tests.factories import make_staff


@pytest.fixture
def client(db: Database, settings: Settings):
    with TestClient(create_app(settings, db=db)) as test_client:
        yield test_client


def actions(db: Database) -> list[tuple[str, str]]:
    with db.read_session() as session:
        return [(e.action, e.outcome) for e in session.exec(
            select(AuditEntry).order_by(col(AuditEntry.id)))]


def test_login_gives_an_opaque_token_stored_only_as_a_hash(client, db):
    staff = make_staff(db, "finance")
    response = client.post("/api/auth/login", json={"email": staff.email.upper(),
                                                     "password": staff.password})
    assert response.status_code == 200
    body = response.json()
    token = body["token"]
    assert token.startswith("cvt_") and len(token) > 40
    assert body["roles"] == ["finance"] and body["idle_timeout_seconds"] == 1800
    with db.read_session() as session:
        stored = session.exec(select(StaffToken)).one()
        assert stored.token_hash == identity.token_digest(token) and token not in str(
            stored.model_dump())
    me = client.get("/api/auth/me", headers=bearer(token)).json()
    assert me["email"] == staff.email and "orders:read" in me["permissions"]
    assert ("auth.login", "ok") in actions(db)


def test_wrong_passwords_and_unknown_users_get_the_same_answer_and_are_audited(client, db):
    staff = make_staff(db, "finance")
    wrong = client.post("/api/auth/login", json={"email": staff.email, "password": "nope" * 4})
    unknown = client.post("/api/auth/login", json={"email": "who@x.test", "password": "x" * 12})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"error": {
        "code": "invalid_credentials", "message": "Wrong email or password.", "details": {}}}
    assert actions(db).count(("auth.login_failed", "failed")) == 2
    with db.read_session() as session:
        text = " ".join(str(e.model_dump()) for e in session.exec(select(AuditEntry)))
    assert "nope" not in text and "x" * 12 not in text


def test_logout_revokes_the_token_at_once(client, db):
    token = login(client, make_staff(db, "stock"))
    assert client.get("/api/orders", headers=bearer(token)).status_code == 200
    assert client.post("/api/auth/logout", headers=bearer(token)).status_code == 200
    response = client.get("/api/orders", headers=bearer(token))
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_session_token_dies_after_thirty_idle_minutes_or_twelve_hours(client, db):
    token = login(client, make_staff(db, "stock"))
    digest = identity.token_digest(token)
    with db.unit_of_work() as uow:
        uow.session.execute(update(StaffToken).where(col(StaffToken.token_hash) == digest)
                            .values(last_used_at=utcnow() - timedelta(minutes=29)))
    assert client.get("/api/orders", headers=bearer(token)).status_code == 200  # touched now
    with db.unit_of_work() as uow:
        uow.session.execute(update(StaffToken).where(col(StaffToken.token_hash) == digest)
                            .values(last_used_at=utcnow() - timedelta(minutes=31)))
    assert client.get("/api/orders", headers=bearer(token)).status_code == 401

    busy = login(client, make_staff(db, "stock"))
    with db.unit_of_work() as uow:  # used every minute, but past its 12 hours
        uow.session.execute(update(StaffToken)
                            .where(col(StaffToken.token_hash) == identity.token_digest(busy))
                            .values(expires_at=utcnow() - timedelta(seconds=1)))
    assert client.get("/api/orders", headers=bearer(busy)).status_code == 401


def test_disabling_a_user_ends_their_sessions(client, db):
    staff = make_staff(db, "stock")
    token = login(client, staff)
    with db.unit_of_work() as uow:
        identity.disable_staff(uow=uow, email=staff.email, actor=audit.Actor(email="t"))
    assert client.get("/api/orders", headers=bearer(token)).status_code == 401
    again = client.post("/api/auth/login", json={"email": staff.email,
                                                 "password": staff.password})
    assert again.status_code == 401


def test_api_tokens_carry_only_the_roles_asked_for_and_expire(client, db):
    staff = make_staff(db, "finance", "stock")
    with db.unit_of_work() as uow:
        plain, _ = identity.issue_api_token(uow=uow, email=staff.email, roles=["stock"],
                                                days=7, label="label printer",
                                                actor=audit.Actor(email="t"))
    me = client.get("/api/auth/me", headers=bearer(plain)).json()
    assert me["roles"] == ["stock"] and me["token_kind"] == "api"
    assert "payments:read" not in me["permissions"]
    assert client.get("/api/orders/X/payments", headers=bearer(plain)).status_code == 403
    with pytest.raises(identity.InvalidRoles), db.unit_of_work() as uow:
        identity.issue_api_token(uow=uow, email=staff.email, roles=["admin"], days=7, label="",
                                 actor=audit.Actor(email="t"))


@pytest.mark.parametrize(("password", "message"), [
    ("short", "at least 12"), ("aaaaaaaaaaaaaaaa", "more than three different"),
    ("x" * 1025, "at most 1024"),
])
def test_password_rules(db, password, message):
    with pytest.raises(identity.WeakPassword, match=message), db.unit_of_work() as uow:
        identity.create_staff(uow=uow, email="new@conveyor.test", roles=["stock"],
                              password=password, actor=audit.Actor(email="t"))


def test_passwords_are_argon2id_and_rehashed_when_the_parameters_change(client, db):
    staff = make_staff(db, "stock")
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
    with db.unit_of_work() as uow:
        user = uow.session.exec(select(StaffUser).where(StaffUser.email == staff.email)).one()
        assert user.password_hash.startswith("$argon2id$")
        user.password_hash = weak.hash(staff.password)
    login(client, staff)
    with db.read_session() as session:
        rehashed = session.exec(select(StaffUser).where(StaffUser.email == staff.email)).one()
    assert rehashed.password_hash.startswith("$argon2id$")
    assert not PasswordHasher().check_needs_rehash(rehashed.password_hash)


def test_an_admin_must_enrol_totp_first_and_then_give_a_code_at_every_login(client, db):
    staff = make_staff(db, "admin", enrolled=False)
    first = client.post("/api/auth/login", json={"email": staff.email,
                                                 "password": staff.password}).json()
    assert first["totp_enrolment_required"] is True
    limited = bearer(first["token"])
    assert client.get("/api/orders", headers=limited).status_code == 403
    enrolment = client.post("/api/auth/totp/enrol", headers=limited).json()
    assert enrolment["provisioning_uri"].startswith("otpauth://totp/Conveyor:")
    totp = pyotp.TOTP(enrolment["secret"])
    bad = client.post("/api/auth/totp/confirm", json={"code": "000000"}, headers=limited)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_code"
    assert client.post("/api/auth/totp/confirm", json={"code": totp.now()},
                       headers=limited).status_code == 200
    assert client.get("/api/auth/me", headers=limited).status_code == 401  # enrolment is over

    no_code = client.post("/api/auth/login", json={"email": staff.email,
                                                   "password": staff.password})
    assert no_code.status_code == 401 and no_code.json()["error"]["code"] == "totp_required"
    wrong = client.post("/api/auth/login", json={"email": staff.email, "password":
                                                 staff.password, "totp_code": "123456"})
    assert wrong.status_code == 401
    ok = client.post("/api/auth/login", json={"email": staff.email, "password":
                                              staff.password, "totp_code": totp.now()})
    assert ok.status_code == 200 and ok.json()["totp_enrolment_required"] is False
    assert client.get("/api/orders", headers=bearer(ok.json()["token"])).status_code == 200


def test_logins_are_limited_per_account_even_with_the_right_password(client, db, settings):
    staff = make_staff(db, "stock")
    for _ in range(settings.admin_login_failures_per_account):
        client.post("/api/auth/login", json={"email": staff.email, "password": "wrong" * 3})
    locked = client.post("/api/auth/login", json={"email": staff.email,
                                                  "password": staff.password})
    assert locked.status_code == 429
    assert 1 <= int(locked.headers["retry-after"]) <= 15 * 60
    assert locked.json()["error"]["code"] == "rate_limited"
    assert ("auth.lockout", "locked") in actions(db)
    assert ("auth.login_refused", "locked") in actions(db)
    other = make_staff(db, "stock")  # another account from the same address still works
    login(client, other)


def test_logins_are_limited_per_address(db, settings):
    strict = settings.model_copy(update={"admin_login_failures_per_ip": 3})
    with TestClient(create_app(strict, db=db)) as client:
        for n in range(3):
            client.post("/api/auth/login", json={"email": f"u{n}@x.test", "password": "p" * 12})
        staff = make_staff(db, "stock")
        response = client.post("/api/auth/login", json={"email": staff.email,
                                                        "password": staff.password})
    assert response.status_code == 429 and "this address" in response.json()["error"]["message"]
